"""SAQ's Redis and PostgreSQL queues with Pictor's rules layered on.

What the subclasses change, and why:
- Retries use `core.jobs.retry_delay` (exponential back-off with *equal* jitter, so each wait is at
  least as long as the one before); SAQ's own back-off draws the whole delay at random. The planned
  delay is written into the job as a fixed `retry_delay`, and the job's `scheduled` time says when
  the retry is due.
- A sweep that takes a job from a silent worker after its last try marks it failed (out of
  attempts), like a job whose last try timed out, where SAQ would say aborted.
- Redis: a worker takes a job in two steps (BLMOVE onto the active list, then it marks the job
  active), and SAQ's sweep takes any job on the active list not marked active for one whose worker
  died: a sweep between the two steps re-queued a job its live worker was about to run (it then ran
  twice, or looked aborted for a moment). Here the marking is a compare-and-set that fails if
  anything touched the job since the worker took it, and the sweep hands such a job back to the
  head of the queue with a compare-and-set of its own, so exactly one of them wins and the job
  never looks finished. Scheduling and sweeping take their cluster-wide locks in milliseconds, so
  sub-second intervals work (SAQ's SETEX needs whole seconds); an abort of a delayed job finishes
  it (SAQ leaves it "aborting" for ever); finished jobs are indexed per state for `stats`.
- PostgreSQL: the `scheduled` column holds whole seconds, so due times are rounded *up* (a delayed
  job never runs early); a finished job's key can be enqueued again at once (SAQ refuses until the
  new due time is later than the old one).
- Both: every finished job is counted in a per-queue bucket of THROUGHPUT_BUCKET_SECONDS in the
  store itself, so throughput is the same figure whichever process asks, however many workers
  finish jobs: on Redis in the transaction that records the finish; on PostgreSQL in a
  `pictor_queue_throughput` table, each process adding up its counts for a second and writing them
  in one statement (a statement per job cost about 15 % of the queue's no-op job rate).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from textwrap import dedent
from typing import Any, Protocol, cast

from psycopg.errors import UndefinedTable
from psycopg.sql import SQL, Identifier
from psycopg_pool import AsyncConnectionPool
from redis.asyncio import Redis
from saq.job import TERMINAL_STATUSES, Job, Status
from saq.queue.postgres import PostgresQueue
from saq.queue.postgres_migrations import get_migrations
from saq.queue.redis import RedisQueue
from saq.utils import now

from adapters.queue.conventions import (
    SWEPT_ERROR,
    THROUGHPUT_BUCKET_SECONDS,
    THROUGHPUT_RETENTION_SECONDS,
    throughput_bucket,
)
from core.jobs import retry_delay

logger = logging.getLogger("pictor.queue")

SCHEMA_WAIT_SECONDS = 30.0
PING_TIMEOUT_SECONDS = 2.0

META_CORRELATION_ID = "correlation_id"
META_RETRY_BASE = "retry_base_seconds"
META_RETRY_BACKOFF = "retry_backoff"

CLAIMABLE_STATUSES = frozenset({Status.NEW, Status.QUEUED})
"""The states of a job waiting to run, which a worker may claim."""

THROUGHPUT_TABLE = Identifier("pictor_queue_throughput")
THROUGHPUT_FLUSH_SECONDS = 1.0  # how long a PostgreSQL queue adds up finished jobs before writing them
_THROUGHPUT_LOCK = 1  # second key of the advisory lock that serializes creating that table


@dataclass(frozen=True, slots=True)
class BackendStats:
    """Counts straight from the store; `oldest_ready_since` is an epoch time in seconds."""

    queued: int
    active: int
    complete: int
    failed: int
    aborted: int
    oldest_ready_since: float | None


class PictorQueue(Protocol):
    """What SaqJobQueue needs of a SAQ queue beyond `saq.Queue` itself."""

    name: str

    async def connect(self) -> None: ...

    async def disconnect(self) -> None: ...

    async def enqueue(self, job_or_func: str | Job, **kwargs: Any) -> Job | None: ...

    async def job(self, job_key: str) -> Job | None: ...

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None: ...

    async def replace_finished(self, key: str) -> bool:
        """Forget a finished job with this key so the key can be enqueued again."""
        ...

    async def pictor_stats(self) -> BackendStats: ...

    async def pictor_failed(self, limit: int) -> list[Job]:
        """Failed jobs still on record, most recently finished first."""
        ...

    async def pictor_finished_counts(self, buckets: range) -> dict[int, int]:
        """Finished jobs counted per throughput bucket, for `buckets`."""
        ...


def plan_retry(job: Job, jitter: float) -> float:
    """Set the job up for its next try: our back-off delay, fixed, so SAQ applies it as it is."""
    base = float(job.meta.setdefault(META_RETRY_BASE, job.retry_delay))
    backoff = bool(job.meta.setdefault(META_RETRY_BACKOFF, job.retry_backoff is not False))
    delay = retry_delay(max(job.attempts, 1), base_seconds=base, backoff=backoff, jitter=jitter)
    job.retry_delay = delay
    job.retry_backoff = False
    return delay


def settled_status(job: Job, status: Status, error: str | None, swept_error: str) -> Status:
    """A sweep's "aborted" for a job with no tries left is, for Pictor, a failure."""
    if status is Status.ABORTED and error == swept_error and not job.retryable:
        return Status.FAILED
    return status


