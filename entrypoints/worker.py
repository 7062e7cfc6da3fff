"""The job worker: job functions (job ↔ use case), and the processes that run them.

`pictor worker` runs a worker process; `pictor serve` runs one inside the API process when the
queue is embedded or in memory (`embedded_worker_lifespan`). Both serve the same job functions.
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import svcs
from litestar import Litestar

from adapters.queue.conventions import CronJob
from adapters.queue.factory import JobWorker, job_worker_for
from core.jobs import MAINTENANCE, QUEUES
from core.ports import Clock, Database, JobContext, JobHandler, JobQueue
from core.use_cases.publish_outbox import publish_outbox
from entrypoints.correlation import correlation_id_var
from entrypoints.event_handlers import EVENT_HANDLERS
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import Settings
from entrypoints.wiring import service_registry

log = logging.getLogger("pictor.worker")

OUTBOX_BATCH = 100
OUTBOX_MAX_BATCHES_PER_RUN = 50  # bounded, so one run never outlives its job timeout

# Periodic maintenance; the cron key makes one run per tick across all workers.
MAINTENANCE_JOBS: tuple[CronJob, ...] = (
    CronJob(function="publish_outbox", cron="* * * * *", queue=MAINTENANCE, timeout_seconds=55),
)


def job_handlers(registry: svcs.Registry) -> dict[str, JobHandler]:
    """Job functions by name. Each opens a container, fetches its ports and calls a use case."""

    def with_services(run: Callable[..., Any]) -> JobHandler:
        async def handler(ctx: JobContext, **kwargs: Any) -> Any:
            token = correlation_id_var.set(ctx.correlation_id or f"job:{ctx.key}")
            try:
                async with svcs.Container(registry) as container:
                    return await run(container, ctx, **kwargs)
            finally:
                correlation_id_var.reset(token)

        handler.__name__ = run.__name__
        return handler

    async def publish_outbox_job(container: svcs.Container, ctx: JobContext) -> dict[str, int]:
        database, clock = await container.aget(Database, Clock)
        published = 0
        for _ in range(OUTBOX_MAX_BATCHES_PER_RUN):
            count = await publish_outbox(database, clock, EVENT_HANDLERS, batch_size=OUTBOX_BATCH)
            published += count
            await ctx.heartbeat()
            if count < OUTBOX_BATCH:
                break
        return {"published": published}

    return {"publish_outbox": with_services(publish_outbox_job)}


async def start_worker(
    registry: svcs.Registry, settings: Settings, queues: Sequence[str] | None = None
) -> JobWorker:
    served = list(queues or QUEUES)
    unknown = sorted(set(served) - set(QUEUES))
    if unknown:
        raise ValueError(f"unknown queue(s): {', '.join(unknown)}; known: {', '.join(QUEUES)}")
    async with svcs.Container(registry) as container:
        job_queue: Any = await container.aget(JobQueue)
    worker = job_worker_for(
        job_queue,
        queues=served,
        handlers=job_handlers(registry),
        concurrency=settings.worker_concurrency,
        cron_jobs=[job for job in MAINTENANCE_JOBS if job.queue in served],
        shutdown_grace_seconds=settings.job_shutdown_grace_seconds,
    )
    await worker.start()
    log.info("worker started", extra={"queues": served, "concurrency": settings.worker_concurrency})
    return worker


async def run_worker(settings: Settings, *, queues: Sequence[str] | None = None) -> None:
    """`pictor worker`: serve jobs until SIGTERM or SIGINT, then stop gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with service_registry(settings) as registry:
        worker = await start_worker(registry, settings, queues)
        try:
            await stop.wait()
            log.info("worker stopping: finishing running jobs")
        finally:
            await worker.stop()
    log.info("worker stopped")


def embedded_worker_lifespan(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """A worker inside the API process, sharing the app's registry (the embedded default)."""

    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        worker = await start_worker(registry_of(app), settings)
        try:
            yield
        finally:
            await worker.stop()

    return lifespan
