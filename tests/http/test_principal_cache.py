"""The principal cache over HTTP (in-memory wiring): warm credentials cost no database work, and
revocation, suspension, profile and plan changes still take effect on the very next request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.invalidating_database import InvalidatingDatabase
from core.ports import Database
from entrypoints.http.svcs_plugin import registry_of
from tests.support.accounts import admin_session, bearer, login, register

WARM_REQUESTS = 20

# The built-in free plan's burst (20) would cut the warm-cache run short: these limits never bind.
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


@pytest.fixture
def environ(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    plans = tmp_path / "plans.toml"
    plans.write_text(ROOMY_FREE_PLAN)
    return {**environ, "PICTOR_PLANS_FILE": str(plans)}


async def make_admin(client: AsyncTestClient[Litestar], email: str) -> str:
    return await admin_session(client, email, display_name="Admin")


async def database_of(client: AsyncTestClient[Litestar]) -> Database:
    async with svcs.Container(registry_of(client.app)) as container:
        return await container.aget(Database)


class UnitsOfWork:
    """Counts the units of work opened on the in-memory database under the invalidating wrapper."""

    def __init__(self, database: Database) -> None:
        assert isinstance(database, InvalidatingDatabase), type(database)
        self.inner: Any = database.inner
        self.opened = 0
        original: Callable[[], Any] = self.inner.unit_of_work

        def counting() -> Any:
            self.opened += 1
            return original()

        self.inner.unit_of_work = counting


async def user_with_key(client: AsyncTestClient[Litestar], email: str) -> tuple[str, dict[str, Any]]:
    await register(client, email)
    session = await login(client, email)
    created = await client.post("/v1/api-keys", json={"name": "ci"}, headers=bearer(session))
    assert created.status_code == 201, created.text
    return session, dict(created.json())


async def test_a_warm_api_key_costs_no_database_work(client):
    _, key = await user_with_key(client, "warm@example.com")
    units = UnitsOfWork(await database_of(client))
    first = await client.get("/v1/me", headers=bearer(key["key"]))
    assert first.status_code == 200
    assert units.opened >= 1  # the miss loaded the key (and recorded its use)
    after_first = units.opened

    for _ in range(WARM_REQUESTS):
        response = await client.get("/v1/me", headers=bearer(key["key"]))
        assert response.status_code == 200
        assert response.json()["email"] == "warm@example.com"

    assert units.opened == after_first


async def test_a_warm_session_costs_no_database_work_for_its_user(client):
    session, _ = await user_with_key(client, "warm-session@example.com")
    units = UnitsOfWork(await database_of(client))
    assert (await client.get("/v1/me", headers=bearer(session))).status_code == 200
    after_first = units.opened

    for _ in range(WARM_REQUESTS):
        assert (await client.get("/v1/me", headers=bearer(session))).status_code == 200

    assert units.opened == after_first


async def test_a_revoked_key_is_refused_on_the_next_request(client):
    session, key = await user_with_key(client, "revoke@example.com")
    for _ in range(3):  # warm
        assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200

    revoked = await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(session))
    assert revoked.status_code == 204

    refused = await client.get("/v1/me", headers=bearer(key["key"]))
    assert refused.status_code == 401
    assert refused.json()["code"] == "unauthenticated"


async def test_a_suspended_user_is_refused_on_the_next_request(client):
    admin = await make_admin(client, "admin@example.com")
    session, key = await user_with_key(client, "suspend@example.com")
    user_id = (await client.get("/v1/me", headers=bearer(key["key"]))).json()["id"]
    assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200  # warm

    patched = await client.patch(
        f"/admin/users/{user_id}", json={"status": "suspended"}, headers=bearer(admin)
    )
    assert patched.status_code == 200, patched.text

    assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 401
    assert (await client.get("/v1/me", headers=bearer(session))).status_code == 401

    reactivated = await client.patch(
        f"/admin/users/{user_id}", json={"status": "active"}, headers=bearer(admin)
    )
    assert reactivated.status_code == 200
    assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200


async def test_a_profile_change_shows_at_once_through_every_credential(client):
    session, key = await user_with_key(client, "rename@example.com")
    for credential in (session, key["key"]):  # both warm
        assert (await client.get("/v1/me", headers=bearer(credential))).json()["display_name"] is None

    patched = await client.patch("/v1/me", json={"display_name": "Grace"}, headers=bearer(session))
    assert patched.status_code == 200, patched.text

    for credential in (session, key["key"]):
        assert (await client.get("/v1/me", headers=bearer(credential))).json()["display_name"] == "Grace"


async def test_a_plan_set_by_an_admin_applies_on_the_next_request(client):
    admin = await make_admin(client, "plans-admin@example.com")
    _, key = await user_with_key(client, "upgrade@example.com")
    before = await client.get("/v1/me", headers=bearer(key["key"]))
    assert before.json()["plan"] == "free"
    assert before.headers["ratelimit-policy"] == '"default";q=1000;w=60'

    patched = await client.patch(
        f"/admin/users/{before.json()['id']}", json={"plan": "pro"}, headers=bearer(admin)
    )
    assert patched.status_code == 200, patched.text

    after = await client.get("/v1/me", headers=bearer(key["key"]))
    assert after.json()["plan"] == "pro"
    assert after.headers["ratelimit-policy"] == '"default";q=600;w=60'  # the built-in pro plan's limit
