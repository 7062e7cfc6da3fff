import asyncio
from contextlib import asynccontextmanager

from litestar.testing import AsyncTestClient

from core.ports import Database, JobQueue
from entrypoints.http.routes import health
from entrypoints.wiring import service_registry


async def test_live_answers_pass(client):
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "pass"}
    assert response.headers["content-type"].startswith("application/health+json")


async def test_ready_reports_every_dependency(client):
    response = await client.get("/health/ready")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "pass"
    assert set(body["checks"]) >= {"database", "cache", "storage", "queue", "secrets"}
    assert all(check["status"] == "pass" for check in body["checks"].values())


class _BrokenDatabase:
    def unit_of_work(self):
        raise ConnectionError("down")

    async def ping(self):
        raise ConnectionError("connection refused to postgres://app:hunter2@host")


async def test_ready_fails_with_503_when_a_required_dependency_fails(make_app, settings, environ):
    @asynccontextmanager
    async def broken_database():
        async with service_registry(settings, environ=environ) as registry:
            registry.register_value(Database, _BrokenDatabase(), ping=_BrokenDatabase.ping)
            yield registry

    async with AsyncTestClient(app=make_app(registry_factory=broken_database)) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    body = response.json()
    assert body["status"] == "fail"
    assert body["checks"]["database"]["status"] == "fail"
    assert "hunter2" not in response.text  # the failure is named, its message is not echoed
    assert body["checks"]["storage"]["status"] == "pass"


async def test_ready_fails_once_shutdown_begins(client):
    client.app.state.shutdown.begin()
    response = await client.get("/health/ready")
    assert response.status_code == 503
    assert response.json()["status"] == "fail"


async def test_ready_fails_when_a_needed_secret_is_missing(make_app, settings, environ):
    without_key = {k: v for k, v in environ.items() if k != "PICTOR_SECRET_URL_SIGNING_KEY"}

    def registry():
        return service_registry(settings, environ=without_key)

    async with AsyncTestClient(app=make_app(registry_factory=registry)) as client:
        response = await client.get("/health/ready")
    assert response.status_code == 503
    secrets = response.json()["checks"]["secrets"]
    assert secrets["status"] == "fail"
    assert "url_signing_key" in secrets["output"]


class _StuckQueue:
    """A dependency whose ping hangs and is slow to give up when cancelled, like a frozen server."""

    gave_up = False

    async def ping(self):
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            await asyncio.sleep(2)  # cleaning up takes far longer than readiness may wait
            _StuckQueue.gave_up = True
            raise


async def test_ready_answers_even_when_a_ping_hangs(make_app, settings, environ, monkeypatch):
    monkeypatch.setattr(health, "PING_TIMEOUT_SECONDS", 0.2)

    @asynccontextmanager
    async def stuck_queue():
        async with service_registry(settings, environ=environ) as registry:
            registry.register_value(JobQueue, _StuckQueue(), ping=_StuckQueue.ping)
            yield registry

    async with AsyncTestClient(app=make_app(registry_factory=stuck_queue)) as client:
        response = await asyncio.wait_for(client.get("/health/ready"), timeout=30)
        assert not _StuckQueue.gave_up  # answered without waiting for the stuck ping to give up
    assert response.status_code == 503
    assert response.json()["checks"]["queue"]["output"] == "no answer within 0.2 s"
