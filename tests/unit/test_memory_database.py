"""What the in-memory database offers beyond the port's contract (which tests/contract covers)."""

from __future__ import annotations

from datetime import UTC, datetime

from adapters.memory.database import MemoryDatabase
from core.outbox import OutboxMessage

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def message(id_: str) -> OutboxMessage:
    return OutboxMessage(id=id_, type="user.registered", occurred_at=T0, payload={"user_id": id_})


async def test_committed_outbox_shows_published_and_unpublished_messages_by_position() -> None:
    db = MemoryDatabase()
    async with db.unit_of_work() as uow:
        await uow.outbox.add(message("b"))
        await uow.outbox.add(message("a"))
        assert db.committed_outbox() == []
        await uow.commit()
    async with db.unit_of_work() as uow:
        await uow.outbox.mark_published(["b"], T0)
        await uow.commit()

    committed = db.committed_outbox()
    assert [(m.id, m.position, m.published_at) for m in committed] == [("b", 1, T0), ("a", 2, None)]


async def test_the_stored_payload_is_a_copy() -> None:
    db = MemoryDatabase()
    payload: dict[str, object] = {"tags": ["x"]}
    async with db.unit_of_work() as uow:
        await uow.outbox.add(OutboxMessage(id="m", type="t", occurred_at=T0, payload=payload))
        await uow.commit()
    payload["tags"] = ["changed"]

    assert db.committed_outbox()[0].payload == {"tags": ["x"]}
