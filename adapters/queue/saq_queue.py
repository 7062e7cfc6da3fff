"""The JobQueue port on SAQ, over Valkey/Redis or PostgreSQL.

Each Pictor queue is one SAQ queue named `<name_prefix>:<queue>`, created (and connected) on first
use and shared with the workers of this process (`SaqWorkerPool`). Keys are the Pictor job keys as
they are: on Redis they are scoped per queue; on PostgreSQL SAQ keeps one table whose primary key is
the job key, so a key must not be reused across queues there (Pictor's keys name their subject, e.g.
`generation:<id>`, and a subject has one queue at a time).
"""

from __future__ import annotations

import asyncio
import random as random_module
import time
import uuid
import zlib
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Protocol, Self, cast

from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from saq.job import TERMINAL_STATUSES, Job, Status

from adapters.queue.conventions import (
    ABORTED_ERROR,
    check_spec,
    finished_per_minute,
    throughput_window,
)
from adapters.queue.saq_backends import (
    META_CORRELATION_ID,
    META_RETRY_BACKOFF,
    META_RETRY_BASE,
    PING_TIMEOUT_SECONDS,
    PictorPostgresQueue,
    PictorQueue,
    PictorRedisQueue,
)
from core.jobs import MAINTENANCE, JobInfo, JobSpec, JobState, QueueStats

_STATES = {
    Status.NEW: JobState.QUEUED,
    Status.QUEUED: JobState.QUEUED,
    Status.ACTIVE: JobState.ACTIVE,
    Status.ABORTING: JobState.ABORTED,
    Status.ABORTED: JobState.ABORTED,
    Status.COMPLETE: JobState.COMPLETE,
    Status.FAILED: JobState.FAILED,
}


class SaqBackend(Protocol):
    """A store SAQ queues live in: makes queues, and owns the connections they share."""

    def make_queue(self, name: str) -> PictorQueue: ...

    async def open(self) -> None: ...

    async def ping(self) -> None: ...

    async def close(self) -> None: ...


class RedisBackend:
    """SAQ queues on Valkey/Redis, sharing one redis-py client."""

    def __init__(self, url: str, *, random: Callable[[], float], sweep_abort_wait_seconds: float) -> None:
        self._client: Redis = Redis.from_url(url)
        self._random = random
        self._sweep_abort_wait = sweep_abort_wait_seconds

    def make_queue(self, name: str) -> PictorQueue:
        return PictorRedisQueue(
            self._client, name=name, random=self._random, sweep_abort_wait_seconds=self._sweep_abort_wait
        )

    async def open(self) -> None:
        return None  # redis-py connects on first command

    async def ping(self) -> None:
        await cast(Awaitable[bool], self._client.ping())  # redis-py types it sync-or-async

    async def close(self) -> None:
        await self._client.aclose()


class PostgresBackend:
    """SAQ queues on PostgreSQL, sharing one connection pool (SAQ's tables in the search_path schema).

    Each queue's worker holds one pooled connection to LISTEN while it waits for jobs, so the pool
    needs room for that on top of the work itself.
    """

    def __init__(
        self,
        url: str,
        *,
        random: Callable[[], float],
        sweep_abort_wait_seconds: float,
        lock_keyspace: int,
        min_size: int = 1,
        max_size: int = 20,
    ) -> None:
        self._pool = AsyncConnectionPool(
            url,
            open=False,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},  # SAQ requires it
            check=AsyncConnectionPool.check_connection,
        )
        self._random = random
        self._sweep_abort_wait = sweep_abort_wait_seconds
        self._lock_keyspace = lock_keyspace
        self._opened = False

    def make_queue(self, name: str) -> PictorQueue:
        return PictorPostgresQueue(
            self._pool,
            name=name,
            random=self._random,
            sweep_abort_wait_seconds=self._sweep_abort_wait,
            lock_keyspace=self._lock_keyspace,
        )

    async def open(self) -> None:
        if not self._opened:
            await self._pool.open()
            self._opened = True

    async def ping(self) -> None:
        await self.open()
        # Bounded, and true only once SAQ's tables exist (a fresh database has none until a
        # worker or `pictor migrate` creates them).
        async with self._pool.connection(timeout=PING_TIMEOUT_SECONDS) as conn:
            await conn.execute("SELECT version FROM saq_versions")

    async def close(self) -> None:
        if self._opened:
            await self._pool.close()
            self._opened = False


