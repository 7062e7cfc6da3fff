"""Pick the JobQueue adapter (and the worker that serves it) from a URL."""

from __future__ import annotations

import random as random_module
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol
from urllib.parse import urlsplit, urlunsplit

from adapters.memory.job_queue import MemoryJobQueue, MemoryWorker
from adapters.queue.conventions import CronJob
from adapters.queue.saq_queue import SaqJobQueue
from adapters.queue.saq_worker import SaqWorkerPool
from core.ports import JobHandler

_REDIS_SCHEMES = {"redis": "redis", "rediss": "rediss", "valkey": "redis", "valkeys": "rediss"}
_POSTGRES_SCHEMES = {"postgresql", "postgres"}


class JobWorker(Protocol):
    """What an entrypoint does with a queue's workers."""

    async def start(self) -> None: ...

    async def stop(self) -> None:
        """Stop taking jobs; let running ones finish within the grace period; hand back the rest."""
        ...


def job_queue_from_url(
    url: str,
    *,
    name_prefix: str = "pictor",
    result_ttl_seconds: int = 600,
    sweep_abort_wait_seconds: float = 5.0,
    random: Callable[[], float] = random_module.random,
) -> SaqJobQueue | MemoryJobQueue:
    """A JobQueue for `redis://`, `rediss://`, `valkey://`, `valkeys://` (SAQ on Valkey/Redis),
    `postgresql://` / `postgres://` (SAQ's PostgreSQL queue) or `memory://` (this process only).

    Call `close()` on it at shutdown.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme in _REDIS_SCHEMES:
        return SaqJobQueue.for_redis(
            urlunsplit(parts._replace(scheme=_REDIS_SCHEMES[scheme])),
            name_prefix=name_prefix,
            result_ttl_seconds=result_ttl_seconds,
            sweep_abort_wait_seconds=sweep_abort_wait_seconds,
            random=random,
        )
    if scheme in _POSTGRES_SCHEMES:
        return SaqJobQueue.for_postgres(
            url,
            name_prefix=name_prefix,
            result_ttl_seconds=result_ttl_seconds,
            sweep_abort_wait_seconds=sweep_abort_wait_seconds,
            random=random,
        )
    if scheme == "memory":
        return MemoryJobQueue(result_ttl_seconds=result_ttl_seconds, random=random)
    raise ValueError(f"unsupported queue URL scheme {parts.scheme!r} (redis, valkey, postgresql or memory)")


def job_worker_for(
    job_queue: SaqJobQueue | MemoryJobQueue,
    *,
    queues: Sequence[str],
    handlers: Mapping[str, JobHandler],
    concurrency: int = 10,
    cron_jobs: Sequence[CronJob] = (),
    shutdown_grace_seconds: float = 10.0,
    sweep_interval_seconds: float = 60.0,
) -> JobWorker:
    """The worker that runs `job_queue`'s jobs in this process's event loop."""
    if isinstance(job_queue, MemoryJobQueue):
        return MemoryWorker(
            job_queue,
            queues=queues,
            handlers=handlers,
            concurrency=concurrency,
            cron_jobs=cron_jobs,
            shutdown_grace_seconds=shutdown_grace_seconds,
            sweep_interval_seconds=sweep_interval_seconds,
        )
    return SaqWorkerPool(
        job_queue,
        queues=queues,
        handlers=handlers,
        concurrency=concurrency,
        cron_jobs=cron_jobs,
        shutdown_grace_seconds=shutdown_grace_seconds,
        sweep_interval_seconds=sweep_interval_seconds,
    )
