"""The outbox publisher over the in-memory database: order, at least once, handlers' writes in the
publishing transaction, follow-up jobs only after commit, and rows it cannot read set aside."""

from __future__ import annotations

from datetime import UTC, datetime

import msgspec
import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.job_queue import MemoryJobQueue
from core.accounts.audit import AuditAction, AuditRecord
from core.events import (
    EVENT_TYPES,
    DomainEvent,
    EventError,
    GenerationCanceled,
    GenerationData,
    GenerationFailed,
    GenerationSucceeded,
    QuotaThresholdData,
    QuotaThresholdReached,
    SubscriptionData,
    SubscriptionUpdated,
    UndecodableEvent,
    event_type,
    from_outbox,
    to_outbox,
)
from core.jobs import EMAIL, JobSpec
from core.outbox import OutboxMessage
from core.use_cases.publish_outbox import Publication, publish_outbox, publish_outbox_backlog

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def event(event_id: str) -> DomainEvent:
    data = GenerationData(generation_id=f"g-{event_id}", status="succeeded", n=1, images=1)
    return GenerationSucceeded(id=event_id, occurred_at=T0, user_id="u1", correlation_id="req-1", data=data)


def one_of_each() -> list[DomainEvent]:
    generation = GenerationData(
        generation_id="g1", status="failed", n=2, error=EventError(code="x", message="y")
    )
    subscription = SubscriptionData(
        plan="pro",
        status="active",
        current_period_start=T0,
        current_period_end=T0,
        cancel_at_period_end=True,
        events=("upgraded",),
    )
    quota = QuotaThresholdData(
        plan="free", percent=80, images_used=8, images_limit=10, period_start=T0, period_end=T0
    )
    return [
        GenerationSucceeded(id="1", occurred_at=T0, user_id="u", data=generation),
        GenerationFailed(id="2", occurred_at=T0, user_id="u", data=generation),
        GenerationCanceled(id="3", occurred_at=T0, user_id="u", data=generation),
        SubscriptionUpdated(id="4", occurred_at=T0, user_id="u", correlation_id="c", data=subscription),
        QuotaThresholdReached(id="5", occurred_at=T0, user_id="u", data=quota),
    ]


async def _write(database: MemoryDatabase, *ids: str) -> None:
    async with database.unit_of_work() as uow:
        for event_id in ids:
            await uow.outbox.add(to_outbox(event(event_id)))
        await uow.commit()


def test_every_event_type_survives_the_outbox_as_json_stores_it() -> None:
    events = one_of_each()
    assert sorted(event_type(e) for e in events) == sorted(EVENT_TYPES)
    for original in events:
        row = to_outbox(original)
        stored = msgspec.structs.replace(row, payload=msgspec.json.decode(msgspec.json.encode(row.payload)))
        assert stored.type == event_type(original) and "type" not in stored.payload
        assert from_outbox(stored) == original


@pytest.mark.parametrize(
    "row",
    [
        OutboxMessage(id="x", type="thing.happened", occurred_at=T0, payload={"user_id": "u", "data": {}}),
        OutboxMessage(id="x", type="generation.succeeded", occurred_at=T0, payload={"user_id": "u"}),
        OutboxMessage(
            id="x", type="quota.threshold_reached", occurred_at=T0, payload={"data": {"percent": "many"}}
        ),
    ],
)
def test_a_row_that_holds_no_known_event_is_undecodable(row: OutboxMessage) -> None:
    with pytest.raises(UndecodableEvent):
        from_outbox(row)


async def test_events_reach_every_handler_in_order_once() -> None:
    database, clock = MemoryDatabase(), ManualClock()
    await _write(database, "a", "b", "c")
    first: list[str] = []
    second: list[str] = []

    async def record_first(e: DomainEvent, publication: Publication) -> None:
        first.append(e.id)

    async def record_second(e: DomainEvent, publication: Publication) -> None:
        second.append(e.id)

    assert await publish_outbox(database, clock, [record_first, record_second], batch_size=2) == 2
    assert await publish_outbox(database, clock, [record_first, record_second], batch_size=2) == 1
    assert await publish_outbox(database, clock, [record_first, record_second], batch_size=2) == 0
    assert first == second == ["a", "b", "c"]
    assert all(m.published_at == clock.now() for m in database.committed_outbox())


async def test_a_failing_handler_leaves_the_batch_and_its_writes_for_the_next_run() -> None:
    database, clock, jobs = MemoryDatabase(), ManualClock(), MemoryJobQueue()
    a = SequentialIds().new_id()  # audit records need real ids
    await _write(database, a)
    delivered: list[str] = []

    async def audit_then_enqueue(e: DomainEvent, publication: Publication) -> None:
        await publication.uow.audit.add(
            AuditRecord(id=e.id, occurred_at=T0, action=AuditAction.SUBSCRIPTION_UPDATED, actor_id=None)
        )
        publication.enqueue_after_commit(JobSpec(queue=EMAIL, function="notice", key=f"notice:{e.id}"))

    async def flaky(e: DomainEvent, publication: Publication) -> None:
        if not delivered:
            delivered.append("failed once")
            raise ConnectionError("handler down")
        delivered.append(e.id)

    with pytest.raises(ConnectionError):
        await publish_outbox(database, clock, [audit_then_enqueue, flaky], jobs=jobs)
    assert database.committed_audit() == []  # rolled back with the batch
    assert await jobs.status(EMAIL, f"notice:{a}") is None  # nothing enqueued before the commit
    assert await publish_outbox(database, clock, [audit_then_enqueue, flaky], jobs=jobs) == 1
    assert delivered == ["failed once", a]
    assert [r.id for r in database.committed_audit()] == [a]
    assert await jobs.status(EMAIL, f"notice:{a}") is not None


async def test_an_undecodable_row_is_set_aside_without_stalling_the_rest() -> None:
    database, clock = MemoryDatabase(), ManualClock()
    async with database.unit_of_work() as uow:
        await uow.outbox.add(OutboxMessage(id="bad", type="thing.happened", occurred_at=T0, payload={}))
        await uow.commit()
    await _write(database, "good")
    seen: list[str] = []

    async def record(e: DomainEvent, publication: Publication) -> None:
        seen.append(e.id)

    assert await publish_outbox(database, clock, [record]) == 2
    assert seen == ["good"]
    assert all(m.published_at is not None for m in database.committed_outbox())


async def test_the_backlog_is_drained_in_bounded_batches() -> None:
    database, clock = MemoryDatabase(), ManualClock()
    await _write(database, *(f"e{i:03}" for i in range(25)))
    beats: list[int] = []

    async def beat() -> None:
        beats.append(1)

    async def nothing(e: DomainEvent, publication: Publication) -> None:
        return None

    assert (
        await publish_outbox_backlog(
            database, clock, [nothing], batch_size=10, max_batches=2, between_batches=beat
        )
        == 20
    )
    assert len(beats) == 2
    assert await publish_outbox_backlog(database, clock, [nothing], batch_size=10) == 5