class PictorRedisQueue(RedisQueue):
    """SAQ's Redis queue with Pictor's retry, scheduling and statistics rules."""

    _SCHEDULE = dedent(
        """
        if redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) then
            local jobs = redis.call('ZRANGEBYSCORE', KEYS[2], 1, ARGV[2])
            for _, v in ipairs(jobs) do
                redis.call('ZADD', KEYS[2], 0, v)
                redis.call('RPUSH', KEYS[3], v)
            end
            return jobs
        end
        return {}
        """
    )

    # The lock as in _SCHEDULE; then every job on the active list, with its stored state.
    _SWEEP = dedent(
        """
        local found = {}
        if redis.call('SET', KEYS[1], 1, 'NX', 'PX', ARGV[1]) then
            for i, job_id in ipairs(redis.call('LRANGE', KEYS[2], 0, -1)) do
                found[i] = {job_id, redis.call('GET', job_id)}
            end
        end
        return found
        """
    )

    # A worker's claim on a job it moved to the active list: granted only if the job is still
    # there and still as the worker read it (no sweep handed it back, no abort stopped it).
    _CLAIM = dedent(
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('LPOS', KEYS[2], KEYS[1]) then
            redis.call('SET', KEYS[1], ARGV[2])
            redis.call('PUBLISH', KEYS[1], ARGV[3])
            return 1
        end
        return 0
        """
    )

    # A sweep's hand-back of a job taken but never claimed: only if no worker claimed it since.
    _HAND_BACK = dedent(
        """
        if redis.call('GET', KEYS[1]) == ARGV[1] and redis.call('LREM', KEYS[2], 1, KEYS[1]) == 1 then
            redis.call('LPUSH', KEYS[3], KEYS[1])
            return 1
        end
        return 0
        """
    )

    def __init__(
        self,
        redis: Redis,
        *,
        name: str,
        random: Callable[[], float],
        sweep_abort_wait_seconds: float,
    ) -> None:
        super().__init__(redis, name=name, swept_error_message=SWEPT_ERROR)
        self._random = random
        self._sweep_abort_wait = sweep_abort_wait_seconds
        self._finished_sets = {
            status: self.namespace(f"finished:{status.value}") for status in TERMINAL_STATUSES
        }
        self._pictor_schedule = redis.register_script(self._SCHEDULE)
        self._pictor_sweep = redis.register_script(self._SWEEP)
        self._claim = redis.register_script(self._CLAIM)
        self._hand_back = redis.register_script(self._HAND_BACK)

    async def schedule(self, lock: int = 1) -> list[str]:
        lock_ms = max(1, int(lock * 1000))
        job_ids = await self._pictor_schedule(
            keys=[self._schedule, self._incomplete, self._queued], args=[lock_ms, time.time()]
        )
        return [job_id.decode() for job_id in job_ids or []]

    async def dequeue(self, timeout: float = 0.0, poll_interval: float = 0.0) -> Job | None:
        """Take the next job and mark it active in one step, as SAQ's PostgreSQL queue does.

        None when none came within `timeout`, or when a sweep or an abort got to the job first:
        then it is theirs, and the worker just asks again. Needs Redis 6.2 or Valkey (BLMOVE).
        """
        wait = cast(int, timeout)  # Redis takes fractional seconds; redis-py types it as an int
        job_id = await self.redis.blmove(self._queued, self._active, wait, "LEFT", "RIGHT")
        if job_id is None:
            return None
        taken = await self.redis.get(job_id)
        job = self.deserialize(taken)
        if job is None or job.status not in CLAIMABLE_STATUSES:
            # Gone (the sweep clears its id away) or being aborted (the abort removes it).
            return None
        job.status = Status.ACTIVE
        job.started = job.touched = now()  # the sweep's timeout and heartbeat clocks start here
        claimed = await self._claim(
            keys=[job_id, self._active], args=[taken, self.serialize(job), Status.ACTIVE.value]
        )
        if not claimed:
            logger.info("job %s was handed back or aborted before it started", job.key)
            return None
        return job

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        """SAQ's sweep, except for jobs a worker has taken but not yet claimed (see `dequeue`).

        Such a job never started, whether its worker is about to claim it or died first: it goes
        back to the head of the queue, with no try counted and no error, unless the claim wins.
        """
        lock_ms = max(1, int(lock * 1000))
        found = await self._pictor_sweep(keys=[self._sweep, self._active], args=[lock_ms])
        swept: list[str] = []
        for raw_id, stored in found or []:
            job_id = raw_id.decode()
            job = self.deserialize(stored)
            if job is None:
                swept.append(job_id)
                async with self.redis.pipeline(transaction=True) as pipe:
                    pipe.lrem(self._active, 0, job_id)
                    pipe.zrem(self._incomplete, job_id)
                    await pipe.execute()
                logger.info("swept missing job %s", job_id)
            elif job.status in CLAIMABLE_STATUSES:
                if await self._hand_back(keys=[job_id, self._active, self._queued], args=[stored]):
                    swept.append(job_id)
                    logger.info("handed back job %s, taken by a worker that never started it", job.key)
            elif job.status is not Status.ACTIVE or job.stuck:
                swept.append(job_id)
                await self._take_from_silent_worker(job)
        return swept

    async def _take_from_silent_worker(self, job: Job) -> None:
        """SAQ's treatment of a stuck job: abort it, give its worker a moment, then retry or fail."""
        logger.info("sweeping job %s", job.key)
        await self.abort(job, error=self.swept_error_message)
        try:
            await job.refresh(self._sweep_abort_wait)
        except TimeoutError:
            logger.info("the worker holding job %s did not give it up", job.key)
        if job.retryable:
            await self.retry(job, error=self.swept_error_message)
        else:
            await self.finish(job, Status.ABORTED, error=self.swept_error_message)

    async def retry(self, job: Job, error: str | None) -> None:
        delay = plan_retry(job, self._random())
        # The schedule script pushes every job whose score is >= 1 onto the ready list, so an
        # immediate retry (pushed by SAQ at once) must carry scheduled = 0 or it would run twice.
        job.scheduled = time.time() + delay if delay > 0 else 0  # type: ignore[assignment]
        await super().retry(job, error)

    async def _retry(self, job: Job, error: str | None) -> None:
        await super()._retry(job, error)
        await self._forget_finished(job.id)

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        status = settled_status(job, status, error, self.swept_error_message)
        await super().finish(job, status, result=result, error=error, **kwargs)

    async def _finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
    ) -> None:
        await super()._finish(job, status, result=result, error=error)
        now = time.time()
        expires = math.inf if job.ttl == 0 else now + job.ttl
        counter = self._throughput_key(throughput_bucket(now))
        async with self.redis.pipeline(transaction=True) as pipe:
            for finished_status, key in self._finished_sets.items():
                pipe.zremrangebyscore(key, "-inf", now)
                if finished_status is status and job.ttl >= 0:
                    pipe.zadd(key, {job.id: expires})
                else:
                    pipe.zrem(key, job.id)
            pipe.incr(counter)
            pipe.expire(counter, THROUGHPUT_RETENTION_SECONDS + THROUGHPUT_BUCKET_SECONDS)
            await pipe.execute()

    async def _enqueue(self, job: Job) -> Job | None:
        enqueued = await super()._enqueue(job)
        if enqueued is not None:
            await self._forget_finished(job.id)
        return enqueued

    async def abort(self, job: Job, error: str, ttl: float = 5) -> None:
        waiting = job.status in (Status.NEW, Status.QUEUED)
        await super().abort(job, error, ttl)
        if waiting and job.status is Status.ABORTING:
            # A delayed job (or one waiting for a retry) sits on no list SAQ's abort looks at, and no
            # worker holds it: nothing else would ever finish the abort.
            await self.finish(job, Status.ABORTED, error=error)
            await self.redis.delete(job.abort_id)

    async def disconnect(self) -> None:
        # The client is shared by every queue and closed by its owner; the pub/sub is this queue's.
        await self._pubsub.close()

    async def replace_finished(self, key: str) -> bool:
        return False  # SAQ on Redis already accepts a finished job's key again

    async def pictor_stats(self) -> BackendStats:
        now = time.time()
        async with self.redis.pipeline(transaction=True) as pipe:
            pipe.zcard(self._incomplete)
            pipe.llen(self._active)
            pipe.lindex(self._queued, 0)
            for key in self._finished_sets.values():
                pipe.zremrangebyscore(key, "-inf", now)
                pipe.zcard(key)
            incomplete, active, head, *finished = await pipe.execute()
        counts = dict(zip(self._finished_sets, finished[1::2], strict=True))
        oldest = None
        if head is not None:
            job = await self._get_job_by_id(head)
            if job is not None:
                oldest = max(job.queued / 1000, float(job.scheduled))
        return BackendStats(
            # The incomplete set holds every unfinished job, running ones included.
            queued=max(0, int(incomplete) - int(active)),
            active=int(active),
            complete=int(counts[Status.COMPLETE]),
            failed=int(counts[Status.FAILED]),
            aborted=int(counts[Status.ABORTED]),
            oldest_ready_since=oldest,
        )

    async def pictor_failed(self, limit: int) -> list[Job]:
        if limit < 1:
            return []
        # Scored by expiry, which is the finish time plus the (shared) result TTL: newest first.
        ids = await self.redis.zrevrangebyscore(
            self._finished_sets[Status.FAILED], "+inf", f"({time.time()}", start=0, num=limit
        )
        if not ids:
            return []
        jobs = [self.deserialize(raw) for raw in await self.redis.mget(ids)]
        return [job for job in jobs if job is not None and job.status is Status.FAILED]

    async def pictor_finished_counts(self, buckets: range) -> dict[int, int]:
        if not buckets:
            return {}
        counts = await self.redis.mget([self._throughput_key(b) for b in buckets])
        return {bucket: int(count) for bucket, count in zip(buckets, counts, strict=True) if count}

    def _throughput_key(self, bucket: int) -> str:
        return self.namespace(f"finished_count:{bucket}")

    async def _forget_finished(self, job_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            for key in self._finished_sets.values():
                pipe.zrem(key, job_id)
            await pipe.execute()


class PictorPostgresQueue(PostgresQueue):
    """SAQ's PostgreSQL queue with Pictor's retry, scheduling and statistics rules.

    Several of these share one connection pool, which their owner opens and closes.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool,
        *,
        name: str,
        random: Callable[[], float],
        sweep_abort_wait_seconds: float,
        lock_keyspace: int,
    ) -> None:
        super().__init__(
            pool=pool,
            name=name,
            swept_error_message=SWEPT_ERROR,
            saq_lock_keyspace=lock_keyspace,
            manage_pool_lifecycle=False,
        )
        self._random = random
        self._sweep_abort_wait = sweep_abort_wait_seconds
        self._unflushed: dict[int, int] = {}  # throughput bucket -> jobs finished here, not yet written
        self._flusher: asyncio.Task[None] | None = None

    async def init_db(self) -> None:
        """Create SAQ's tables, waiting while another process does it.

        SAQ's own `init_db` returns at once when another process holds its schema lock, and then
        carries on before the tables exist (two processes starting on a fresh database).
        """
        deadline = time.monotonic() + SCHEMA_WAIT_SECONDS
        while True:
            await super().init_db()
            if await self.schema_ready():
                await self._create_throughput_table()
                return
            if time.monotonic() > deadline:
                raise TimeoutError("SAQ's tables were not created in time by the process creating them")
            await asyncio.sleep(0.1)

    async def schema_ready(self) -> bool:
        """Whether SAQ's tables exist at the version this SAQ expects."""
        target = get_migrations(jobs_table=self.jobs_table, stats_table=self.stats_table)[-1][0]
        async with self.pool.connection(timeout=PING_TIMEOUT_SECONDS) as conn:
            try:
                cursor = await conn.execute(SQL("SELECT version FROM {}").format(self.versions_table))
            except UndefinedTable:
                return False
            found = await cursor.fetchone()
        return found is not None and found[0] == target

    async def _create_throughput_table(self) -> None:
        """Pictor's own table beside SAQ's, made here (like SAQ's) so any queue database has it."""
        async with self.pool.connection(timeout=PING_TIMEOUT_SECONDS) as conn, conn.transaction():
            # Two CREATE ... IF NOT EXISTS at once can still collide; the lock makes them take turns.
            await conn.execute(
                "SELECT pg_advisory_xact_lock(%s, %s)", (self.saq_lock_keyspace, _THROUGHPUT_LOCK)
            )
            await conn.execute(
                SQL(
                    "CREATE TABLE IF NOT EXISTS {table} (queue TEXT NOT NULL, bucket BIGINT NOT NULL,"
                    " finished BIGINT NOT NULL, PRIMARY KEY (queue, bucket))"
                ).format(table=THROUGHPUT_TABLE)
            )

    async def disconnect(self) -> None:
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)
            self._flusher = None
        await self._flush_counts()  # what this process counted must not be lost with it
        # SAQ leaves its LISTEN task holding a pooled connection; end it so the pool can close.
        listener = self._listener._daemon_task
        await self._listener.close()
        if listener is not None:
            await asyncio.wait([listener])
        await super().disconnect()

    async def sweep(self, lock: int = 60, abort: float = 5.0) -> list[str]:
        swept = await super().sweep(lock, abort=self._sweep_abort_wait)
        async with self.pool.connection() as conn:
            await conn.execute(
                SQL("DELETE FROM {table} WHERE queue = %s AND bucket < %s").format(table=THROUGHPUT_TABLE),
                (self.name, throughput_bucket(time.time() - THROUGHPUT_RETENTION_SECONDS)),
            )
        return swept

    async def retry(self, job: Job, error: str | None) -> None:
        plan_retry(job, self._random())
        await super().retry(job, error)

    async def _retry(self, job: Job, error: str | None) -> None:
        delay = job.retry_delay
        # Whole seconds in the column: round up, so a retry never comes early.
        scheduled = math.ceil(time.time() + delay) if delay > 0 else int(time.time())
        await self.update(job, status=Status.QUEUED, scheduled=scheduled, expire_at=None)

    async def _enqueue(self, job: Job) -> Job | None:
        if job.scheduled:
            job.scheduled = math.ceil(job.scheduled)
        return await super()._enqueue(job)

    async def finish(
        self,
        job: Job,
        status: Status,
        *,
        result: Any = None,
        error: str | None = None,
        **kwargs: Any,
    ) -> None:
        status = settled_status(job, status, error, self.swept_error_message)
        await super().finish(job, status, result=result, error=error, **kwargs)
        self._count_finished()

    def _count_finished(self) -> None:
        """Add a finished job to this process's counts; they are written within a second."""
        bucket = throughput_bucket(time.time())
        self._unflushed[bucket] = self._unflushed.get(bucket, 0) + 1
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush_soon(), name=f"throughput:{self.name}")

    async def _flush_soon(self) -> None:
        await asyncio.sleep(THROUGHPUT_FLUSH_SECONDS)
        await self._flush_counts()

    async def _flush_counts(self) -> None:
        counts, self._unflushed = self._unflushed, {}
        if not counts:
            return
        try:
            async with self.pool.connection() as conn:
                await conn.execute(
                    SQL(
                        "INSERT INTO {table} AS counted (queue, bucket, finished)"
                        " SELECT %s, bucket, finished FROM unnest(%s::bigint[], %s::bigint[])"
                        " AS counts (bucket, finished)"
                        " ON CONFLICT (queue, bucket)"
                        " DO UPDATE SET finished = counted.finished + EXCLUDED.finished"
                    ).format(table=THROUGHPUT_TABLE),
                    (self.name, list(counts), list(counts.values())),
                )
        except Exception:  # a throughput figure must never fail a job's bookkeeping: try again later
            logger.warning("could not write the finished-job counts of %s", self.name, exc_info=True)
            for bucket, finished in counts.items():
                self._unflushed[bucket] = self._unflushed.get(bucket, 0) + finished

    async def pictor_failed(self, limit: int) -> list[Job]:
        if limit < 1:
            return []
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                SQL(
                    "SELECT job, status FROM {jobs} WHERE status = 'failed' AND queue = %(queue)s"
                    " AND (expire_at IS NULL OR expire_at > %(now)s)"
                    " ORDER BY expire_at DESC NULLS FIRST, lock_key DESC LIMIT %(limit)s"
                ).format(jobs=self.jobs_table),
                {"queue": self.name, "now": time.time(), "limit": limit},
            )
            rows = await cursor.fetchall()
        jobs = [self.deserialize(job, status) for job, status in rows]
        return [job for job in jobs if job is not None]

    async def pictor_finished_counts(self, buckets: range) -> dict[int, int]:
        if not buckets:
            return {}
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                SQL(
                    "SELECT bucket, finished FROM {table} WHERE queue = %s AND bucket BETWEEN %s AND %s"
                ).format(table=THROUGHPUT_TABLE),
                (self.name, buckets.start, buckets.stop - 1),
            )
            return {int(bucket): int(finished) for bucket, finished in await cursor.fetchall()}

    async def replace_finished(self, key: str) -> bool:
        async with self.pool.connection() as conn:
            cursor = await conn.execute(
                SQL(
                    "DELETE FROM {jobs} WHERE key = %(key)s AND queue = %(queue)s"
                    " AND status IN ('aborted', 'complete', 'failed')"
                ).format(jobs=self.jobs_table),
                {"key": key, "queue": self.name},
            )
            return cursor.rowcount > 0

    async def pictor_stats(self) -> BackendStats:
        now = time.time()
        async with self.pool.connection() as conn:
            # One pass over this queue's rows through the (status, queue, …) indexes; finished rows
            # past their expiry wait for the sweep to delete them and are not counted.
            cursor = await conn.execute(
                SQL(
                    dedent(
                        """
                        SELECT status, count(*), min(scheduled) FILTER (WHERE scheduled <= %(now)s)
                        FROM {jobs}
                        WHERE status = ANY(%(statuses)s) AND queue = %(queue)s
                          AND (expire_at IS NULL OR expire_at > %(now)s)
                        GROUP BY status
                        """
                    )
                ).format(jobs=self.jobs_table),
                {
                    "now": now,
                    "queue": self.name,
                    "statuses": ["new", "queued", "active", "aborting", "aborted", "complete", "failed"],
                },
            )
            rows = await cursor.fetchall()
        counts = {status: int(count) for status, count, _ in rows}
        ready = [float(oldest) for status, _, oldest in rows if status in ("new", "queued") and oldest]
        return BackendStats(
            queued=counts.get("new", 0) + counts.get("queued", 0),
            active=counts.get("active", 0),
            complete=counts.get("complete", 0),
            failed=counts.get("failed", 0),
            aborted=counts.get("aborted", 0) + counts.get("aborting", 0),
            oldest_ready_since=min(ready, default=None),
        )
