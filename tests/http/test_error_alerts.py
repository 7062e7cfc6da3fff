"""Error alerts over the in-memory wiring, sent for real to a local ops receiver and verified with
`standardwebhooks`: a 5xx burst makes exactly one alert per cooldown; a queue whose jobs fail makes
its own. The tracking loop is driven by hand (`run_once`) and time by a manual clock, so each step
is exact; `tests/integration/test_error_alerts_on_valkey.py` runs the real loop across two apps."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta

import pytest
import svcs
from litestar import Litestar, get
from litestar.testing import AsyncTestClient
from prometheus_client import REGISTRY

from adapters.memory.clock import ManualClock
from core.errors import DomainError, ErrorCode
from core.jobs import WEBHOOKS, JobSpec, JobState
from core.ports import ImageRenderer, JobQueue, WebhookTransport
from core.webhooks.delivery import DELIVER_WEBHOOK
from entrypoints.error_tracking import ErrorTracking, tracking_of
from entrypoints.http.app import create_app
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import Settings, settings_from_mapping
from entrypoints.worker import start_worker
from tests.support.error_tracking import driven_by_hand
from tests.support.ops_receiver import OpsReceiver

OPS_SECRET = "ops-alert-secret-for-the-tests-0123456789"  # a plain value: its bytes are the key
COOLDOWN = 400
# The clock starts in the past (of the test, not of the module's import: a full run takes longer
# than five minutes), so that alerts signed before and after a cooldown are all within the five
# minutes either way that a Standard Webhooks receiver tolerates.
CLOCK_LEAD = timedelta(seconds=250)


@get("/test/boom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("the database password is hunter2")


@get("/test/unavailable", sync_to_thread=False)
def unavailable() -> None:
    raise DomainError(ErrorCode.SERVICE_UNAVAILABLE, "down for a moment")


@get("/test/fine", sync_to_thread=False)
def fine() -> dict[str, bool]:
    return {"ok": True}


@pytest.fixture
def receiver() -> Iterator[OpsReceiver]:
    with OpsReceiver() as receiver:
        yield receiver


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime.now(UTC).replace(microsecond=0) - CLOCK_LEAD)


@pytest.fixture
def alert_environ(environ: dict[str, str], receiver: OpsReceiver) -> dict[str, str]:
    return {
        **environ,
        "PICTOR_OPS_WEBHOOK_URL": receiver.url,
        "PICTOR_SECRET_OPS_WEBHOOK_SECRET": OPS_SECRET,
        "PICTOR_ALERT_MIN_REQUESTS": "10",
        "PICTOR_ALERT_WINDOW_SECONDS": "60",
        "PICTOR_ALERT_COOLDOWN_SECONDS": str(COOLDOWN),
    }


@pytest.fixture
def alert_settings(alert_environ: dict[str, str]) -> Settings:
    return settings_from_mapping(alert_environ)


@pytest.fixture
async def client(
    alert_settings: Settings, alert_environ: dict[str, str], clock: ManualClock
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = create_app(alert_settings, registry_factory=driven_by_hand(alert_settings, alert_environ, clock))
    for handler in (boom, unavailable, fine):
        app.register(handler)
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def tracking(client: AsyncTestClient[Litestar]) -> ErrorTracking:
    found = tracking_of(registry_of(client.app))
    assert found is not None
    return found


def gauge(alert: str) -> float | None:
    return REGISTRY.get_sample_value("pictor_alert_active", {"alert": alert})


async def burst(client: AsyncTestClient[Litestar], path: str, n: int, tag: str) -> list[str]:
    ids = [f"{tag}-{i}" for i in range(n)]
    for request_id in ids:
        response = await client.get(path, headers={"X-Request-ID": request_id})
        assert response.status_code >= 500
    return ids


async def test_a_5xx_burst_alerts_once_per_cooldown(
    client: AsyncTestClient[Litestar],
    receiver: OpsReceiver,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    errors = tracking(client)
    for _ in range(8):
        assert (await client.get("/test/fine")).status_code == 200
    ids = await burst(client, "/test/boom", 10, "first")
    caplog.set_level(logging.ERROR, logger="pictor.alerts")

    report = await errors.run_once()

    (alert,) = report.alerts
    assert (alert.alert, alert.failed, alert.total) == ("http_5xx_rate", 10, 18)
    await errors.wait_for_sends(30)  # sent in the background, on this test's event loop
    (delivery,) = receiver.deliveries
    payload = delivery.verified(OPS_SECRET.encode())
    assert payload["type"] == "ops.alert"
    data = payload["data"]
    assert (data["id"], data["alert"], data["queue"]) == (alert.id, "http_5xx_rate", None)
    assert (data["failed"], data["total"], data["threshold"]) == (10, 18, 0.05)
    assert data["window_seconds"] == 60 and data["cooldown_seconds"] == COOLDOWN
    (top,) = data["top_errors"]
    assert (top["source"], top["code"], top["status"], top["count"]) == (
        "GET /test/boom",
        "internal_error",
        500,
        10,
    )
    assert top["last_correlation_ids"] == list(reversed(ids))[:5]  # the log lines to look for
    assert "hunter2" not in delivery.body.decode()
    assert delivery.headers["webhook-id"] == alert.id
    logged = [r for r in caplog.records if r.name == "pictor.alerts" and r.getMessage().startswith("alert:")]
    assert len(logged) == 1 and logged[0].alert == "http_5xx_rate"  # type: ignore[attr-defined]
    assert gauge("http_5xx_rate") == 1.0

    # A second burst within the cooldown: still alerting (the gauge), but nothing is sent.
    clock.advance(30)
    await burst(client, "/test/unavailable", 10, "second")
    report = await errors.run_once()
    assert report.alerts == () and report.checks[0].active
    await errors.wait_for_sends(30)
    assert len(receiver.deliveries) == 1 and gauge("http_5xx_rate") == 1.0

    # Once the window holds only successes, the gauge falls.
    clock.advance(61)
    for _ in range(10):
        await client.get("/test/fine")
    report = await errors.run_once()
    assert not report.checks[0].active and gauge("http_5xx_rate") == 0.0

    # After the cooldown, another burst alerts once more.
    clock.advance(COOLDOWN - 91)
    await burst(client, "/test/boom", 10, "third")
    assert len((await errors.run_once()).alerts) == 1
    assert len((await errors.run_once()).alerts) == 0
    await errors.wait_for_sends(30)
    _, second = receiver.deliveries
    assert second.verified(OPS_SECRET.encode())["data"]["failed"] == 10


async def test_no_alert_without_volume_or_for_client_errors(
    client: AsyncTestClient[Litestar], receiver: OpsReceiver
) -> None:
    errors = tracking(client)
    await burst(client, "/test/boom", 1, "lonely")  # 1 of 1: below the minimum volume
    assert (await errors.run_once()).alerts == ()
    for _ in range(30):
        assert (await client.get("/v1/me")).status_code == 401  # errors, but not ours
    report = await errors.run_once()
    assert report.alerts == () and report.checks[0].failed == 1 and report.checks[0].total == 31
    await errors.wait_for_sends(30)
    assert receiver.deliveries == []


async def test_probes_are_not_traffic(client: AsyncTestClient[Litestar]) -> None:
    for _ in range(5):
        await client.get("/health/live")
        await client.get("/metrics")  # 401 without the token
    assert tracking(client).tally.empty


async def test_failing_jobs_alert_for_their_queue(
    alert_settings: Settings, alert_environ: dict[str, str], clock: ManualClock, receiver: OpsReceiver
) -> None:
    async with driven_by_hand(alert_settings, alert_environ, clock)() as registry:
        registry.register_value(ImageRenderer, object())  # this worker renders nothing
        registry.register_value(WebhookTransport, object())  # and never gets to send
        errors = tracking_of(registry)
        assert errors is not None
        async with svcs.Container(registry) as container:
            jobs = await container.aget(JobQueue)
        keys = [f"broken-{i}" for i in range(10)]
        for key in keys:  # a lease that is no time at all: the job raises ValueError
            await jobs.enqueue(
                JobSpec(
                    queue=WEBHOOKS,
                    function=DELIVER_WEBHOOK,
                    kwargs={"delivery_id": key, "attempt": 1, "dispatched_until": "not a time"},
                    key=key,
                    attempts=1,
                    correlation_id=f"req-{key}",
                )
            )
        worker = await start_worker(registry, alert_settings, [WEBHOOKS])
        try:
            for key in keys:
                while (info := await jobs.status(WEBHOOKS, key)) is None or info.state is not JobState.FAILED:
                    await asyncio.sleep(0.01)
            (alert,) = (await errors.run_once()).alerts
        finally:
            await worker.stop()

        assert (alert.alert, alert.queue, alert.failed, alert.total) == (
            "job_failure_rate:webhooks",
            "webhooks",
            10,
            10,
        )
        await errors.wait_for_sends(30)
        (delivery,) = receiver.deliveries
        data = delivery.verified(OPS_SECRET.encode())["data"]
        (top,) = data["top_errors"]
        assert (top["source"], top["queue"], top["code"], top["status"]) == (
            DELIVER_WEBHOOK,
            "webhooks",
            "ValueError",
            None,
        )
        assert set(top["last_correlation_ids"]) <= {f"req-{key}" for key in keys}
        assert gauge("job_failure_rate:webhooks") == 1.0
        failures = REGISTRY.get_sample_value(
            "pictor_job_failures_total", {"queue": "webhooks", "function": DELIVER_WEBHOOK}
        )
        assert failures is not None and failures >= 10
