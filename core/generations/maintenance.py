"""Maintenance of generations (maintenance crons): no accepted generation is lost, and images are
kept only for their plan's retention.

The reconciler exists because the queue is only transport: a job can vanish (a flushed queue, a
job that ran out of tries while its worker kept dying, an enqueue that failed after the generation
was stored). A generation still queued or running that has not moved for `STUCK_AFTER` and has no
live job gets its render job enqueued again; the job is idempotent, so a false alarm costs nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Final

from core.errors import DomainError
from core.generations.generation import expire_images
from core.generations.service import RENDER_HEARTBEAT_SECONDS, render_job_spec, render_queue
from core.ports import BlobStore, Clock, Database, JobQueue

log = logging.getLogger("pictor.generations")

STUCK_AFTER: Final = timedelta(minutes=2)
BATCH: Final = 100
MAX_BATCHES: Final = 50  # one run's bound; the next run goes on


class GenerationMaintenance:
    def __init__(
        self,
        *,
        database: Database,
        jobs: JobQueue,
        blobs: BlobStore,
        clock: Clock,
        steps: int,
        heartbeat_seconds: float = RENDER_HEARTBEAT_SECONDS,
    ) -> None:
        self._heartbeat_seconds = heartbeat_seconds
        self._database = database
        self._jobs = jobs
        self._blobs = blobs
        self._clock = clock
        self._steps = steps

    async def reconcile(self, *, limit: int = 500) -> int:
        """Enqueue again the render of stuck generations whose job is gone; returns how many."""
        async with self._database.unit_of_work() as uow:
            stuck = await uow.generations.list_stuck(self._clock.now(), STUCK_AFTER, limit)
        enqueued = 0
        for generation in stuck:
            job = await self._jobs.status(render_queue(generation), generation.id)
            if job is not None and not job.state.is_finished:
                continue  # waiting its turn or running: not lost
            spec = render_job_spec(generation, steps=self._steps, heartbeat_seconds=self._heartbeat_seconds)
            if await self._jobs.enqueue(spec) is not None:
                enqueued += 1
                log.warning(
                    "re-enqueued a stuck generation",
                    extra={"generation_id": generation.id, "status": generation.status.value},
                )
        return enqueued

    async def expire_images(self, *, between_batches: Callable[[], Awaitable[None]] | None = None) -> int:
        """Delete the images of generations past their retention and mark them expired; returns
        how many generations. Blobs go first: a crash between leaves the generation listed, and
        deleting a missing blob again is harmless."""
        expired = 0
        for _ in range(MAX_BATCHES):
            async with self._database.unit_of_work() as uow:
                due = await uow.generations.list_expired_images(self._clock.now(), BATCH)
            for generation in due:
                for image in generation.images:
                    await self._blobs.delete(image.blob_key)
                async with self._database.unit_of_work() as uow:
                    current = await uow.generations.get_for_update(generation.id)
                    if current is None:
                        continue
                    try:
                        await uow.generations.update(expire_images(current, self._clock.now()))
                    except DomainError:
                        continue  # expired meanwhile by another run
                    await uow.commit()
                expired += 1
            if len(due) < BATCH:
                break
            if between_batches is not None:
                await between_batches()
        return expired
