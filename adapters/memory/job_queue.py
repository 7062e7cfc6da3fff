"""In-memory JobQueue and its worker: SAQ's observable behaviour inside one process.

SAQ has no in-memory queue, so this fake is ours; `tests/contract/test_job_queue_contract.py` holds
it to the same contract as SAQ on Valkey and on PostgreSQL. It keeps SAQ's rules: a key blocks a new
job until its job is finished (an abort counts once the worker has stopped the job); payloads and
results go through JSON; retries wait `core.jobs.retry_delay`; a try that outlives its timeout
fails; a stopping worker hands unfinished jobs back (re-queued even past their attempts, as SAQ
does); a job whose heartbeat (or, without one, timeout) lapses is taken back by the next sweep.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import random as random_module
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from croniter import croniter

from adapters.queue.conventions import (
    ABORTED_ERROR,
    HANDED_BACK_ERROR,
    SWEPT_ERROR,
    THROUGHPUT_RETENTION_SECONDS,
    CronJob,
    check_spec,
    cron_key,
    finished_per_minute,
    json_round_trip,
    throughput_bucket,
    throughput_window,
)
from core.jobs import JobInfo, JobSpec, JobState, QueueStats, retry_delay
from core.ports import JobHandler

logger = logging.getLogger("pictor.queue")

_RETRYABLE = frozenset({JobState.FAILED, JobState.ABORTED})


@dataclass(eq=False)
class _Run:
    """One try of a job by a worker. A record whose `run` is no longer this one was taken away."""

    task: asyncio.Task[Any] | None = None


@dataclass(eq=False)
class _Record:
    queue: str
    key: str
    function: str
    kwargs: dict[str, Any]
    timeout: float
    heartbeat: float
    max_attempts: int
    retry_base: float
    retry_backoff: bool
    correlation_id: str | None
    seq: int
    enqueued_at: float
    due_at: float
    scheduled_at: float | None
    state: JobState = JobState.QUEUED
    attempts: int = 0
    progress: float = 0.0
    error: str | None = None
    result: Any = None
    started_at: float | None = None
    finished_at: float | None = None
    touched_at: float = 0.0
    run: _Run | None = field(default=None)

    @property
    def settled(self) -> bool:
        """Finished, and no worker still holds it (an abort is over once the try has stopped)."""
        return self.state.is_finished and self.run is None


class MemoryJobQueue:
    """JobQueue in process memory. `MemoryWorker`s run its jobs; nothing survives the process.

    `clock` gives epoch seconds (all delays are measured on it), `random` the jitter of retry
    delays, `result_ttl_seconds` how long a finished job stays readable.
    """

    def __init__(
        self,
        *,
        result_ttl_seconds: float = 600.0,
        clock: Callable[[], float] = time.time,
        random: Callable[[], float] = random_module.random,
    ) -> None:
        self._ttl = result_ttl_seconds
        self._clock = clock
        self._random = random
        self._records: dict[tuple[str, str], _Record] = {}
        self._seq = itertools.count()
        self._changed = asyncio.Event()
        self._finished_counts: dict[tuple[str, int], int] = {}  # (queue, bucket) -> finished jobs

    async def enqueue(self, spec: JobSpec) -> JobInfo | None:
        check_spec(spec)
        kwargs = json_round_trip(spec.kwargs)  # raises TypeError like SAQ when it is not JSON
        now = self._clock()
        self._prune(now)
        key = spec.key or str(uuid.uuid4())
        existing = self._records.get((spec.queue, key))
        if existing is not None and not existing.settled:
            return None
        due = now + spec.delay_seconds
        record = _Record(
            queue=spec.queue,
            key=key,
            function=spec.function,
            kwargs=kwargs,
            timeout=spec.timeout_seconds,
            heartbeat=spec.heartbeat_seconds,
            max_attempts=spec.attempts,
            retry_base=spec.retry_delay_seconds,
            retry_backoff=spec.retry_backoff,
            correlation_id=spec.correlation_id,
            seq=next(self._seq),
            enqueued_at=now,
            due_at=due,
            scheduled_at=due if spec.delay_seconds > 0 else None,
        )
        self._records[(spec.queue, key)] = record
        self._wake()
        return _info(record)

    async def status(self, queue: str, key: str) -> JobInfo | None:
        self._prune(self._clock())
        record = self._records.get((queue, key))
        return None if record is None else _info(record)

    async def abort(self, queue: str, key: str) -> bool:
        record = self._records.get((queue, key))
        if record is None or record.state.is_finished:
            return False
        record.state = JobState.ABORTED
        record.error = ABORTED_ERROR
        if record.run is not None and record.run.task is not None:
            # Like SAQ's "aborting": finished (and its key free) once the worker has let go.
            record.run.task.cancel()
        else:
            record.run = None
            record.finished_at = self._clock()
            self._count_finished(record)
        self._wake()
        return True

    async def retry(self, queue: str, key: str) -> JobInfo | None:
        self._prune(self._clock())
        record = self._records.get((queue, key))
        if record is None or not record.settled or record.state not in _RETRYABLE:
            return None
        return await self.enqueue(
            JobSpec(
                queue=queue,
                function=record.function,
                kwargs=record.kwargs,
                key=key,
                timeout_seconds=record.timeout,
                attempts=record.max_attempts,
                retry_delay_seconds=record.retry_base,
                retry_backoff=record.retry_backoff,
                heartbeat_seconds=record.heartbeat,
                correlation_id=record.correlation_id,
            )
        )

    async def failed_jobs(self, queue: str, limit: int) -> list[JobInfo]:
        self._prune(self._clock())
        failed = [r for r in self._records.values() if r.queue == queue and r.state is JobState.FAILED]
        failed.sort(key=lambda r: (r.finished_at or 0.0, r.seq), reverse=True)
        return [_info(record) for record in failed[: max(0, limit)]]

    async def finished_per_minute(self, queue: str, window_seconds: float) -> float:
        now = self._clock()
        buckets = throughput_window(now, window_seconds)
        counts = {b: self._finished_counts.get((queue, b), 0) for b in buckets}
        return finished_per_minute(counts, now=now, window_seconds=window_seconds)

    async def stats(self, queue: str) -> QueueStats:
        now = self._clock()
        self._prune(now)
        records = [record for record in self._records.values() if record.queue == queue]
        counts = dict.fromkeys(JobState, 0)
        for record in records:
            counts[record.state] += 1
        ready = [r.due_at for r in records if r.state is JobState.QUEUED and r.due_at <= now]
        return QueueStats(
            queue=queue,
            queued=counts[JobState.QUEUED],
            active=counts[JobState.ACTIVE],
            complete=counts[JobState.COMPLETE],
            failed=counts[JobState.FAILED],
            aborted=counts[JobState.ABORTED],
            oldest_queued_age_seconds=max(0.0, now - min(ready)) if ready else None,
        )

    async def ping(self) -> None:
        return None

    async def close(self) -> None:
        return None

    # What MemoryWorker and MemoryJobContext use.

    async def take(self, queues: frozenset[str]) -> tuple[_Record, _Run]:
        """Wait for a due job on one of `queues` and start a try of it (oldest due first)."""
        while True:
            now = self._clock()
            waiting = [r for r in self._records.values() if r.queue in queues and r.state is JobState.QUEUED]
            due = [r for r in waiting if r.due_at <= now]
            if due:
                record = min(due, key=lambda r: (r.due_at, r.seq))
                run = _Run()
                record.state = JobState.ACTIVE
                record.attempts += 1
                record.started_at = now
                record.touched_at = now
                record.run = run
                return record, run
            next_due = min((r.due_at for r in waiting), default=None)
            # No await between the look above and clear(): a change cannot slip in unseen.
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), None if next_due is None else next_due - now)

    def touch(self, record: _Record, run: _Run, progress: float | None = None) -> None:
        if self._holds(record, run):
            record.touched_at = self._clock()
            if progress is not None:
                record.progress = progress

    def complete(self, record: _Record, run: _Run, result: Any) -> None:
        if not self._holds(record, run):
            self._let_go(record, run)
            return
        record.state = JobState.COMPLETE
        record.result = result
        record.progress = 1.0
        self._finish(record)

    def fail_try(self, record: _Record, run: _Run, error: str) -> None:
        """A try failed: try again after the back-off while attempts remain, else the job failed."""
        if not self._holds(record, run):
            self._let_go(record, run)
            return
        if record.attempts < record.max_attempts:
            self._requeue(record, error)
            return
        record.state = JobState.FAILED
        record.error = error
        self._finish(record)

    def hand_back(self, record: _Record, run: _Run) -> None:
        """A stopping worker gives an unfinished try back; it is re-queued whatever its attempts."""
        if self._holds(record, run):
            self._requeue(record, HANDED_BACK_ERROR)
        else:
            self._let_go(record, run)

    def ended_cancelled(self, record: _Record, run: _Run) -> None:
        """The handler's task ended cancelled: by an abort or a sweep, else it counts as a failure."""
        if self._holds(record, run):
            self.fail_try(record, run, "CancelledError: the job's task was cancelled")
        else:
            self._let_go(record, run)

    def sweep(self, queues: frozenset[str]) -> list[str]:
        """Take back running jobs whose timeout or heartbeat lapsed; returns their keys."""
        now = self._clock()
        swept = []
        for record in list(self._records.values()):
            if record.queue not in queues or record.state is not JobState.ACTIVE:
                continue
            started = record.started_at if record.started_at is not None else now
            lapsed = (record.timeout > 0 and now - started > record.timeout) or (
                record.heartbeat > 0 and now - record.touched_at > record.heartbeat
            )
            if not lapsed:
                continue
            swept.append(record.key)
            if record.run is not None and record.run.task is not None:
                record.run.task.cancel()  # a live worker's try; a dead one's is gone already
            record.run = None
            if record.attempts < record.max_attempts:
                self._requeue(record, SWEPT_ERROR)
            else:
                record.state = JobState.FAILED
                record.error = SWEPT_ERROR
                record.finished_at = now
                self._count_finished(record)
        return swept

    def _holds(self, record: _Record, run: _Run) -> bool:
        return record.run is run and record.state is JobState.ACTIVE

    def _let_go(self, record: _Record, run: _Run) -> None:
        if record.run is run:
            record.run = None  # an aborted job's try has ended: its key is free again
            if record.finished_at is None:
                record.finished_at = self._clock()
                self._count_finished(record)
            self._wake()

    def _requeue(self, record: _Record, error: str) -> None:
        now = self._clock()
        delay = retry_delay(
            max(record.attempts, 1),
            base_seconds=record.retry_base,
            backoff=record.retry_backoff,
            jitter=self._random(),
        )
        record.state = JobState.QUEUED
        record.error = error
        record.run = None
        record.started_at = None
        record.finished_at = None
        record.progress = 0.0
        record.due_at = now + delay
        record.scheduled_at = record.due_at if delay > 0 else None
        self._wake()

    def _finish(self, record: _Record) -> None:
        record.run = None
        record.finished_at = self._clock()
        self._count_finished(record)
        self._wake()

    def _count_finished(self, record: _Record) -> None:
        """Count a job that just finished, as SAQ's workers count it in the queue's store."""
        assert record.finished_at is not None
        bucket = (record.queue, throughput_bucket(record.finished_at))
        self._finished_counts[bucket] = self._finished_counts.get(bucket, 0) + 1

    def _wake(self) -> None:
        self._changed.set()

    def _prune(self, now: float) -> None:
        expired = [
            key
            for key, record in self._records.items()
            if record.settled and record.finished_at is not None and now - record.finished_at > self._ttl
        ]
        for key in expired:
            del self._records[key]
        oldest = throughput_bucket(now - THROUGHPUT_RETENTION_SECONDS)
        for counted in [c for c in self._finished_counts if c[1] < oldest]:
            del self._finished_counts[counted]