def lock_keyspace_for(name_prefix: str) -> int:
    """SAQ's advisory-lock keyspace on PostgreSQL, one per name prefix (so tests never share locks)."""
    return zlib.crc32(name_prefix.encode()) & 0x7FFFFFFF


class SaqJobQueue:
    """JobQueue on SAQ. Build with `for_redis` / `for_postgres` (or `adapters.queue.factory`).

    `random` draws the jitter of retry delays; `result_ttl_seconds` is how long a finished job's
    state and result stay readable; `sweep_abort_wait_seconds` is how long a sweep waits for a live
    worker to give up a job it takes away before re-queueing it.
    """

    def __init__(
        self, backend: SaqBackend, *, name_prefix: str = "pictor", result_ttl_seconds: int = 600
    ) -> None:
        self._backend = backend
        self._prefix = name_prefix.rstrip(":")
        self._ttl = result_ttl_seconds
        self._queues: dict[str, PictorQueue] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def for_redis(
        cls,
        url: str,
        *,
        name_prefix: str = "pictor",
        result_ttl_seconds: int = 600,
        sweep_abort_wait_seconds: float = 5.0,
        random: Callable[[], float] = random_module.random,
    ) -> SaqJobQueue:
        backend = RedisBackend(url, random=random, sweep_abort_wait_seconds=sweep_abort_wait_seconds)
        return cls(backend, name_prefix=name_prefix, result_ttl_seconds=result_ttl_seconds)

    @classmethod
    def for_postgres(
        cls,
        url: str,
        *,
        name_prefix: str = "pictor",
        result_ttl_seconds: int = 600,
        sweep_abort_wait_seconds: float = 5.0,
        random: Callable[[], float] = random_module.random,
        pool_min_size: int = 1,
        pool_max_size: int = 20,
    ) -> SaqJobQueue:
        backend = PostgresBackend(
            url,
            random=random,
            sweep_abort_wait_seconds=sweep_abort_wait_seconds,
            lock_keyspace=lock_keyspace_for(name_prefix),
            min_size=pool_min_size,
            max_size=pool_max_size,
        )
        return cls(backend, name_prefix=name_prefix, result_ttl_seconds=result_ttl_seconds)

    def saq_name(self, queue: str) -> str:
        """The SAQ queue name behind a Pictor queue."""
        return f"{self._prefix}:{queue}" if self._prefix else queue

    async def prepare(self) -> None:
        """Create the back end's own schema now (SAQ's tables on PostgreSQL), not on first use."""
        await self.saq_queue(MAINTENANCE)

    async def saq_queue(self, queue: str) -> PictorQueue:
        """The connected SAQ queue behind Pictor queue `queue`; workers serve this same object."""
        found = self._queues.get(queue)
        if found is not None:
            return found
        if not queue:
            raise ValueError("a queue needs a name")
        async with self._lock:
            found = self._queues.get(queue)
            if found is None:
                await self._backend.open()
                found = self._backend.make_queue(self.saq_name(queue))
                await found.connect()
                self._queues[queue] = found
        return found

    async def enqueue(self, spec: JobSpec) -> JobInfo | None:
        check_spec(spec)
        saq_queue = await self.saq_queue(spec.queue)
        job = self._job_for(spec)
        enqueued = await saq_queue.enqueue(job)
        if enqueued is None and await saq_queue.replace_finished(job.key):
            enqueued = await saq_queue.enqueue(job)
        return None if enqueued is None else _info(spec.queue, enqueued)

    async def status(self, queue: str, key: str) -> JobInfo | None:
        job = await (await self.saq_queue(queue)).job(key)
        if job is None or _expired(job):
            return None
        return _info(queue, job)

    async def abort(self, queue: str, key: str) -> bool:
        saq_queue = await self.saq_queue(queue)
        job = await saq_queue.job(key)
        if job is None or job.status in TERMINAL_STATUSES or job.status is Status.ABORTING:
            return False
        await saq_queue.abort(job, ABORTED_ERROR)
        return True

    async def stats(self, queue: str) -> QueueStats:
        counts = await (await self.saq_queue(queue)).pictor_stats()
        oldest = counts.oldest_ready_since
        return QueueStats(
            queue=queue,
            queued=counts.queued,
            active=counts.active,
            complete=counts.complete,
            failed=counts.failed,
            aborted=counts.aborted,
            oldest_queued_age_seconds=None if oldest is None else max(0.0, time.time() - oldest),
        )

    async def retry(self, queue: str, key: str) -> JobInfo | None:
        saq_queue = await self.saq_queue(queue)
        job = await saq_queue.job(key)
        if job is None or _expired(job) or job.status not in _RETRYABLE:
            return None
        fresh = _again(job)
        enqueued = await saq_queue.enqueue(fresh)
        if enqueued is None and await saq_queue.replace_finished(key):
            enqueued = await saq_queue.enqueue(fresh)
        return None if enqueued is None else _info(queue, enqueued)

    async def failed_jobs(self, queue: str, limit: int) -> list[JobInfo]:
        jobs = await (await self.saq_queue(queue)).pictor_failed(limit)
        return [_info(queue, job) for job in jobs if not _expired(job)]

    async def finished_per_minute(self, queue: str, window_seconds: float) -> float:
        now = time.time()
        buckets = throughput_window(now, window_seconds)
        counts = await (await self.saq_queue(queue)).pictor_finished_counts(buckets)
        return finished_per_minute(counts, now=now, window_seconds=window_seconds)

    async def ping(self) -> None:
        await self._backend.ping()

    async def close(self) -> None:
        """Disconnect every queue and release the store's connections."""
        async with self._lock:
            queues = list(self._queues.values())
            self._queues.clear()
            for saq_queue in queues:
                await saq_queue.disconnect()
            await self._backend.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    def _job_for(self, spec: JobSpec) -> Job:
        meta: dict[str, Any] = {
            META_RETRY_BASE: spec.retry_delay_seconds,
            META_RETRY_BACKOFF: spec.retry_backoff,
        }
        if spec.correlation_id is not None:
            meta[META_CORRELATION_ID] = spec.correlation_id
        # SAQ types these as ints but handles floats (JSON in the store), which sub-second tests need.
        fields: dict[str, Any] = {
            "function": spec.function,
            "kwargs": dict(spec.kwargs),
            "key": spec.key or str(uuid.uuid4()),
            "timeout": spec.timeout_seconds,
            "heartbeat": spec.heartbeat_seconds,
            "retries": spec.attempts,
            "ttl": self._ttl,
            "retry_delay": spec.retry_delay_seconds,
            "retry_backoff": spec.retry_backoff,
            # 0 (an int) means "now" to SAQ's Redis enqueue script; anything else is a due time.
            "scheduled": time.time() + spec.delay_seconds if spec.delay_seconds > 0 else 0,
            "meta": meta,
        }
        return Job(**fields)


