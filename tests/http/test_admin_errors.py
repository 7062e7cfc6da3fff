"""`GET /admin/errors` over the in-memory wiring: recent codes per route and job with counts, rates
and the latest correlation ids; admins in person only."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
from litestar import Litestar, get
from litestar.params import FromPath
from litestar.testing import AsyncTestClient

from adapters.memory.clock import ManualClock
from core.errors import DomainError, ErrorCode
from core.ports import WebhookTransport
from core.webhooks.delivery import DELIVER_WEBHOOK
from entrypoints.error_tracking import ErrorTracking, tracking_of
from entrypoints.http.app import create_app
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import settings_from_mapping
from entrypoints.worker import job_handlers
from tests.support.accounts import admin_session, bearer, login, register
from tests.support.error_tracking import driven_by_hand


@get("/test/boom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("boom")


@get("/test/widgets/{widget_id:str}", sync_to_thread=False)
def widget(widget_id: FromPath[str]) -> dict[str, str]:
    if widget_id != "w1":
        raise DomainError(ErrorCode.NOT_FOUND, "No such widget")
    return {"id": widget_id}


class HandContext:
    """A job's context, as a worker gives it."""

    def __init__(self, key: str, queue: str) -> None:
        self.queue = queue
        self.key = key
        self.attempt = 1
        self.correlation_id = f"req-{key}"

    async def heartbeat(self) -> None:
        return None

    async def progress(self, fraction: float) -> None:
        return None


@pytest.fixture
async def client(environ: dict[str, str]) -> AsyncIterator[AsyncTestClient[Litestar]]:
    settings = settings_from_mapping({**environ, "PICTOR_ALERT_WINDOW_SECONDS": "120"})
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    app = create_app(settings, registry_factory=driven_by_hand(settings, environ, clock))
    for handler in (boom, widget):
        app.register(handler)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


@pytest.fixture
async def admin(client: AsyncTestClient[Litestar]) -> str:
    return await admin_session(client, "ops@example.com", display_name="Ops")


def tracking(client: AsyncTestClient[Litestar]) -> ErrorTracking:
    found = tracking_of(registry_of(client.app))
    assert found is not None
    return found


async def errors_page(client: AsyncTestClient[Litestar], token: str, **params: Any) -> dict[str, Any]:
    await tracking(client).flush()
    response = await client.get("/admin/errors", params=params, headers=bearer(token))
    assert response.status_code == 200, response.text
    return dict(response.json())


async def test_errors_are_listed_by_route_template_and_code_with_rates_and_correlation_ids(
    client: AsyncTestClient[Litestar], admin: str
) -> None:
    for i in range(6):
        await client.get("/test/boom", headers={"X-Request-ID": f"boom-{i}"})
    for _ in range(4):
        assert (await client.get("/test/widgets/w1")).status_code == 200
    assert (await client.get("/test/widgets/nope", headers={"X-Request-ID": "bad-1"})).status_code == 404
    await client.get("/nowhere/at/all", headers={"X-Request-ID": "lost-1"})
    await client.get("/nowhere/else", headers={"X-Request-ID": "lost-2"})

    page = await errors_page(client, admin)

    rows = {(row["route"], row["code"]): row for row in page["errors"]}
    boom_row = rows[("GET /test/boom", "internal_error")]
    assert boom_row["kind"] == "http" and boom_row["job"] is None and boom_row["queue"] is None
    assert (boom_row["status"], boom_row["category"], boom_row["count"], boom_row["rate"]) == (
        500,
        "server",
        6,
        1.0,
    )
    assert boom_row["per_minute"] == 3.0  # 6 over the 2-minute window
    assert boom_row["last_correlation_ids"] == ["boom-5", "boom-4", "boom-3", "boom-2", "boom-1"]
    assert boom_row["last_seen_at"] is not None
    # Raw paths never appear: an unknown widget counts under its route's template; unmatched paths
    # share one row.
    bad = rows[("GET /test/widgets/{widget_id}", "not_found")]
    assert (bad["count"], bad["rate"], bad["last_correlation_ids"]) == (1, 0.2, ["bad-1"])
    lost = rows[("GET unmatched", "not_found")]
    assert (lost["count"], lost["last_correlation_ids"]) == (2, ["lost-2", "lost-1"])
    assert not any("nowhere" in str(row) for row in page["errors"])
    assert [row["count"] for row in page["errors"]] == sorted(
        (r["count"] for r in page["errors"]), reverse=True
    )

    http = page["http"]
    assert http["server_errors"] == 6 and http["responses"] >= 13  # the admin's own login counts too
    assert page["window_seconds"] == 120
    (rule,) = page["alerts"]
    assert rule["alert"] == "http_5xx_rate" and rule["failed"] == 6 and rule["threshold"] == 0.05
    assert rule["active"] is False  # 6 of a few more than 13: above 5 %, but under 20 requests


async def test_failed_jobs_are_listed_per_queue_and_kind_filters(
    client: AsyncTestClient[Litestar], admin: str
) -> None:
    registry = registry_of(client.app)
    registry.register_value(WebhookTransport, object())  # an API process has none; never reached
    handlers = job_handlers(registry)
    for i in range(3):  # a dispatch lease that is no time at all: the job raises
        with pytest.raises(ValueError):
            await handlers[DELIVER_WEBHOOK](
                HandContext(f"d{i}", "webhooks"), delivery_id=f"d{i}", attempt=1, dispatched_until="never"
            )
    await handlers["delete_expired_sessions"](HandContext("cron", "maintenance"))
    await client.get("/test/boom")

    page = await errors_page(client, admin, kind="job")

    (row,) = page["errors"]
    assert (row["kind"], row["route"], row["job"], row["queue"]) == ("job", None, DELIVER_WEBHOOK, "webhooks")
    assert (row["code"], row["category"], row["status"], row["count"], row["rate"]) == (
        "ValueError",
        "server",
        None,
        3,
        1.0,
    )
    assert row["last_correlation_ids"] == ["req-d2", "req-d1", "req-d0"]
    queues = {q["queue"]: q for q in page["queues"]}
    assert queues["webhooks"] == {"queue": "webhooks", "finished": 3, "failed": 3, "failure_rate": 1.0}
    assert queues["maintenance"]["failed"] == 0
    assert {a["alert"] for a in page["alerts"]} == {
        "http_5xx_rate",
        "job_failure_rate:maintenance",
        "job_failure_rate:webhooks",
    }
    http_only = await errors_page(client, admin, kind="http", limit=1)
    assert [row["kind"] for row in http_only["errors"]] == ["http"]


async def test_only_admins_in_person_see_errors(client: AsyncTestClient[Litestar], admin: str) -> None:
    assert (await client.get("/admin/errors")).status_code == 401
    await register(client, "someone@example.com")
    user = await login(client, "someone@example.com")
    assert (await client.get("/admin/errors", headers=bearer(user))).json()["code"] == "forbidden"
    key = (await client.post("/v1/api-keys", json={"name": "ops"}, headers=bearer(admin))).json()["key"]
    assert (await client.get("/admin/errors", headers=bearer(key))).json()["code"] == "forbidden"


async def test_bad_parameters_are_problems(client: AsyncTestClient[Litestar], admin: str) -> None:
    too_many = await client.get("/admin/errors", params={"limit": 501}, headers=bearer(admin))
    assert (too_many.status_code, too_many.json()["code"]) == (422, "validation_failed")
    odd_kind = await client.get("/admin/errors", params={"kind": "cron"}, headers=bearer(admin))
    assert (odd_kind.status_code, odd_kind.json()["code"]) == (422, "validation_failed")