class MemoryJobContext:
    """JobContext for a try run by a MemoryWorker; writes after the job was taken away are dropped."""

    __slots__ = ("_queue", "_record", "_run")

    def __init__(self, queue: MemoryJobQueue, record: _Record, run: _Run) -> None:
        self._queue = queue
        self._record = record
        self._run = run

    @property
    def queue(self) -> str:
        return self._record.queue

    @property
    def key(self) -> str:
        return self._record.key

    @property
    def attempt(self) -> int:
        return self._record.attempts

    @property
    def correlation_id(self) -> str | None:
        return self._record.correlation_id

    async def heartbeat(self) -> None:
        self._queue.touch(self._record, self._run)

    async def progress(self, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("progress is a fraction in [0, 1]")
        self._queue.touch(self._record, self._run, progress=fraction)


class MemoryWorker:
    """Runs a MemoryJobQueue's jobs: `concurrency` at a time from `queues`, like SaqWorkerPool.

    `stop()` stops taking jobs, lets running ones finish for `shutdown_grace_seconds`, then hands
    the rest back. `kill()` is a crash: everything stops and nothing is recorded, so its jobs stay
    active until a sweep (at start, then every `sweep_interval_seconds`) takes them back.
    """

    def __init__(
        self,
        job_queue: MemoryJobQueue,
        *,
        queues: Sequence[str],
        handlers: Mapping[str, JobHandler],
        concurrency: int = 10,
        cron_jobs: Sequence[CronJob] = (),
        shutdown_grace_seconds: float = 10.0,
        cancellation_deadline_seconds: float = 1.0,
        sweep_interval_seconds: float = 60.0,
        schedule_interval_seconds: float = 1.0,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if not queues:
            raise ValueError("a worker serves at least one queue")
        for cron in cron_jobs:
            if not croniter.is_valid(cron.cron):
                raise ValueError(f"invalid cron expression {cron.cron!r}")
            if cron.function not in handlers or cron.queue not in queues:
                raise ValueError(f"cron job {cron.function!r} has no handler on a served queue")
        self._queue = job_queue
        self._queues = frozenset(queues)
        self._handlers = dict(handlers)
        self._concurrency = concurrency
        self._cron_jobs = list(cron_jobs)
        self._grace = shutdown_grace_seconds
        self._cancel_deadline = cancellation_deadline_seconds
        self._sweep_interval = sweep_interval_seconds
        self._schedule_interval = schedule_interval_seconds
        self._slots: list[asyncio.Task[None]] = []
        self._upkeep: list[asyncio.Task[None]] = []
        self._busy: set[asyncio.Task[Any]] = set()
        self._handler_tasks: set[asyncio.Task[Any]] = set()
        self._stopping = False
        self._killed = False

    @property
    def running(self) -> bool:
        return any(not task.done() for task in self._slots)

    async def start(self) -> None:
        if self._slots:
            raise RuntimeError("the worker is already started")
        self._stopping = self._killed = False
        self._queue.sweep(self._queues)
        self._slots = [asyncio.create_task(self._serve()) for _ in range(self._concurrency)]
        self._upkeep = [asyncio.create_task(self._sweep_forever())]
        if self._cron_jobs:
            self._upkeep.append(asyncio.create_task(self._schedule_forever()))

    async def stop(self) -> None:
        """Stop taking jobs, let running ones finish within the grace period, hand back the rest."""
        self._stopping = True
        for task in self._upkeep:
            task.cancel()
        for task in self._slots:
            if task not in self._busy:
                task.cancel()  # idle: waiting in take(), which hands out nothing once cancelled
        busy = [task for task in self._slots if task in self._busy]
        if busy:
            _, late = await asyncio.wait(busy, timeout=self._grace)
            for task in late:
                task.cancel()
        await asyncio.gather(*self._slots, *self._upkeep, return_exceptions=True)
        self._slots, self._upkeep = [], []

    async def kill(self) -> None:
        """Die like a killed process: stop everything at once and record nothing."""
        self._killed = self._stopping = True
        for task in [*self._handler_tasks, *self._slots, *self._upkeep]:
            task.cancel()
        await asyncio.gather(*self._handler_tasks, *self._slots, *self._upkeep, return_exceptions=True)
        self._slots, self._upkeep = [], []

    async def _serve(self) -> None:
        current = asyncio.current_task()
        assert current is not None
        while not self._stopping:
            record, run = await self._queue.take(self._queues)
            self._busy.add(current)
            try:
                await self._run(record, run)
            finally:
                self._busy.discard(current)

    async def _run(self, record: _Record, run: _Run) -> None:
        handler = self._handlers.get(record.function)
        if handler is None:
            self._queue.fail_try(record, run, f"KeyError: no handler for {record.function!r}")
            return
        context = MemoryJobContext(self._queue, record, run)
        task = asyncio.create_task(_call(handler, context, json_round_trip(record.kwargs)))
        run.task = task
        self._handler_tasks.add(task)
        task.add_done_callback(self._handler_tasks.discard)
        try:
            done, _ = await asyncio.wait({task}, timeout=record.timeout or None)
        except asyncio.CancelledError:
            task.cancel()
            if not self._killed:
                await self._settle(task)
                self._queue.hand_back(record, run)
            raise
        if not done:
            task.cancel()
            await self._settle(task)
            timed_out = TimeoutError(f"job timed out after {record.timeout} s")
            self._queue.fail_try(record, run, _error_text(timed_out))
        elif task.cancelled():
            self._queue.ended_cancelled(record, run)
        elif (error := task.exception()) is not None:
            self._queue.fail_try(record, run, _error_text(error))
        else:
            try:
                result = json_round_trip(task.result())
            except (TypeError, ValueError) as unstorable:
                self._queue.fail_try(record, run, _error_text(unstorable))
            else:
                self._queue.complete(record, run, result)

    async def _settle(self, task: asyncio.Task[Any]) -> None:
        """Give a cancelled handler a moment to unwind, as SAQ does, without waiting for ever."""
        await asyncio.wait({task}, timeout=self._cancel_deadline)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self._sweep_interval)
            swept = self._queue.sweep(self._queues)
            if swept:
                logger.info("swept stuck jobs %s", swept)

    async def _schedule_forever(self) -> None:
        while True:
            for cron in self._cron_jobs:
                now = time.time()
                next_run = float(croniter(cron.cron, datetime.fromtimestamp(now, tz=UTC)).get_next(float))
                await self._queue.enqueue(
                    JobSpec(
                        queue=cron.queue,
                        function=cron.function,
                        kwargs=dict(cron.kwargs),
                        key=cron_key(cron.function),
                        delay_seconds=max(0.0, next_run - now),
                        timeout_seconds=cron.timeout_seconds,
                        attempts=cron.attempts,
                        retry_delay_seconds=0.0,
                    )
                )
            await asyncio.sleep(self._schedule_interval)


async def _call(handler: JobHandler, context: MemoryJobContext, kwargs: dict[str, Any]) -> Any:
    return await handler(context, **kwargs)


def _error_text(error: BaseException) -> str:
    return "".join(traceback.format_exception(error))


def _info(record: _Record) -> JobInfo:
    return JobInfo(
        queue=record.queue,
        key=record.key,
        function=record.function,
        state=record.state,
        attempts=record.attempts,
        progress=record.progress,
        error=record.error,
        result=record.result,
        enqueued_at=_time(record.enqueued_at),
        scheduled_at=_time(record.scheduled_at),
        started_at=_time(record.started_at),
        finished_at=_time(record.finished_at),
    )


def _time(value: float | None) -> datetime | None:
    return None if value is None else datetime.fromtimestamp(value, tz=UTC)
