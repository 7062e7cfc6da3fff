"""The persistence port's contract (`Database`, `UnitOfWork`, `OutboxRepository`).

Run against PostgreSQL (fresh schema, migrated) and the in-memory fake, so the fake is held to the
real transaction semantics: isolation until commit, rollback on every other exit, row locks that
concurrent claimers skip.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone

import pytest

from adapters.memory.database import MemoryDatabase
from core.errors import DomainError, ErrorCode
from core.outbox import OutboxMessage
from core.ports import Database

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@pytest.fixture(params=["memory", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory fake; a fresh PostgreSQL schema's URL otherwise.

    A sync fixture, so the async `postgres_url` is only set up (or skipped) for the PostgreSQL case.
    """
    return None if request.param == "memory" else request.getfixturevalue("postgres_url")


@pytest.fixture
async def db(backend_url: str | None) -> AsyncIterator[Database]:
    if backend_url is None:
        yield MemoryDatabase()
        return
    from adapters.postgres import PostgresDatabase, apply_migrations, open_pool

    await apply_migrations(backend_url)
    pool = await open_pool(backend_url, min_size=1, max_size=4, name="contract")
    try:
        yield PostgresDatabase(pool)
    finally:
        await pool.close()


def message(id_: str, *, payload: dict[str, object] | None = None, at: datetime = T0) -> OutboxMessage:
    return OutboxMessage(
        id=id_,
        type="generation.completed",
        occurred_at=at,
        payload={"generation_id": id_} if payload is None else payload,
        correlation_id=f"req-{id_}",
    )


async def add_committed(db: Database, *ids: str) -> None:
    async with db.unit_of_work() as uow:
        for id_ in ids:
            await uow.outbox.add(message(id_))
        await uow.commit()


async def unpublished_ids(db: Database) -> list[str]:
    """What a fresh publisher would see, without keeping any of it locked."""
    async with db.unit_of_work() as uow:
        return [m.id for m in await uow.outbox.claim_unpublished(100)]


async def test_ping(db: Database) -> None:
    await db.ping()


