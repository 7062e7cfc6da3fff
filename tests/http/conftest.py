"""The HTTP app over the in-memory wiring, driven by Litestar's test client."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from entrypoints.http.app import create_app
from entrypoints.settings import Settings, settings_from_mapping

METRICS_TOKEN = "metrics-token-for-tests"
SIGNING_KEY = "signing-key-for-tests"

MEMORY_ENVIRON = {
    "PICTOR_DATABASE_URL": "memory://",
    "PICTOR_VALKEY_URL": "memory://",
    "PICTOR_STORAGE_URL": "memory://",
    "PICTOR_QUEUE_URL": "memory://",
    "PICTOR_METRICS_TOKEN": METRICS_TOKEN,
    "PICTOR_SECRET_URL_SIGNING_KEY": SIGNING_KEY,
    "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "webhook-master-key-for-tests",
}


@pytest.fixture
def environ(tmp_path: Path) -> dict[str, str]:
    return {**MEMORY_ENVIRON, "PICTOR_DATA_DIR": str(tmp_path)}


@pytest.fixture
def settings(environ: dict[str, str]) -> Settings:
    return settings_from_mapping(environ)


@pytest.fixture
def make_app(settings: Settings, environ: dict[str, str]) -> Callable[..., Litestar]:
    from entrypoints.wiring import service_registry

    def make(**kwargs: object) -> Litestar:
        kwargs.setdefault("registry_factory", lambda: service_registry(settings, environ=environ))
        return create_app(settings, **kwargs)  # type: ignore[arg-type]

    return make


@pytest.fixture
async def client(make_app: Callable[..., Litestar]) -> AsyncIterator[AsyncTestClient[Litestar]]:
    async with AsyncTestClient(app=make_app()) as test_client:
        yield test_client
