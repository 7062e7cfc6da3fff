"""Workers for SaqJobQueue: one `saq.Worker` per served queue, in the current event loop."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import Any, cast

from croniter import croniter
from saq.job import CronJob as SaqCronJob
from saq.types import Context, Function, PartialTimersDict
from saq.worker import Worker

from adapters.queue.context import SaqJobContext
from adapters.queue.conventions import CronJob
from adapters.queue.saq_queue import SaqJobQueue
from core.ports import JobHandler

logger = logging.getLogger("pictor.queue")


class _Worker(Worker[Context]):
    """`saq.Worker` that leaves process signals to its host and stops its upkeep promptly.

    SAQ's upkeep loops sleep a whole interval (a minute for the sweep) before they look at the stop
    flag, and stopping cancels whatever is still running then, possibly mid-sweep. These loops wait
    on the stop event instead, so they end between two rounds.
    """

    SIGNALS = []  # noqa: RUF012 - SAQ's class attribute; the entrypoint owns SIGINT/SIGTERM

    async def upkeep(self) -> list[asyncio.Task[None]]:
        async def poll(func: Callable[[Any], Coroutine[Any, Any, Any]], interval: float, arg: float) -> None:
            while not self.event.is_set():
                try:
                    await func(arg)
                except Exception:
                    logger.exception("queue upkeep failed (%s)", getattr(func, "__name__", func))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.event.wait(), interval)

        timers = self.timers
        return [
            asyncio.create_task(poll(self.abort, timers["abort"], timers["abort"])),
            asyncio.create_task(poll(self.schedule, timers["schedule"], timers["schedule"])),
            asyncio.create_task(poll(self.queue.sweep, timers["sweep"], timers["sweep"])),
            asyncio.create_task(poll(self.worker_info, timers["worker_info"], timers["worker_info"] + 1)),
        ]


def saq_function(name: str, handler: JobHandler) -> Function[Context]:
    """The SAQ job function that runs `handler(ctx, **kwargs)` with a JobContext."""

    async def run(ctx: Context, **kwargs: Any) -> Any:
        result = await handler(SaqJobContext(ctx["job"]), **kwargs)
        # SAQ stores results as JSON; a result that is not fails this try here, where it counts as
        # a try, instead of inside SAQ's bookkeeping, where it would leave the job stuck.
        json.dumps(result)
        return result

    run.__qualname__ = name  # SAQ names cron jobs by their function's qualname
    run.__name__ = name
    return run


class SaqWorkerPool:
    """Serves Pictor queues from a SaqJobQueue: one `saq.Worker` per queue, `concurrency` jobs each.

    `stop()` stops taking jobs, lets running ones finish for `shutdown_grace_seconds`, then cancels
    the rest, which SAQ hands back to the queue (re-queued, their try counted) for another worker.
    Idle slots stop within `dequeue_timeout_seconds` (a job they are dequeueing in that moment still
    runs). A stuck job (timeout or heartbeat lapsed, e.g. its worker died) is re-queued by a sweep,
    every `sweep_interval_seconds` (on Valkey one worker sweeps per interval, cluster-wide).
    Intervals may be fractions of a second. Stop the pool before closing the SaqJobQueue.
    """

    def __init__(
        self,
        job_queue: SaqJobQueue,
        *,
        queues: Sequence[str],
        handlers: Mapping[str, JobHandler],
        concurrency: int = 10,
        cron_jobs: Sequence[CronJob] = (),
        shutdown_grace_seconds: float = 10.0,
        cancellation_deadline_seconds: float = 1.0,
        sweep_interval_seconds: float = 60.0,
        schedule_interval_seconds: float = 1.0,
        abort_poll_seconds: float = 1.0,
        dequeue_timeout_seconds: float = 1.0,
        worker_info_interval_seconds: int = 10,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not queues:
            raise ValueError("a worker pool serves at least one queue")
        if dequeue_timeout_seconds <= 0:
            raise ValueError("dequeue_timeout_seconds must be positive, or stopping would hang")
        for cron in cron_jobs:
            if not croniter.is_valid(cron.cron):
                raise ValueError(f"invalid cron expression {cron.cron!r}")
            if cron.function not in handlers:
                raise ValueError(f"cron job {cron.function!r} has no handler")
            if cron.queue not in queues:
                raise ValueError(f"cron job {cron.function!r} runs on {cron.queue!r}, which is not served")
        self._job_queue = job_queue
        self._queues = list(dict.fromkeys(queues))
        self._functions = {name: saq_function(name, handler) for name, handler in handlers.items()}
        self._concurrency = concurrency
        self._cron_jobs = list(cron_jobs)
        self._grace = shutdown_grace_seconds
        self._cancel_deadline = cancellation_deadline_seconds
        self._timers = cast(
            PartialTimersDict,
            {
                "sweep": sweep_interval_seconds,
                "schedule": schedule_interval_seconds,
                "abort": abort_poll_seconds,
                "worker_info": worker_info_interval_seconds,
            },
        )
        self._dequeue_timeout = dequeue_timeout_seconds
        self._workers: list[_Worker] = []
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._tasks)

    async def start(self) -> None:
        """Start the workers; returns once they are taking jobs."""
        if self._tasks:
            raise RuntimeError("the pool is already started")
        for queue in self._queues:
            saq_queue = await self._job_queue.saq_queue(queue)
            worker = _Worker(
                cast(Any, saq_queue),  # a PictorRedisQueue or PictorPostgresQueue, both saq.Queue
                list(self._functions.items()),
                concurrency=self._concurrency,
                cron_jobs=[self._saq_cron(cron) for cron in self._cron_jobs if cron.queue == queue],
                timers=self._timers,
                dequeue_timeout=self._dequeue_timeout,
                shutdown_grace_period_s=cast(int, self._grace),
                cancellation_hard_deadline_s=self._cancel_deadline,
                metadata={"pictor_queue": queue},
            )
            task = asyncio.create_task(worker.start(), name=f"saq-worker:{queue}")
            self._workers.append(worker)
            self._tasks.append(task)
        # Worker.start replaces its stop event before it waits on it: let every worker get there,
        # so a stop() right after start() is not lost.
        while any(
            not worker.tasks and not task.done()
            for worker, task in zip(self._workers, self._tasks, strict=True)
        ):
            await asyncio.sleep(0)

    async def stop(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, hand back the rest."""
        for worker in self._workers:
            worker.event.set()
        results = await asyncio.gather(*self._tasks, return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException) and not isinstance(result, asyncio.CancelledError):
                logger.error("queue worker ended with an error", exc_info=result)
        self._workers.clear()
        self._tasks.clear()

    def _saq_cron(self, cron: CronJob) -> SaqCronJob[Context]:
        return SaqCronJob(
            function=self._functions[cron.function],
            cron=cron.cron,
            unique=True,
            timeout=cast(int, cron.timeout_seconds),
            retries=cron.attempts,
            kwargs=dict(cron.kwargs) or None,
        )
