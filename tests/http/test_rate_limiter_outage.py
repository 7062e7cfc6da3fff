"""A rate limiter that does not answer lets authenticated requests through (fail open, counted):
an outage of the limiter's store must not take the whole API down with it. Logins, whose limiter
guards against password guessing, fail closed instead: 503 with Retry-After, never a 500."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient

from core.ports import RateLimiter
from entrypoints.http.auth import LIMITER_FAILURES
from entrypoints.settings import Settings
from tests.support.accounts import bearer, login, register


class BrokenLimiter:
    async def hit(self, *args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("the limiter's store is down")

    peek = hit

    async def reset(self, key: str) -> None:
        raise ConnectionError("the limiter's store is down")

    async def ping(self) -> None:
        raise ConnectionError("the limiter's store is down")


async def test_requests_pass_without_rate_limit_headers_while_the_limiter_is_down(
    settings: Settings, environ: dict[str, str], make_app: Callable[..., Litestar]
) -> None:
    from entrypoints.wiring import service_registry

    @asynccontextmanager
    async def registry() -> AsyncIterator[svcs.Registry]:
        async with service_registry(settings, environ=environ) as real:
            yield real

    app = make_app(registry_factory=registry)
    async with AsyncTestClient(app=app) as client:
        await register(client, "ann@example.com")
        token = await login(client, "ann@example.com")
        assert "ratelimit" in (await client.get("/v1/me", headers=bearer(token))).headers

    broken_app = make_app(registry_factory=registry)
    async with AsyncTestClient(app=broken_app) as client:
        from entrypoints.http.svcs_plugin import registry_of

        await register(client, "bob@example.com")
        token = await login(client, "bob@example.com")
        registry_of(broken_app).register_value(RateLimiter, BrokenLimiter())

        refused = await client.post(
            "/v1/auth/login", json={"email": "bob@example.com", "password": "correct horse battery staple"}
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "service_unavailable"
        assert refused.headers["retry-after"] == "1"

        before = LIMITER_FAILURES._value.get()
        response = await client.get("/v1/me", headers=bearer(token))
        assert response.status_code == 200, response.text
        assert "ratelimit" not in response.headers
        assert LIMITER_FAILURES._value.get() == before + 1