async def test_commit_persists_the_message_as_written(db: Database) -> None:
    written = message(
        "m1",
        payload={"nested": {"list": [1, 2.5, "three", None, True]}, "text": "ünïcode ✓"},
        at=datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    async with db.unit_of_work() as uow:
        await uow.outbox.add(written)
        await uow.commit()

    async with db.unit_of_work() as uow:
        [stored] = await uow.outbox.claim_unpublished(10)

    assert stored.position > 0
    assert stored.published_at is None
    assert stored == OutboxMessage(
        id="m1",
        type=written.type,
        occurred_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        payload={"nested": {"list": [1, 2.5, "three", None, True]}, "text": "ünïcode ✓"},
        correlation_id="req-m1",
        position=stored.position,
    )
    assert stored.occurred_at.utcoffset() == timedelta(0)


async def test_leaving_without_commit_discards(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.outbox.add(message("m1"))

    assert await unpublished_ids(db) == []


async def test_explicit_rollback_discards(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.outbox.add(message("m1"))
        await uow.rollback()

    assert await unpublished_ids(db) == []


async def test_an_exception_discards_and_propagates(db: Database) -> None:
    async def fail_half_way() -> None:
        async with db.unit_of_work() as uow:
            await uow.outbox.add(message("m1"))
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail_half_way()

    assert await unpublished_ids(db) == []


async def test_writes_are_invisible_to_others_until_commit(db: Database) -> None:
    async with db.unit_of_work() as writer:
        await writer.outbox.add(message("m1"))
        assert await unpublished_ids(db) == []
        assert [m.id for m in await writer.outbox.claim_unpublished(10)] == ["m1"]  # reads its own write
        await writer.commit()

    assert await unpublished_ids(db) == ["m1"]


async def test_claims_in_position_order_up_to_the_limit(db: Database) -> None:
    # Ids sort the other way round, so only the position can give this order.
    await add_committed(db, "c")
    await add_committed(db, "b", "a")

    async with db.unit_of_work() as uow:
        claimed = await uow.outbox.claim_unpublished(2)
        assert await uow.outbox.claim_unpublished(0) == []

    assert [m.id for m in claimed] == ["c", "b"]
    assert claimed[0].position < claimed[1].position
    async with db.unit_of_work() as uow:
        positions = [m.position for m in await uow.outbox.claim_unpublished(10)]
    assert positions == sorted(positions)
    assert len(set(positions)) == 3


async def test_positions_keep_increasing_after_a_rollback(db: Database) -> None:
    await add_committed(db, "m1")
    async with db.unit_of_work() as uow:
        await uow.outbox.add(message("discarded"))
    await add_committed(db, "m2")

    async with db.unit_of_work() as uow:
        first, second = await uow.outbox.claim_unpublished(10)
    assert (first.id, second.id) == ("m1", "m2")
    assert second.position > first.position


async def test_concurrent_claimers_get_disjoint_messages(db: Database) -> None:
    await add_committed(db, "m1", "m2", "m3", "m4", "m5")

    async with db.unit_of_work() as first, db.unit_of_work() as second:
        claimed_first = await first.outbox.claim_unpublished(2)
        claimed_second = await second.outbox.claim_unpublished(10)
        # Claiming again in the same unit of work still sees its own locked rows.
        again_first = await first.outbox.claim_unpublished(10)

    assert [m.id for m in claimed_first] == ["m1", "m2"]
    assert [m.id for m in claimed_second] == ["m3", "m4", "m5"]
    assert [m.id for m in again_first] == ["m1", "m2"]


async def test_claims_are_released_when_the_claimer_rolls_back(db: Database) -> None:
    await add_committed(db, "m1", "m2")

    async with db.unit_of_work() as first:
        assert len(await first.outbox.claim_unpublished(10)) == 2
        async with db.unit_of_work() as second:
            assert await second.outbox.claim_unpublished(10) == []
        await first.rollback()
        async with db.unit_of_work() as third:
            assert [m.id for m in await third.outbox.claim_unpublished(10)] == ["m1", "m2"]


async def test_mark_published_hides_messages_once_committed(db: Database) -> None:
    await add_committed(db, "m1", "m2", "m3")

    async with db.unit_of_work() as publisher:
        claimed = await publisher.outbox.claim_unpublished(2)
        await publisher.outbox.mark_published([m.id for m in claimed], T0)
        assert [m.id for m in await publisher.outbox.claim_unpublished(10)] == ["m3"]
        await publisher.commit()

    assert await unpublished_ids(db) == ["m3"]


async def test_mark_published_is_undone_by_rollback(db: Database) -> None:
    await add_committed(db, "m1")

    async with db.unit_of_work() as publisher:
        await publisher.outbox.claim_unpublished(10)
        await publisher.outbox.mark_published(["m1"], T0)

    assert await unpublished_ids(db) == ["m1"]


async def test_mark_published_ignores_unknown_and_already_published_ids(db: Database) -> None:
    await add_committed(db, "m1", "m2")
    async with db.unit_of_work() as uow:
        await uow.outbox.mark_published(["m1", "missing"], T0)
        await uow.commit()
    async with db.unit_of_work() as uow:
        await uow.outbox.mark_published(["m1", "m1"], T0 + timedelta(hours=1))
        await uow.commit()

    assert await unpublished_ids(db) == ["m2"]


async def test_an_update_of_a_claimed_message_waits_for_the_claimer(db: Database) -> None:
    await add_committed(db, "m1")

    async with db.unit_of_work() as claimer, db.unit_of_work() as other:
        await claimer.outbox.claim_unpublished(10)
        update = asyncio.create_task(other.outbox.mark_published(["m1"], T0))
        await asyncio.sleep(0.05)
        assert not update.done()  # blocked on the claimer's row lock, like PostgreSQL
        await claimer.rollback()
        await update
        await other.commit()

    assert await unpublished_ids(db) == []


async def test_adding_a_duplicate_id_is_a_conflict_that_keeps_the_unit_of_work_usable(db: Database) -> None:
    await add_committed(db, "m1")

    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.outbox.add(message("m1"))
        await uow.outbox.add(message("m2"))
        await uow.commit()

    assert raised.value.code is ErrorCode.CONFLICT
    assert await unpublished_ids(db) == ["m1", "m2"]


async def test_naive_datetimes_are_refused(db: Database) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError):
            await uow.outbox.add(message("m1", at=datetime(2026, 1, 1)))


async def test_a_finished_unit_of_work_refuses_more_work(db: Database) -> None:
    async with db.unit_of_work() as uow:
        await uow.commit()
        with pytest.raises(RuntimeError):
            await uow.outbox.add(message("late"))
        with pytest.raises(RuntimeError):
            await uow.commit()
        await uow.rollback()  # a no-op once finished

    assert await unpublished_ids(db) == []


async def test_adding_an_id_another_unit_of_work_is_inserting_waits_for_its_outcome(db: Database) -> None:
    async with db.unit_of_work() as first, db.unit_of_work() as second:
        await first.outbox.add(message("m1"))
        duplicate = asyncio.create_task(second.outbox.add(message("m1")))
        await asyncio.sleep(0.05)
        assert not duplicate.done()  # waits on the unique key, like PostgreSQL
        await first.commit()
        with pytest.raises(DomainError):
            await duplicate

    async with db.unit_of_work() as first, db.unit_of_work() as second:
        await first.outbox.add(message("m2"))
        retry = asyncio.create_task(second.outbox.add(message("m2")))
        await asyncio.sleep(0.05)
        await first.rollback()
        await retry  # the first insert is gone: this one goes through
        await second.commit()

    assert await unpublished_ids(db) == ["m1", "m2"]


async def test_a_unit_of_work_is_entered_once_and_used_only_inside(db: Database) -> None:
    uow = db.unit_of_work()
    with pytest.raises(RuntimeError):
        await uow.outbox.claim_unpublished(1)
    async with uow:
        pass
    with pytest.raises(RuntimeError):
        async with uow:
            pass
