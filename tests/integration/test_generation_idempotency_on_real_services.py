"""Issue 5 "Done when", idempotency, on real PostgreSQL (data and the SAQ queue): the same
`Idempotency-Key` and body twice gives one generation and `Idempotent-Replayed: true`; a different
body gives `422`; concurrent duplicates give one generation.

The app runs in this process; concurrent requests go through an ASGI client on the app's own event
loop, so they interleave at every database round trip, each on its own pooled connection.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psycopg
import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.postgres.migrations import apply_migrations
from entrypoints.http.app import create_app
from entrypoints.settings import settings_from_mapping
from entrypoints.wiring import service_registry
from tests.support.accounts import bearer, login, register
from tests.support.plans import roomy_plans_file
from tests.support.services import unique_name

pytestmark = pytest.mark.services

T = TypeVar("T")
DUPLICATES = 10


@pytest.fixture
async def client(postgres_url: str, tmp_path: Path) -> AsyncIterator[AsyncTestClient[Litestar]]:
    await apply_migrations(postgres_url)
    environ = {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_QUEUE_URL": postgres_url,
        "PICTOR_NAMESPACE": unique_name("idem").replace("_", "-"),
        "PICTOR_VALKEY_URL": "memory://",
        "PICTOR_STORAGE_URL": "memory://",
        "PICTOR_SECRET_URL_SIGNING_KEY": "k",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        "PICTOR_PLANS_FILE": roomy_plans_file(tmp_path, max_concurrent_jobs=50),
        "PICTOR_EMBEDDED_WORKER": "false",  # generations stay queued: nothing else changes them
        "PICTOR_DB_POOL_MIN": "1",
        "PICTOR_DB_POOL_MAX": str(DUPLICATES + 2),
    }
    settings = settings_from_mapping(environ)
    app = create_app(settings, registry_factory=lambda: service_registry(settings, environ=environ))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def api_key(client: AsyncTestClient[Litestar], email: str = "ada@example.com") -> dict[str, str]:
    await register(client, email)
    session = bearer(await login(client, email))
    created = await client.post("/v1/api-keys", json={"name": "idempotency"}, headers=session)
    assert created.status_code == 201, created.text
    return bearer(created.json()["key"])


def in_app(client: AsyncTestClient[Litestar], scenario: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run `scenario` on the app's event loop with a client whose requests run concurrently."""

    async def run() -> T:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http:
            return await scenario(http)

    return client.blocking_portal.call(run)


async def stored(postgres_url: str) -> dict[str, Any]:
    """Generations, quota reservations and idempotency records as PostgreSQL has them."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:

        async def rows(sql: str) -> list[tuple[Any, ...]]:
            return await (await conn.execute(sql)).fetchall()

        return {
            "generations": await rows("SELECT id::text, prompt FROM generations ORDER BY created_at"),
            "reservations": await rows("SELECT id::text, status FROM quota_reservations ORDER BY created_at"),
            "keys": await rows("SELECT key, status, response_status FROM idempotency_keys ORDER BY key"),
        }


async def test_the_same_key_and_body_replays_and_another_body_is_refused(client, postgres_url):
    headers = {**await api_key(client), "Idempotency-Key": "order-17"}
    body = {"prompt": "a red fox in snow", "size": "256x256", "n": 2}

    first = await client.post("/v1/generations", json=body, headers=headers)
    assert first.status_code == 202, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/v1/generations", json=body, headers=headers)
    assert again.status_code == 202, again.text
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]

    reused = await client.post("/v1/generations", json={**body, "n": 1}, headers=headers)
    assert reused.status_code == 422, reused.text
    assert reused.json()["code"] == "idempotency_key_reused"
    assert reused.headers["content-type"].startswith("application/problem+json")

    facts = await stored(postgres_url)
    assert facts["generations"] == [(first.json()["id"], "a red fox in snow")]
    assert facts["reservations"] == [(first.json()["id"], "reserved")]  # quota reserved once
    assert facts["keys"] == [("order-17", "completed", 202)]
    usage = await client.get("/v1/usage", headers=headers)
    assert usage.json()["images_used"] == 2  # the one generation's n, reserved once, not per request


async def test_concurrent_duplicates_create_one_generation(client, postgres_url):
    headers = {**await api_key(client), "Idempotency-Key": "burst-1"}
    body = {"prompt": "ten at once", "size": "256x256"}

    async def scenario(http: httpx.AsyncClient) -> list[httpx.Response]:
        return list(
            await asyncio.gather(
                *(http.post("/v1/generations", json=body, headers=headers) for _ in range(DUPLICATES))
            )
        )

    responses = in_app(client, scenario)
    statuses = [response.status_code for response in responses]
    fresh = [r for r in responses if r.status_code == 202 and "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1, [(r.status_code, dict(r.headers), r.text) for r in responses]
    assert set(statuses) <= {202, 409}, [r.text for r in responses]
    for response in responses:
        if response.status_code == 409:
            assert response.json()["code"] == "idempotency_in_progress"
            assert response.headers["retry-after"] == "1"
        else:
            assert response.json()["id"] == fresh[0].json()["id"]

    generation_id = fresh[0].json()["id"]
    facts = await stored(postgres_url)
    assert facts["generations"] == [(generation_id, "ten at once")]
    assert facts["reservations"] == [(generation_id, "reserved")]
    assert facts["keys"] == [("burst-1", "completed", 202)]

    # After the burst, a repeat replays the one generation.
    replay = await client.post("/v1/generations", json=body, headers=headers)
    assert replay.status_code == 202
    assert replay.headers["idempotent-replayed"] == "true"
    assert replay.json()["id"] == generation_id
