"""The outbox relay of the workers: a round publishes events through the production handlers and
dispatches the deliveries they made; the loop outlives a failing database and goes on."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

import pytest
import svcs
from prometheus_client import REGISTRY

from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.job_queue import MemoryJobQueue
from core.accounts.users import Role, User, UserStatus
from core.events import GenerationData, GenerationSucceeded, to_outbox
from core.jobs import WEBHOOKS
from core.ports import Clock, Database, Ids, JobQueue
from core.webhooks.delivery import DeliveryReport, deliver_job_spec
from core.webhooks.endpoints import WebhookEndpoint
from entrypoints.outbox_relay import OutboxRelay, relay_once
from entrypoints.settings import Settings
from entrypoints.webhook_metrics import observe_delivery

T0 = datetime(2026, 11, 25, 12, tzinfo=UTC)


class World:
    def __init__(self) -> None:
        self.database = MemoryDatabase()
        self.jobs = MemoryJobQueue()
        self.ids = SequentialIds()
        self.clock = ManualClock(T0)
        self.registry = svcs.Registry()
        self.registry.register_value(Database, self.database)
        self.registry.register_value(JobQueue, self.jobs)
        self.registry.register_value(Ids, self.ids)
        self.registry.register_value(Clock, self.clock)
        self.registry.register_value(Settings, Settings(database_url="memory://"))

    async def user_with_endpoint(self) -> str:
        user_id = self.ids.new_id()
        user = User(
            id=user_id,
            email="ann@example.com",
            email_normalized="ann@example.com",
            display_name=None,
            role=Role.USER,
            status=UserStatus.ACTIVE,
            email_verified=True,
            password_hash="x",
            plan="free",
            created_at=T0,
            updated_at=T0,
        )
        endpoint = WebhookEndpoint(
            id=self.ids.new_id(),
            user_id=user_id,
            url="https://hooks.example.com/",
            created_at=T0,
            updated_at=T0,
        )
        async with self.database.unit_of_work() as uow:
            await uow.users.add(user)
            await uow.webhook_endpoints.add(endpoint)
            await uow.commit()
        return user_id

    async def event(self, user_id: str) -> None:
        data = GenerationData(generation_id=self.ids.new_id(), status="succeeded", n=1, images=1)
        event = GenerationSucceeded(id=self.ids.new_id(), occurred_at=T0, user_id=user_id, data=data)
        async with self.database.unit_of_work() as uow:
            await uow.outbox.add(to_outbox(event))
            await uow.commit()


async def test_a_round_publishes_through_the_handlers_and_dispatches_the_deliveries() -> None:
    world = World()
    await world.event(await world.user_with_endpoint())
    before = (
        REGISTRY.get_sample_value("pictor_events_published_total", {"type": "generation.succeeded"}) or 0.0
    )
    async with svcs.Container(world.registry) as container:
        assert await relay_once(container) == (1, 1)
        assert await relay_once(container) == (0, 0)
    [delivery] = world.database.committed_webhook_deliveries()
    assert delivery.locked_until is not None  # leased to the job it dispatched
    assert await world.jobs.status(WEBHOOKS, deliver_job_spec(delivery).key or "") is not None
    after = REGISTRY.get_sample_value("pictor_events_published_total", {"type": "generation.succeeded"})
    assert after == before + 1


class BrokenDatabase:
    def __init__(self, inner: MemoryDatabase) -> None:
        self.inner = inner
        self.broken = True

    def unit_of_work(self):  # type: ignore[no-untyped-def]
        if self.broken:
            raise ConnectionError("database down")
        return self.inner.unit_of_work()

    async def ping(self) -> None:
        return None


async def test_the_loop_survives_a_database_outage_and_catches_up(caplog: pytest.LogCaptureFixture) -> None:
    world = World()
    broken = BrokenDatabase(world.database)
    world.registry.register_value(Database, broken)
    await world.event(await world.user_with_endpoint())
    relay = OutboxRelay(world.registry, interval_seconds=0.01)
    with caplog.at_level(logging.WARNING, logger="pictor.outbox"):
        await relay.start()
        try:
            for _ in range(500):  # until the first failure is logged
                if any("relay round failed" in r.getMessage() for r in caplog.records):
                    break
                await asyncio.sleep(0.01)
            broken.broken = False
            for _ in range(500):  # until the backlog is out
                if world.database.committed_webhook_deliveries():
                    break
                await asyncio.sleep(0.01)
        finally:
            await relay.stop()
    assert any("relay round failed" in r.getMessage() for r in caplog.records)
    assert [m.published_at is not None for m in world.database.committed_outbox()] == [True]
    assert len(world.database.committed_webhook_deliveries()) == 1


def test_delivery_metrics_count_outcomes_and_skip_duplicates() -> None:
    def value(name: str, labels: dict[str, str]) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    labels = {"event_type": "generation.succeeded", "outcome": "succeeded"}
    count = value("pictor_webhook_deliveries_total", labels)
    durations = value("pictor_webhook_delivery_duration_seconds_count", {})
    lags = value("pictor_webhook_delivery_lag_seconds_count", {})
    observe_delivery(
        DeliveryReport(
            outcome="succeeded",
            event_type="generation.succeeded",
            status_code=200,
            duration_seconds=0.2,
            lag_seconds=1.5,
        )
    )
    observe_delivery(DeliveryReport(outcome="skipped"))
    assert value("pictor_webhook_deliveries_total", labels) == count + 1
    assert value("pictor_webhook_delivery_duration_seconds_count", {}) == durations + 1
    assert value("pictor_webhook_delivery_lag_seconds_count", {}) == lags + 1
