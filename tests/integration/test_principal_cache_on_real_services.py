"""Two API "processes" (two apps, two registries) on one real PostgreSQL and Valkey: each keeps
resolved credentials in its own memory, and a change made through one is seen by the other on its
next requests, carried by Valkey pub/sub. A warm credential costs the other instance no SQL."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient
from psycopg_pool import AsyncConnectionPool

from adapters.postgres.migrations import apply_migrations
from core.ports import PrincipalCache
from entrypoints.http.app import create_app
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import settings_from_mapping
from entrypoints.wiring import service_registry
from tests.support.accounts import bearer, login, register
from tests.support.services import unique_name

POLL_SECONDS = 3.0  # how long the other instance may take to hear an invalidation
WARM_REQUESTS = 20

ROOMY_FREE_PLAN = """
format = 1

[plans.free]
name = "Free"
monthly_price_cents = 0
currency = "USD"
monthly_images = 50
rate_limit = { requests = 1000, per_seconds = 60, burst = 1000 }
max_concurrent_jobs = 1
max_image_pixels = 589824
"""

Client = AsyncTestClient[Litestar]


async def service(client: Client, kind: Any) -> Any:
    async with svcs.Container(registry_of(client.app)) as container:
        return await container.aget(kind)


async def listening(client: Client) -> None:
    """Until the instance's principal cache hears the bus (before that it caches nothing)."""
    cache: PrincipalCache = await service(client, PrincipalCache)

    async def poll() -> None:
        while True:
            try:
                await cache.ping()
                return
            except ConnectionError:
                await asyncio.sleep(0.02)

    await asyncio.wait_for(poll(), 10)


async def eventually(
    client: Client, credential: str, accept: Callable[[httpx.Response], bool]
) -> httpx.Response:
    """The first answer to GET /v1/me that `accept`s, polling for a bounded while; else the last."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + POLL_SECONDS
    while True:
        response = await client.get("/v1/me", headers=bearer(credential))
        if accept(response) or loop.time() >= deadline:
            return response
        await asyncio.sleep(0.02)


class SqlCounter:
    """Counts the statements run on one instance's pool (its cursor class's observer)."""

    def __init__(self, pool: AsyncConnectionPool[Any]) -> None:
        observer = pool.kwargs["cursor_factory"].observer
        self.statements = 0
        original = observer.observe

        def counting(text: str, seconds: float, *, failed: bool = False) -> None:
            self.statements += 1
            original(text, seconds, failed=failed)

        observer.observe = counting


@pytest.fixture
async def instances(
    postgres_url: str, valkey_url: str, tmp_path: Path
) -> AsyncIterator[tuple[Client, Client]]:
    await apply_migrations(postgres_url)
    plans = tmp_path / "plans.toml"
    plans.write_text(ROOMY_FREE_PLAN)
    environ = {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_QUEUE_URL": valkey_url,
        "PICTOR_NAMESPACE": unique_name("pc").replace("_", "-"),
        "PICTOR_STORAGE_URL": "memory://",
        "PICTOR_SECRET_URL_SIGNING_KEY": "k",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        "PICTOR_DB_POOL_MIN": "1",
        "PICTOR_PLANS_FILE": str(plans),
    }
    settings = settings_from_mapping(environ)
    async with AsyncExitStack() as stack:
        clients = []
        for _ in range(2):
            app = create_app(settings, registry_factory=lambda: service_registry(settings, environ=environ))
            clients.append(await stack.enter_async_context(AsyncTestClient(app=app)))
        for client in clients:
            await listening(client)
        yield clients[0], clients[1]


async def make_admin(client: Client, postgres_url: str, email: str) -> str:
    """Register over HTTP, then promote in the database (the app under test runs its services on
    the test client's own event loop, so the use cases cannot be called from here)."""
    await register(client, email)
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        promoted = await conn.execute(
            "UPDATE users SET role = 'admin' WHERE email_normalized = %s", (email.lower(),)
        )
        assert promoted.rowcount == 1
    return await login(client, email)


async def user_with_key(client: Client, email: str) -> tuple[str, dict[str, Any]]:
    await register(client, email)
    session = await login(client, email)
    created = await client.post("/v1/api-keys", json={"name": "ci"}, headers=bearer(session))
    assert created.status_code == 201, created.text
    return session, dict(created.json())


async def test_a_key_revoked_on_one_instance_is_refused_by_the_other(instances):
    a, b = instances
    session, key = await user_with_key(a, "revoke@example.com")
    for client in (a, b):  # both caches warm
        for _ in range(2):
            assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200

    assert (await a.delete(f"/v1/api-keys/{key['id']}", headers=bearer(session))).status_code == 204

    assert (await a.get("/v1/me", headers=bearer(key["key"]))).status_code == 401  # here: at once
    on_b = await eventually(b, key["key"], lambda response: response.status_code == 401)
    assert on_b.status_code == 401, on_b.text


async def test_a_plan_set_on_one_instance_applies_on_the_other(instances, postgres_url):
    a, b = instances
    admin = await make_admin(a, postgres_url, "admin@example.com")
    _, key = await user_with_key(a, "upgrade@example.com")
    for client in (a, b):
        me = await client.get("/v1/me", headers=bearer(key["key"]))
        assert me.json()["plan"] == "free"

    patched = await a.patch(f"/admin/users/{me.json()['id']}", json={"plan": "pro"}, headers=bearer(admin))
    assert patched.status_code == 200, patched.text

    on_b = await eventually(b, key["key"], lambda response: response.json().get("plan") == "pro")
    assert on_b.json()["plan"] == "pro", on_b.text
    assert on_b.headers["ratelimit-policy"] == '"default";q=600;w=60'  # the built-in pro plan's limit


async def test_a_user_suspended_on_one_instance_is_refused_by_the_other(instances, postgres_url):
    a, b = instances
    admin = await make_admin(a, postgres_url, "root@example.com")
    _, key = await user_with_key(a, "suspend@example.com")
    user_id = (await b.get("/v1/me", headers=bearer(key["key"]))).json()["id"]

    patched = await a.patch(f"/admin/users/{user_id}", json={"status": "suspended"}, headers=bearer(admin))
    assert patched.status_code == 200, patched.text

    on_b = await eventually(b, key["key"], lambda response: response.status_code == 401)
    assert on_b.status_code == 401, on_b.text


async def test_a_warm_key_costs_the_other_instance_no_sql(instances):
    a, b = instances
    _, key = await user_with_key(a, "warm@example.com")
    sql_on_b = SqlCounter(await service(b, AsyncConnectionPool))
    assert (await b.get("/v1/me", headers=bearer(key["key"]))).status_code == 200
    assert sql_on_b.statements >= 1  # the miss read the key and its user (and recorded the use)
    after_first = sql_on_b.statements

    for _ in range(WARM_REQUESTS):
        assert (await b.get("/v1/me", headers=bearer(key["key"]))).status_code == 200

    assert sql_on_b.statements == after_first
