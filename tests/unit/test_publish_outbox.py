from datetime import UTC, datetime

import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from core.outbox import OutboxMessage
from core.use_cases.publish_outbox import publish_outbox


async def _write(database: MemoryDatabase, *ids: str) -> None:
    async with database.unit_of_work() as uow:
        for message_id in ids:
            await uow.outbox.add(
                OutboxMessage(id=message_id, type="thing.happened", occurred_at=datetime.now(UTC), payload={})
            )
        await uow.commit()


async def test_events_reach_every_handler_in_order_once():
    database, clock = MemoryDatabase(), ManualClock()
    await _write(database, "a", "b", "c")
    first, second = [], []

    async def record_first(message):
        first.append(message.id)

    async def record_second(message):
        second.append(message.id)

    assert await publish_outbox(database, clock, [record_first, record_second], batch_size=2) == 2
    assert await publish_outbox(database, clock, [record_first, record_second], batch_size=2) == 1
    assert await publish_outbox(database, clock, [record_first, record_second], batch_size=2) == 0
    assert first == second == ["a", "b", "c"]
    assert all(m.published_at == clock.now() for m in database.committed_outbox())


async def test_a_failing_handler_leaves_the_batch_for_the_next_run():
    database, clock = MemoryDatabase(), ManualClock()
    await _write(database, "a")
    delivered = []

    async def flaky(message):
        if not delivered:
            delivered.append("failed once")
            raise ConnectionError("handler down")
        delivered.append(message.id)

    with pytest.raises(ConnectionError):
        await publish_outbox(database, clock, [flaky])
    assert await publish_outbox(database, clock, [flaky]) == 1  # at least once: retried, not lost
    assert delivered == ["failed once", "a"]
