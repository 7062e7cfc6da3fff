"""Two API processes (two apps, each with its own registry, tally and tracking loop) counting into
one Valkey: neither sees enough errors alone, together they cross the threshold, and exactly one
alert per cooldown reaches the local ops receiver, verified with `standardwebhooks`. The loops run
for real (every second); time moves by a manual clock both apps share."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import svcs
from litestar import Litestar, get
from litestar.testing import AsyncTestClient

from adapters.memory.clock import ManualClock
from core.ports import Clock
from entrypoints.error_tracking import ErrorTracking, tracking_of
from entrypoints.http.app import create_app
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import Settings, settings_from_mapping
from entrypoints.wiring import service_registry
from tests.support.ops_receiver import OpsReceiver

pytestmark = pytest.mark.services

OPS_SECRET = "whsec_" + "b3BzLWFsZXJ0LXNlY3JldC1mb3ItdGhlLXZhbGtleS10ZXN0"  # base64 of 36 bytes
COOLDOWN = 400


@get("/test/boom", sync_to_thread=False)
def boom() -> None:
    raise RuntimeError("boom")


@get("/test/fine", sync_to_thread=False)
def fine() -> dict[str, bool]:
    return {"ok": True}


@pytest.fixture
def receiver() -> Iterator[OpsReceiver]:
    with OpsReceiver() as receiver:
        yield receiver


@pytest.fixture
async def namespace(valkey_url: str) -> AsyncIterator[str]:
    from adapters.valkey.client import create_valkey_client

    name = f"t{uuid.uuid4().hex[:20]}"
    yield name
    client = create_valkey_client(valkey_url)
    try:
        async for key in client.scan_iter(match=f"{name}:*", count=500):
            await client.unlink(key)
    finally:
        await client.aclose()


def app_for(settings: Settings, environ: dict[str, str], clock: ManualClock) -> Litestar:
    @asynccontextmanager
    async def registry() -> AsyncIterator[svcs.Registry]:
        async with service_registry(settings, environ=environ) as services:
            services.register_value(Clock, clock)
            yield services

    app = create_app(settings, registry_factory=registry)
    app.register(boom)
    app.register(fine)
    return app


def tracking(client: AsyncTestClient[Litestar]) -> ErrorTracking:
    found = tracking_of(registry_of(client.app))
    assert found is not None
    return found


def alerts_claimed_now(*clients: AsyncTestClient[Litestar]) -> int:
    """Run a round of each app's loop at once, in its own event loop; how many alerts they claimed."""
    return sum(len(c.blocking_portal.call(tracking(c).run_once).alerts) for c in clients)


async def test_two_processes_alert_once_per_cooldown_on_shared_counts(
    valkey_url: str, namespace: str, receiver: OpsReceiver, tmp_path: Path
) -> None:
    environ = {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": "memory://",
        "PICTOR_STORAGE_URL": "memory://",
        "PICTOR_QUEUE_URL": "memory://",
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_NAMESPACE": namespace,
        "PICTOR_SECRET_URL_SIGNING_KEY": "signing-key-for-tests",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "webhook-master-key-for-tests",
        "PICTOR_OPS_WEBHOOK_URL": receiver.url,
        "PICTOR_SECRET_OPS_WEBHOOK_SECRET": OPS_SECRET,
        "PICTOR_ALERT_MIN_REQUESTS": "10",
        "PICTOR_ALERT_WINDOW_SECONDS": "60",
        "PICTOR_ALERT_COOLDOWN_SECONDS": str(COOLDOWN),
    }
    settings = settings_from_mapping(environ)
    # In the past, so that signatures before and after the cooldown are within a receiver's tolerance.
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=250))

    async with (
        AsyncTestClient(app=app_for(settings, environ, clock)) as one,
        AsyncTestClient(app=app_for(settings, environ, clock)) as two,
    ):

        async def burst(tag: str) -> None:
            for i in range(5):  # 5 of 9 in each process: under the minimum volume of 10 alone
                for name, client in (("one", one), ("two", two)):
                    await client.get("/test/boom", headers={"X-Request-ID": f"{tag}-{name}-{i}"})
            for _ in range(4):
                await one.get("/test/fine")
                await two.get("/test/fine")

        await burst("first")
        (first,) = receiver.wait_for(1, timeout=30)  # a loop's round, within a second or two
        data = first.verified(OPS_SECRET)["data"]
        assert (data["alert"], data["failed"], data["total"]) == ("http_5xx_rate", 10, 18)
        (top,) = data["top_errors"]
        assert (top["source"], top["count"]) == ("GET /test/boom", 10)
        assert {i.split("-")[1] for i in top["last_correlation_ids"]} == {"one", "two"}
        assert alerts_claimed_now(one, two) == 0

        clock.advance(30)  # within the cooldown: the rule is crossed again, nothing is sent
        await burst("second")
        assert alerts_claimed_now(one, two) == 0

        clock.advance(COOLDOWN)  # after it: the next burst alerts once more
        await burst("third")
        second = receiver.wait_for(2, timeout=30)[1]
        assert second.verified(OPS_SECRET)["data"]["top_errors"][0]["last_correlation_ids"][0].startswith(
            "third"
        )
        assert alerts_claimed_now(one, two) == 0
        for client in (one, two):
            client.blocking_portal.call(tracking(client).wait_for_sends, 30)
        assert len(receiver.deliveries) == 2
