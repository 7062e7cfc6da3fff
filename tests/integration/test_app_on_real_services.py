"""The HTTP app wired to real PostgreSQL, Valkey, S3 (moto) and SAQ, as production runs it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from litestar.testing import AsyncTestClient

from adapters.postgres.migrations import apply_migrations
from entrypoints.http.app import create_app
from entrypoints.settings import Settings, settings_from_mapping
from entrypoints.wiring import PendingMigrationsError, service_registry
from tests.support.services import unique_name


@pytest.fixture
def production_environ(
    postgres_url: str, valkey_url: str, moto_endpoint: str, s3_bucket: str, tmp_path: Path
) -> dict[str, str]:
    return {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_QUEUE_URL": valkey_url,
        "PICTOR_NAMESPACE": unique_name("it").replace("_", "-"),
        "PICTOR_STORAGE_URL": f"s3://{s3_bucket}/pictor",
        "PICTOR_S3_ENDPOINT": moto_endpoint,
        "PICTOR_S3_REGION": "us-east-1",
        "PICTOR_S3_ACCESS_KEY_ID": "test",
        "PICTOR_S3_SECRET_ACCESS_KEY": "test",
        "PICTOR_S3_ALLOW_HTTP": "true",
        "PICTOR_METRICS_TOKEN": "t",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",  # webhook signing secrets derive from it
        "PICTOR_DB_POOL_MIN": "1",
        "PICTOR_DB_POOL_MAX": "4",
    }


def _app(settings: Settings, environ: dict[str, str]) -> Callable[[], object]:
    return create_app(settings, registry_factory=lambda: service_registry(settings, environ=environ))


async def test_the_app_refuses_to_start_with_pending_migrations(production_environ):
    settings = settings_from_mapping(production_environ)
    with pytest.raises(PendingMigrationsError, match="0001_outbox"):
        async with service_registry(settings, environ=production_environ):
            pass


async def test_ready_passes_on_real_services(production_environ):
    await apply_migrations(production_environ["PICTOR_DATABASE_URL"])
    settings = settings_from_mapping(production_environ)
    async with AsyncTestClient(app=_app(settings, production_environ)) as client:
        response = await client.get("/health/ready")
        assert response.status_code == 200, response.text
        checks = response.json()["checks"]
        for name in ("database", "cache", "storage", "queue", "secrets"):
            assert checks[name]["status"] == "pass", checks
        metrics = await client.get("/metrics", headers={"Authorization": "Bearer t"})
        assert 'pictor_db_query_duration_seconds_count{operation="select"}' in metrics.text


async def test_a_valkey_outage_degrades_the_cache_but_fails_sessions(production_environ):
    await apply_migrations(production_environ["PICTOR_DATABASE_URL"])
    environ = {**production_environ, "PICTOR_VALKEY_URL": "redis://127.0.0.1:1/0"}  # nothing listens
    settings = settings_from_mapping(environ)
    async with AsyncTestClient(app=_app(settings, environ)) as client:
        response = await client.get("/health/ready")
    body = response.json()
    assert body["checks"]["cache"]["status"] == "warn"  # the cache is optional: reads fall back
    assert body["checks"]["sessions"]["status"] == "fail"  # but nobody could log in
    assert body["checks"]["database"]["status"] == "pass"
    assert response.status_code == 503, body


async def test_a_queue_outage_fails_readiness(production_environ):
    await apply_migrations(production_environ["PICTOR_DATABASE_URL"])
    environ = {**production_environ, "PICTOR_QUEUE_URL": "redis://127.0.0.1:1/0"}
    settings = settings_from_mapping(environ)
    async with AsyncTestClient(app=_app(settings, environ)) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503, response.text
    assert response.json()["checks"]["queue"]["status"] == "fail"