_RETRYABLE = frozenset({Status.FAILED, Status.ABORTED})


def _again(job: Job) -> Job:
    """A fresh run of a finished job: same function, payload and settings, every attempt left."""
    meta = dict(job.meta)
    return Job(
        function=job.function,
        kwargs=dict(job.kwargs or {}),
        key=job.key,
        timeout=job.timeout,
        heartbeat=job.heartbeat,
        retries=job.retries,
        ttl=job.ttl,
        # A failed try fixed its planned delay in the job; the base and back-off are in meta.
        retry_delay=float(meta.get(META_RETRY_BASE, job.retry_delay)),
        retry_backoff=bool(meta.get(META_RETRY_BACKOFF, job.retry_backoff)),
        scheduled=0,
        meta=meta,
    )


def _expired(job: Job) -> bool:
    """A finished job past its TTL that the store has not deleted yet (PostgreSQL sweeps lazily)."""
    return (
        job.status in TERMINAL_STATUSES
        and job.ttl > 0
        and job.completed > 0
        and time.time() * 1000 > job.completed + job.ttl * 1000
    )


def _ms(value: float) -> datetime | None:
    return datetime.fromtimestamp(value / 1000, tz=UTC) if value else None


def _info(queue: str, job: Job) -> JobInfo:
    return JobInfo(
        queue=queue,
        key=job.key,
        function=job.function,
        state=_STATES[job.status],
        attempts=job.attempts,
        progress=float(job.progress),
        error=job.error,
        result=job.result,
        enqueued_at=_ms(job.queued),
        scheduled_at=datetime.fromtimestamp(job.scheduled, tz=UTC) if job.scheduled else None,
        started_at=_ms(job.started),
        finished_at=_ms(job.completed),
    )
