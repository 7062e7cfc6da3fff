"""Publish domain events from the transactional outbox to in-process handlers."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol, runtime_checkable

from core.events import DomainEvent, UndecodableEvent, from_outbox
from core.jobs import JobSpec
from core.ports import Clock, Database, JobQueue, UnitOfWork

log = logging.getLogger("pictor.events")


class Publication:
    """What the handlers of one batch share: the batch's unit of work, in which they may write
    (webhook deliveries, audit records) so that their writes commit exactly when the events are
    marked published, and the jobs to enqueue once that commit happened."""

    def __init__(self, uow: UnitOfWork) -> None:
        self.uow = uow
        self.jobs: list[JobSpec] = []

    def enqueue_after_commit(self, spec: JobSpec) -> None:
        self.jobs.append(spec)


@runtime_checkable
class BatchEventHandler(Protocol):
    """A handler that takes a whole batch at once, to read and write for all its events in a few
    statements (the webhook fan-out) rather than a few per event."""

    async def handle_batch(self, events: Sequence[DomainEvent], publication: Publication) -> None: ...


EventHandler = Callable[[DomainEvent, Publication], Awaitable[None]] | BatchEventHandler


async def publish_outbox(
    database: Database,
    clock: Clock,
    handlers: Sequence[EventHandler],
    *,
    jobs: JobQueue | None = None,
    batch_size: int = 100,
) -> int:
    """Deliver one batch of unpublished events, oldest first; returns how many were published.

    At least once: the batch is claimed, handed to every handler, and marked published in one
    transaction. If a handler fails or the process dies, the transaction rolls back and the batch
    is claimed again later, so handlers must be idempotent (they key on the event id). Concurrent
    publishers claim disjoint batches (`FOR UPDATE SKIP LOCKED`). A row that holds no event this
    version knows is logged and set aside (marked published) so it cannot stall the outbox.
    """
    async with database.unit_of_work() as uow:
        messages = await uow.outbox.claim_unpublished(batch_size)
        if not messages:
            return 0
        publication = Publication(uow)
        events: list[DomainEvent] = []
        for message in messages:
            try:
                events.append(from_outbox(message))
            except UndecodableEvent:
                log.error(
                    "undecodable outbox message set aside", extra={"event_id": message.id}, exc_info=True
                )
        for handler in handlers:  # each handler sees the whole batch, in order
            if isinstance(handler, BatchEventHandler):
                await handler.handle_batch(events, publication)
            else:
                for event in events:
                    await handler(event, publication)
        await uow.outbox.mark_published([m.id for m in messages], clock.now())
        await uow.commit()
    if publication.jobs and jobs is not None:
        for spec in publication.jobs:
            try:
                await jobs.enqueue(spec)
            except Exception:
                # The events are published; a lost follow-up (a notice email) is logged, not retried.
                log.error("could not enqueue a follow-up job", extra={"job": spec.function}, exc_info=True)
    return len(messages)


async def publish_outbox_backlog(
    database: Database,
    clock: Clock,
    handlers: Sequence[EventHandler],
    *,
    jobs: JobQueue | None = None,
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
        count = await publish_outbox(database, clock, handlers, jobs=jobs, batch_size=batch_size)
        published += count
        if between_batches is not None:
            await between_batches()
        if count < batch_size:
            break
    return published
