"""Subscription and usage routes over the in-memory wiring, on a clock that stands still (so a
preview and the charge that follows are computed at the same instant)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory.clock import ManualClock
from core.billing.plans import PlanCatalog
from core.ports import Clock
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import Settings
from entrypoints.use_cases import quotas_from
from entrypoints.wiring import service_registry
from entrypoints.worker import job_handlers
from tests.support.accounts import admin_session, bearer, login, register


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0))


@pytest.fixture
async def client(
    make_app: Callable[..., Litestar], settings: Settings, environ: dict[str, str], clock: ManualClock
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    @asynccontextmanager
    async def registry() -> AsyncIterator[svcs.Registry]:
        async with service_registry(settings, environ=environ) as services:
            services.register_value(Clock, clock)
            yield services

    async with AsyncTestClient(app=make_app(registry_factory=registry)) as test_client:
        yield test_client


async def catalog_of(client: AsyncTestClient[Litestar]) -> PlanCatalog:
    async with svcs.Container(registry_of(client.app)) as container:
        return await container.aget(PlanCatalog)


async def user_token(client: AsyncTestClient[Litestar], email: str) -> str:
    await register(client, email)
    return await login(client, email)


async def admin_token(client: AsyncTestClient[Litestar], email: str) -> str:
    return await admin_session(client, email)


async def test_a_new_user_is_on_the_free_plan(client: AsyncTestClient[Litestar], clock: ManualClock) -> None:
    token = await user_token(client, "ann@example.com")
    response = await client.get("/v1/subscription", headers=bearer(token))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["plan"] == "free" and body["status"] == "active"
    assert datetime.fromisoformat(body["current_period_start"]) == clock.now()
    assert body["cancel_at_period_end"] is False
    assert body["trial_end"] is None and body["scheduled_plan"] is None and body["latest_charge"] is None
    usage = (await client.get("/v1/usage", headers=bearer(token))).json()
    free = (await catalog_of(client)).default
    assert usage == {
        "period_start": body["current_period_start"],
        "period_end": body["current_period_end"],
        "images_used": 0,
        "images_limit": free.monthly_images,
        "images_remaining": free.monthly_images,
    }


async def test_an_upgrade_charges_the_preview_and_lifts_the_quota_at_once(
    client: AsyncTestClient[Litestar], clock: ManualClock
) -> None:
    token = await user_token(client, "ann@example.com")
    key = (await client.post("/v1/api-keys", json={"name": "app"}, headers=bearer(token))).json()["key"]
    async with svcs.Container(registry_of(client.app)) as container:
        quotas = await quotas_from(container)
        user_id = (await client.get("/v1/me", headers=bearer(token))).json()["id"]
        await quotas.reserve(user_id, "free", "018f0000-0000-7000-8000-000000000001", 3)
    before = (await client.get("/v1/usage", headers=bearer(key))).json()  # cached principal: free
    catalog = await catalog_of(client)
    assert before["images_used"] == 3 and before["images_limit"] == catalog.default.monthly_images

    clock.advance(5 * 86_400 + 17)
    preview = await client.post("/v1/subscription/preview", json={"plan": "team"}, headers=bearer(token))
    assert preview.status_code == 200, preview.text
    expected = preview.json()
    assert (
        expected["plan"] == "team"
        and 0 < expected["amount_due_cents"] < catalog.get("team").monthly_price_cents
    )  # type: ignore[union-attr]
    assert expected["proration_cents"] == expected["amount_due_cents"]
    assert datetime.fromisoformat(expected["effective_at"]) == clock.now()
    unchanged = (await client.get("/v1/subscription", headers=bearer(token))).json()
    assert unchanged["plan"] == "free" and unchanged["latest_charge"] is None

    changed = await client.post("/v1/subscription", json={"plan": "team"}, headers=bearer(token))

    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["plan"] == "team" and body["status"] == "active"
    charge = body["latest_charge"]
    assert (charge["amount_cents"], charge["kind"], charge["currency"]) == (
        expected["amount_due_cents"],
        "proration",
        "USD",
    )
    after = (await client.get("/v1/usage", headers=bearer(key))).json()  # the same key, at once
    assert after["images_used"] == 3 and after["images_limit"] == catalog.get("team").monthly_images  # type: ignore[union-attr]
    me = (await client.get("/v1/me", headers=bearer(token))).json()
    assert (await client.get("/v1/subscription", headers=bearer(token))).json() == body
    assert me["id"] == user_id


async def test_downgrade_cancel_and_trial(client: AsyncTestClient[Litestar]) -> None:
    token = await user_token(client, "ann@example.com")
    trial = (await client.post("/v1/subscription", json={"plan": "pro"}, headers=bearer(token))).json()
    assert trial["status"] == "trialing" and trial["trial_end"] == trial["current_period_end"]
    assert trial["latest_charge"] is None
    team = (await client.post("/v1/subscription", json={"plan": "team"}, headers=bearer(token))).json()
    assert team["status"] == "active" and team["latest_charge"]["kind"] == "renewal"
    down = (await client.post("/v1/subscription", json={"plan": "pro"}, headers=bearer(token))).json()
    assert (down["plan"], down["scheduled_plan"]) == ("team", "pro")
    preview = (
        await client.post("/v1/subscription/preview", json={"plan": "free"}, headers=bearer(token))
    ).json()
    assert preview["amount_due_cents"] == 0 and preview["effective_at"] == down["current_period_end"]
    canceled = await client.post("/v1/subscription/cancel", headers=bearer(token))
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["cancel_at_period_end"] is True and canceled.json()["scheduled_plan"] is None
    resumed = (await client.post("/v1/subscription", json={"plan": "team"}, headers=bearer(token))).json()
    assert resumed["cancel_at_period_end"] is False and resumed["latest_charge"] == team["latest_charge"]


async def test_billing_errors_are_problems_with_stable_codes(client: AsyncTestClient[Litestar]) -> None:
    token = await user_token(client, "ann@example.com")
    key = (await client.post("/v1/api-keys", json={"name": "app"}, headers=bearer(token))).json()["key"]
    unknown = await client.post("/v1/subscription", json={"plan": "platinum"}, headers=bearer(token))
    assert unknown.status_code == 422
    assert unknown.headers["content-type"].startswith("application/problem+json")
    assert unknown.json()["code"] == "unknown_plan" and unknown.json()["errors"][0]["field"] == "plan"
    for body in ({}, {"plan": 7}, {"plan": "team", "extra": 1}):
        invalid = await client.post("/v1/subscription/preview", json=body, headers=bearer(token))
        assert (invalid.status_code, invalid.json()["code"]) == (422, "validation_failed"), invalid.text
    free = await client.post("/v1/subscription/cancel", headers=bearer(token))
    assert (free.status_code, free.json()["code"]) == (409, "invalid_state")
    by_key = await client.post("/v1/subscription", json={"plan": "team"}, headers=bearer(key))
    assert (by_key.status_code, by_key.json()["code"]) == (403, "forbidden")
    assert (await client.get("/v1/subscription", headers=bearer(key))).status_code == 200
    narrow = await client.post(
        "/v1/api-keys", json={"name": "gen", "scopes": ["generations:read"]}, headers=bearer(token)
    )
    scoped = await client.get("/v1/usage", headers=bearer(narrow.json()["key"]))
    assert (scoped.status_code, scoped.json()["code"]) == (403, "insufficient_scope")
    for method, path in (
        ("GET", "/v1/subscription"),
        ("GET", "/v1/usage"),
        ("POST", "/v1/subscription/cancel"),
    ):
        anonymous = await client.request(method, path)
        assert (anonymous.status_code, anonymous.json()["code"]) == (401, "unauthenticated")


async def test_admins_set_plans_through_patch(client: AsyncTestClient[Litestar]) -> None:
    admin = await admin_token(client, "root@example.com")
    user = await register(client, "ann@example.com")
    token = await login(client, "ann@example.com")
    await client.get("/v1/usage", headers=bearer(token))  # the principal is cached on the free plan
    patched = await client.patch(f"/admin/users/{user['id']}", json={"plan": "team"}, headers=bearer(admin))
    assert patched.status_code == 200, patched.text
    assert patched.json()["plan"] == "team"
    subscription = (await client.get("/v1/subscription", headers=bearer(token))).json()
    assert subscription["plan"] == "team" and subscription["latest_charge"] is None  # no charge
    team = (await catalog_of(client)).get("team")
    assert (await client.get("/v1/usage", headers=bearer(token))).json()[
        "images_limit"
    ] == team.monthly_images  # type: ignore[union-attr]
    audit = (await client.get("/admin/audit?action=user.plan_changed", headers=bearer(admin))).json()["data"]
    assert [(r["target_id"], r["details"]) for r in audit] == [
        (user["id"], {"before": "free", "after": "team"})
    ]
    unknown = await client.patch(f"/admin/users/{user['id']}", json={"plan": "gold"}, headers=bearer(admin))
    assert (unknown.status_code, unknown.json()["code"]) == (422, "unknown_plan")
    by_user = await client.patch(f"/admin/users/{user['id']}", json={"plan": "pro"}, headers=bearer(token))
    assert by_user.status_code == 403


class JobContext:
    queue = "maintenance"
    key = "roll_over_subscriptions"
    attempt = 1
    correlation_id = None
    heartbeats = 0

    async def heartbeat(self) -> None:
        self.heartbeats += 1

    async def progress(self, fraction: float) -> None:
        return None


async def test_the_roll_over_cron_renews_and_applies_scheduled_changes(
    client: AsyncTestClient[Litestar], clock: ManualClock
) -> None:
    token = await user_token(client, "ann@example.com")
    await client.post("/v1/subscription", json={"plan": "team"}, headers=bearer(token))
    await client.post("/v1/subscription", json={"plan": "pro"}, headers=bearer(token))  # at the period end
    before = (await client.get("/v1/subscription", headers=bearer(token))).json()
    roll_over = job_handlers(registry_of(client.app))["roll_over_subscriptions"]
    context = JobContext()
    assert await roll_over(context) == {"rolled": 0}

    clock.advance((datetime.fromisoformat(before["current_period_end"]) - clock.now()).total_seconds())
    assert await roll_over(context) == {"rolled": 1}

    after = (await client.get("/v1/subscription", headers=bearer(token))).json()
    assert (after["plan"], after["scheduled_plan"], after["status"]) == ("pro", None, "active")
    assert after["current_period_start"] == before["current_period_end"]
    pro = (await catalog_of(client)).get("pro")
    assert (after["latest_charge"]["kind"], after["latest_charge"]["amount_cents"]) == (
        "renewal",
        pro.monthly_price_cents,  # type: ignore[union-attr]
    )
    assert (await client.get("/v1/usage", headers=bearer(token))).json()["images_limit"] == pro.monthly_images  # type: ignore[union-attr]
    assert await roll_over(context) == {"rolled": 0} and context.heartbeats == 3
