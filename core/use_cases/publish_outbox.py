"""Publish domain events from the transactional outbox to in-process handlers."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

from core.outbox import OutboxMessage
from core.ports import Clock, Database

EventHandler = Callable[[OutboxMessage], Awaitable[None]]


async def publish_outbox(
    database: Database, clock: Clock, handlers: Sequence[EventHandler], *, batch_size: int = 100
) -> int:
    """Deliver one batch of unpublished events, oldest first; returns how many were published.

    At least once: the batch is claimed, handed to every handler, and marked published in one
    transaction. If a handler fails or the process dies, the transaction rolls back and the batch
    is claimed again later, so handlers must be idempotent (they key on `message.id`). Concurrent
    publishers claim disjoint batches.
    """
    async with database.unit_of_work() as uow:
        messages = await uow.outbox.claim_unpublished(batch_size)
        if not messages:
            return 0
        for message in messages:
            for handler in handlers:
                await handler(message)
        await uow.outbox.mark_published([m.id for m in messages], clock.now())
        await uow.commit()
    return len(messages)


async def publish_outbox_backlog(
    database: Database,
    clock: Clock,
    handlers: Sequence[EventHandler],
    *,
    batch_size: int = 100,
    max_batches: int = 50,
    between_batches: Callable[[], Awaitable[None]] | None = None,
) -> int:
    """Publish batches until the outbox is empty or `max_batches` ran; returns how many events.

    Bounded, so one run never outlives its job's timeout; the next run takes the rest.
    `between_batches` lets the caller prove it is alive (a job heartbeat).
    """
    published = 0
    for _ in range(max_batches):
        count = await publish_outbox(database, clock, handlers, batch_size=batch_size)
        published += count
        if between_batches is not None:
            await between_batches()
        if count < batch_size:
            break
    return published
