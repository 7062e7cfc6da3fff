"""The outbox relay: in every worker that serves the maintenance queue, a loop that publishes the
outbox and dispatches due webhook deliveries, so events go out within about a poll interval.

Several workers relay at once and share the work (both claims skip rows another holds). The loop
survives its dependencies' outages: a failed round is logged and retried after a growing pause.
"""

from __future__ import annotations

import asyncio
import logging

import svcs

from adapters.background_tasks import cancel_and_wait
from core.ports import Clock, Database, JobQueue
from core.use_cases.publish_outbox import publish_outbox_backlog
from core.webhooks.delivery import dispatch_due_deliveries
from entrypoints.event_handlers import event_handlers_from

log = logging.getLogger("pictor.outbox")

MAX_BACKOFF_SECONDS = 30.0


async def relay_once(container: svcs.Container) -> tuple[int, int]:
    """One round: publish the backlog, then dispatch due deliveries; returns both counts."""
    database, clock, jobs = await container.aget(Database, Clock, JobQueue)
    handlers = await event_handlers_from(container)
    published = await publish_outbox_backlog(database, clock, handlers, jobs=jobs)
    dispatched = await dispatch_due_deliveries(database, jobs, clock)
    return published, dispatched


class OutboxRelay:
    def __init__(self, registry: svcs.Registry, *, interval_seconds: float) -> None:
        self._registry = registry
        self._interval = interval_seconds
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pictor-outbox-relay")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _run(self) -> None:
        failures = 0
        while True:
            try:
                async with svcs.Container(self._registry) as container:
                    published, dispatched = await relay_once(container)
                failures = 0
            except Exception:
                failures += 1
                pause = min(MAX_BACKOFF_SECONDS, self._interval * 2**failures)
                log.warning(
                    "outbox relay round failed; retrying", extra={"pause_seconds": pause}, exc_info=True
                )
                await asyncio.sleep(pause)
                continue
            # A busy round goes again at once; a quiet one waits for the next poll.
            await asyncio.sleep(0 if published or dispatched else self._interval)
