"""The JobQueue contract, run against the in-memory fake, SAQ on Valkey and SAQ on PostgreSQL.

Each test drives a queue and a worker of the adapter under test (`MemoryWorker` or
`SaqWorkerPool`). Handlers run in this process (except the worker that gets killed, which runs in
a process of its own for SAQ) and coordinate with the test through events, so nothing depends on
how fast the machine is. The few time-based checks compare durations with each other or with the
delays the job asked for (lower bounds that slowness cannot break); `wait_until` only guards
against a hang.

The retry jitter is fixed at 0.5 so the back-off delays are known: 0.75·base, then 1.5·base.
SAQ's PostgreSQL queue keeps due times in whole seconds, so its delays are larger.
"""

from __future__ import annotations

import asyncio
import signal
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from adapters.memory.job_queue import MemoryJobQueue, MemoryWorker
from adapters.queue.conventions import ABORTED_ERROR, CronJob, cron_key
from adapters.queue.factory import JobWorker, job_queue_from_url
from adapters.queue.saq_queue import SaqJobQueue
from adapters.queue.saq_worker import SaqWorkerPool
from core.jobs import JobInfo, JobSpec, JobState
from core.ports import JobContext, JobHandler, JobQueue

ROOT = Path(__file__).resolve().parents[2]
QUEUE = "q"
JITTER = 0.5


@dataclass(frozen=True)
class Timing:
    retry_base: float  # retry_delay_seconds for the back-off test
    delay: float  # delay_seconds for the delayed-job test


TIMINGS = {
    "memory": Timing(retry_base=0.2, delay=0.2),
    "valkey": Timing(retry_base=0.3, delay=0.4),
    # Due times are whole seconds there (rounded up): the back-off must outgrow that rounding.
    "postgres": Timing(retry_base=2.0, delay=1.0),
}


@dataclass
class Harness:
    """One adapter under test: its queue, and workers started the way that adapter's workers are."""

    kind: str
    url: str
    prefix: str
    queue: SaqJobQueue | MemoryJobQueue
    timing: Timing
    workers: list[JobWorker] = field(default_factory=list)
    processes: list[asyncio.subprocess.Process] = field(default_factory=list)

    @property
    def port(self) -> JobQueue:
        return self.queue

    def key(self, name: str) -> str:
        """A job key no other test uses (it also scopes SAQ's abort markers on Valkey)."""
        return f"{self.prefix}{name}"

    async def start_worker(
        self,
        handlers: Mapping[str, JobHandler],
        *,
        concurrency: int = 2,
        grace: float = 5.0,
        sweep_interval: float = 60.0,
        cron_jobs: Sequence[CronJob] = (),
    ) -> JobWorker:
        worker: JobWorker
        if isinstance(self.queue, MemoryJobQueue):
            worker = MemoryWorker(
                self.queue,
                queues=[QUEUE],
                handlers=handlers,
                concurrency=concurrency,
                cron_jobs=cron_jobs,
                shutdown_grace_seconds=grace,
                sweep_interval_seconds=sweep_interval,
                schedule_interval_seconds=0.05,
            )
        else:
            worker = SaqWorkerPool(
                self.queue,
                queues=[QUEUE],
                handlers=handlers,
                concurrency=concurrency,
                cron_jobs=cron_jobs,
                shutdown_grace_seconds=grace,
                sweep_interval_seconds=sweep_interval,
                schedule_interval_seconds=0.05,
                abort_poll_seconds=0.05,
                dequeue_timeout_seconds=0.2,
            )
        await worker.start()
        self.workers.append(worker)
        return worker

    async def stop_worker(self, worker: JobWorker) -> None:
        self.workers.remove(worker)
        await worker.stop()

    async def start_doomed_worker(self, function: str) -> Callable[[], Awaitable[None]]:
        """A worker whose handler for `function` heartbeats and never returns; returns its killer."""
        if isinstance(self.queue, MemoryJobQueue):

            async def heartbeat_forever(ctx: JobContext, **_: Any) -> None:
                while True:
                    await ctx.heartbeat()
                    await asyncio.sleep(0.05)

            worker = MemoryWorker(self.queue, queues=[QUEUE], handlers={function: heartbeat_forever})
            await worker.start()
            return worker.kill

        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.queue_worker_process",
            self.url,
            self.prefix,
            QUEUE,
            function,
            "--lifetime",
            "60",
            cwd=ROOT,
        )
        self.processes.append(process)

        async def kill() -> None:
            process.send_signal(signal.SIGKILL)
            await process.wait()

        return kill

    async def close(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.kill()
                await process.wait()
        for worker in self.workers:
            await worker.stop()
        await self.queue.close()


@pytest.fixture(params=["memory", "valkey", "postgres"])
def queue_url(request: pytest.FixtureRequest) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "valkey":
        return str(request.getfixturevalue("valkey_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
async def harness(queue_url: str, key_prefix: str) -> AsyncIterator[Harness]:
    scheme = urlsplit(queue_url).scheme
    kind = {"memory": "memory", "redis": "valkey", "valkey": "valkey"}.get(scheme, "postgres")
    queue = job_queue_from_url(
        queue_url, name_prefix=key_prefix, sweep_abort_wait_seconds=0.2, random=lambda: JITTER
    )
    harness = Harness(kind=kind, url=queue_url, prefix=key_prefix, queue=queue, timing=TIMINGS[kind])
    try:
        yield harness
    finally:
        await harness.close()
        if kind == "valkey":
            await _delete_valkey_keys(queue_url, key_prefix)


async def _delete_valkey_keys(url: str, prefix: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        for pattern in (f"saq:{prefix}*", f"saq:job:{prefix}*", f"saq:abort:{prefix}*"):
            keys = [key async for key in client.scan_iter(match=pattern, count=500)]
            if keys:
                await client.delete(*keys)
    finally:
        await client.aclose()


async def wait_until(
    harness: Harness, key: str, accept: Callable[[JobInfo], bool], *, guard: float = 20.0
) -> JobInfo:
    """Poll the job's status until `accept` holds; `guard` only stops a hang."""
    deadline = time.monotonic() + guard
    info = None
    while time.monotonic() < deadline:
        info = await harness.port.status(QUEUE, key)
        if info is not None and accept(info):
            return info
        await asyncio.sleep(0.02)
    raise AssertionError(f"job {key} never got there; last status: {info}")


async def wait_finished(harness: Harness, key: str) -> JobInfo:
    return await wait_until(
        harness, key, lambda info: info.state.is_finished and info.finished_at is not None
    )


def spec(harness: Harness, name: str | None, function: str, **fields: Any) -> JobSpec:
    return JobSpec(queue=QUEUE, function=function, key=None if name is None else harness.key(name), **fields)


async def test_a_job_runs_and_its_result_is_visible(harness: Harness) -> None:
    seen: list[dict[str, Any]] = []

    async def describe(ctx: JobContext, **kwargs: Any) -> dict[str, Any]:
        seen.append(kwargs)
        return {
            "queue": ctx.queue,
            "key": ctx.key,
            "attempt": ctx.attempt,
            "correlation": ctx.correlation_id,
            "echo": kwargs,
        }

    await harness.start_worker({"describe": describe})
    payload = {"ids": ["a", "b"], "n": 3, "nested": {"x": 1.5, "ok": True, "none": None}}
    before = time.time()
    queued = await harness.port.enqueue(
        spec(harness, None, "describe", kwargs=payload, correlation_id="req-7")
    )

    assert queued is not None
    assert queued.state is JobState.QUEUED
    assert queued.key  # a fresh key when none is given
    info = await wait_finished(harness, queued.key)
    assert info.state is JobState.COMPLETE
    assert info.result == {
        "queue": QUEUE,  # the logical name, whatever prefix the store gives it
        "key": queued.key,
        "attempt": 1,
        "correlation": "req-7",
        "echo": payload,
    }
    assert seen == [payload]
    assert info.attempts == 1
    assert info.progress == 1.0
    assert info.error is None
    assert info.enqueued_at is not None and info.started_at is not None and info.finished_at is not None
    assert before - 0.01 <= info.enqueued_at.timestamp() <= info.started_at.timestamp()
    assert info.started_at <= info.finished_at


async def test_payloads_must_be_json(harness: Harness) -> None:
    with pytest.raises(TypeError):
        await harness.port.enqueue(spec(harness, "bad", "f", kwargs={"when": object()}))
    assert await harness.port.status(QUEUE, harness.key("bad")) is None


async def test_a_keyed_job_is_not_enqueued_twice_while_pending(harness: Harness) -> None:
    async def echo(ctx: JobContext, value: int) -> int:
        return value

    first = await harness.port.enqueue(spec(harness, "once", "echo", kwargs={"value": 1}))
    second = await harness.port.enqueue(spec(harness, "once", "echo", kwargs={"value": 2}))

    assert first is not None and first.key == harness.key("once")
    assert second is None
    assert (await harness.port.stats(QUEUE)).queued == 1

    await harness.start_worker({"echo": echo})
    done = await wait_finished(harness, harness.key("once"))
    assert done.result == 1

    # Once finished, the key is free again.
    again = await harness.port.enqueue(spec(harness, "once", "echo", kwargs={"value": 3}))
    assert again is not None
    redone = await wait_until(
        harness, harness.key("once"), lambda i: i.state is JobState.COMPLETE and i.result == 3
    )
    assert redone.attempts == 1


async def test_retries_back_off_until_the_job_succeeds(harness: Harness) -> None:
    tries: list[float] = []

    async def flaky(ctx: JobContext) -> int:
        tries.append(time.monotonic())
        if ctx.attempt < 3:
            raise RuntimeError(f"transient failure {ctx.attempt}")
        return ctx.attempt

    await harness.start_worker({"flaky": flaky})
    base = harness.timing.retry_base
    await harness.port.enqueue(spec(harness, "flaky", "flaky", attempts=3, retry_delay_seconds=base))

    info = await wait_finished(harness, harness.key("flaky"))
    assert info.state is JobState.COMPLETE
    assert info.result == 3
    assert info.attempts == 3
    assert len(tries) == 3
    first_gap, second_gap = tries[1] - tries[0], tries[2] - tries[1]
    # Equal jitter at 0.5: the waits are 0.75·base then 1.5·base, never shorter. The second floor
    # is twice the first, which is the back-off; comparing the two measured gaps to each other
    # would only add a dependence on how busy the machine is.
    assert first_gap >= 0.75 * base - 0.01
    assert second_gap >= 1.5 * base - 0.01


async def test_a_job_out_of_attempts_fails_with_its_error(harness: Harness) -> None:
    calls: list[int] = []

    async def broken(ctx: JobContext) -> None:
        calls.append(ctx.attempt)
        raise ValueError(f"boom on try {ctx.attempt}")

    await harness.start_worker({"broken": broken})
    await harness.port.enqueue(spec(harness, "broken", "broken", attempts=2, retry_delay_seconds=0.05))

    info = await wait_finished(harness, harness.key("broken"))
    assert info.state is JobState.FAILED
    assert info.attempts == 2
    assert calls == [1, 2]
    assert info.error is not None and "ValueError: boom on try 2" in info.error
    assert info.result is None


async def test_a_try_that_outlives_its_timeout_fails(harness: Harness) -> None:
    cancelled = asyncio.Event()

    async def slow(ctx: JobContext) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    await harness.start_worker({"slow": slow})
    await harness.port.enqueue(spec(harness, "slow", "slow", attempts=1, timeout_seconds=0.3))

    info = await wait_finished(harness, harness.key("slow"))
    assert info.state is JobState.FAILED
    assert info.error is not None and "TimeoutError" in info.error
    await asyncio.wait_for(cancelled.wait(), 10)


async def test_a_delayed_job_does_not_run_before_its_delay(harness: Harness) -> None:
    ran_at: list[float] = []

    async def later(ctx: JobContext) -> None:
        ran_at.append(time.time())

    await harness.start_worker({"later": later})
    delay = harness.timing.delay
    before = time.time()
    queued = await harness.port.enqueue(spec(harness, "later", "later", delay_seconds=delay))

    assert queued is not None and queued.scheduled_at is not None
    assert queued.scheduled_at.timestamp() >= before + delay - 0.01
    info = await wait_finished(harness, harness.key("later"))
    assert info.state is JobState.COMPLETE
    assert len(ran_at) == 1
    assert ran_at[0] >= before + delay


async def test_aborting_a_queued_job_means_it_never_runs(harness: Harness) -> None:
    ran: list[str] = []

    async def record(ctx: JobContext) -> None:
        ran.append(ctx.key)

    doomed = await harness.port.enqueue(spec(harness, "doomed", "record"))
    delayed = await harness.port.enqueue(spec(harness, "delayed", "record", delay_seconds=60))
    assert doomed is not None and delayed is not None

    assert await harness.port.abort(QUEUE, harness.key("doomed")) is True
    assert await harness.port.abort(QUEUE, harness.key("delayed")) is True
    assert await harness.port.abort(QUEUE, harness.key("doomed")) is False  # nothing left to stop
    assert await harness.port.abort(QUEUE, harness.key("unknown")) is False

    for name in ("doomed", "delayed"):
        info = await harness.port.status(QUEUE, harness.key(name))
        assert info is not None
        assert info.state is JobState.ABORTED
        assert info.error == ABORTED_ERROR
        assert info.finished_at is not None
    assert (await harness.port.stats(QUEUE)).queued == 0

    # A job queued after them runs; had the aborted ones stayed queued, they would have run first.
    await harness.start_worker({"record": record}, concurrency=1)
    await harness.port.enqueue(spec(harness, "sentinel", "record"))
    await wait_finished(harness, harness.key("sentinel"))
    assert ran == [harness.key("sentinel")]
    still_aborted = await harness.port.status(QUEUE, harness.key("doomed"))
    assert still_aborted is not None and still_aborted.state is JobState.ABORTED

    # An aborted job's key is free again.
    assert await harness.port.enqueue(spec(harness, "delayed", "record")) is not None


async def test_aborting_a_running_job_stops_it(harness: Harness) -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    finished: list[str] = []

    async def endless(ctx: JobContext) -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        finished.append(ctx.key)

    await harness.start_worker({"endless": endless})
    await harness.port.enqueue(spec(harness, "endless", "endless", attempts=3))
    await asyncio.wait_for(started.wait(), 20)
    await wait_until(harness, harness.key("endless"), lambda i: i.state is JobState.ACTIVE)

    assert await harness.port.abort(QUEUE, harness.key("endless")) is True
    info = await wait_finished(harness, harness.key("endless"))
    await asyncio.wait_for(cancelled.wait(), 10)
    assert info.state is JobState.ABORTED
    assert info.attempts == 1  # not retried
    assert finished == []
    assert await harness.port.abort(QUEUE, harness.key("endless")) is False


async def test_progress_is_visible_while_the_job_runs(harness: Harness) -> None:
    halfway, release = asyncio.Event(), asyncio.Event()
    rejected: list[float] = []

    async def steps(ctx: JobContext) -> str:
        await ctx.heartbeat()
        await ctx.progress(0.5)
        try:
            await ctx.progress(1.5)
        except ValueError:
            rejected.append(1.5)
        halfway.set()
        await release.wait()
        return "done"

    await harness.start_worker({"steps": steps})
    await harness.port.enqueue(spec(harness, "steps", "steps"))
    await asyncio.wait_for(halfway.wait(), 20)

    running = await wait_until(harness, harness.key("steps"), lambda i: i.state is JobState.ACTIVE)
    assert running.progress == 0.5
    assert running.started_at is not None and running.finished_at is None
    assert rejected == [1.5]
    release.set()
    done = await wait_finished(harness, harness.key("steps"))
    assert (done.state, done.progress, done.result) == (JobState.COMPLETE, 1.0, "done")


async def test_stats_count_jobs_per_state(harness: Harness) -> None:
    release = asyncio.Event()

    async def ok(ctx: JobContext) -> None:
        return None

    async def bad(ctx: JobContext) -> None:
        raise RuntimeError("no")

    async def block(ctx: JobContext) -> None:
        await release.wait()

    empty = await harness.port.stats("empty")
    assert (empty.queued, empty.active, empty.complete, empty.failed, empty.aborted) == (0, 0, 0, 0, 0)
    assert empty.oldest_queued_age_seconds is None

    await harness.start_worker({"ok": ok, "bad": bad, "block": block}, concurrency=1)
    await harness.port.enqueue(spec(harness, "ok", "ok"))
    await wait_finished(harness, harness.key("ok"))
    await harness.port.enqueue(spec(harness, "bad", "bad", attempts=1))
    await wait_finished(harness, harness.key("bad"))
    await harness.port.enqueue(spec(harness, "block", "block"))
    await wait_until(harness, harness.key("block"), lambda i: i.state is JobState.ACTIVE)
    await harness.port.enqueue(spec(harness, "waiting", "ok"))  # the only slot is busy
    await harness.port.enqueue(spec(harness, "doomed", "ok"))
    await harness.port.abort(QUEUE, harness.key("doomed"))

    stats = await harness.port.stats(QUEUE)
    assert stats.queue == QUEUE
    assert (stats.queued, stats.active, stats.complete, stats.failed, stats.aborted) == (1, 1, 1, 1, 1)
    assert stats.oldest_queued_age_seconds is not None and stats.oldest_queued_age_seconds >= 0

    release.set()
    await wait_finished(harness, harness.key("waiting"))
    await wait_finished(harness, harness.key("block"))
    stats = await harness.port.stats(QUEUE)
    assert (stats.queued, stats.active, stats.complete, stats.failed, stats.aborted) == (0, 0, 3, 1, 1)
    assert stats.oldest_queued_age_seconds is None


async def test_a_worker_runs_at_most_its_concurrency(harness: Harness) -> None:
    release = asyncio.Event()
    running: list[str] = []
    peak = 0

    async def hold(ctx: JobContext) -> None:
        nonlocal peak
        running.append(ctx.key)
        peak = max(peak, len(running))
        await release.wait()
        running.remove(ctx.key)

    await harness.start_worker({"hold": hold}, concurrency=2)
    for name in ("one", "two", "three"):
        await harness.port.enqueue(spec(harness, name, "hold"))

    deadline = time.monotonic() + 20
    while len(running) < 2 and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    stats = await harness.port.stats(QUEUE)
    assert (stats.active, stats.queued) == (2, 1)

    release.set()
    for name in ("one", "two", "three"):
        assert (await wait_finished(harness, harness.key(name))).state is JobState.COMPLETE
    assert peak == 2


async def test_stopping_lets_a_running_job_finish(harness: Harness) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def short(ctx: JobContext) -> str:
        started.set()
        await release.wait()
        return "finished"

    worker = await harness.start_worker({"short": short}, concurrency=1, grace=20.0)
    await harness.port.enqueue(spec(harness, "short", "short"))
    await asyncio.wait_for(started.wait(), 20)

    stopping = asyncio.create_task(harness.stop_worker(worker))
    await asyncio.sleep(0.1)
    assert not stopping.done()  # it waits for the running job
    await harness.port.enqueue(spec(harness, "late", "short"))  # arrives while the worker stops
    release.set()
    await asyncio.wait_for(stopping, 20)

    info = await harness.port.status(QUEUE, harness.key("short"))
    assert info is not None and (info.state, info.result, info.attempts) == (JobState.COMPLETE, "finished", 1)
    late = await harness.port.status(QUEUE, harness.key("late"))
    assert late is not None and (late.state, late.attempts) == (JobState.QUEUED, 0)


async def test_stopping_hands_back_a_job_still_running_after_the_grace_period(harness: Harness) -> None:
    started = asyncio.Event()

    async def stubborn(ctx: JobContext) -> int:
        if ctx.attempt == 1:
            started.set()
            await asyncio.sleep(60)
        return ctx.attempt

    worker = await harness.start_worker({"stubborn": stubborn}, concurrency=1, grace=0.2)
    await harness.port.enqueue(spec(harness, "stubborn", "stubborn", attempts=3, retry_delay_seconds=0.05))
    await asyncio.wait_for(started.wait(), 20)
    await harness.stop_worker(worker)

    handed_back = await harness.port.status(QUEUE, harness.key("stubborn"))
    assert handed_back is not None
    assert (handed_back.state, handed_back.attempts) == (JobState.QUEUED, 1)

    await harness.start_worker({"stubborn": stubborn})
    info = await wait_finished(harness, harness.key("stubborn"))
    assert (info.state, info.result, info.attempts) == (JobState.COMPLETE, 2, 2)


async def test_a_job_whose_worker_dies_is_retried_elsewhere(harness: Harness) -> None:
    kill = await harness.start_doomed_worker("crashy")
    await harness.port.enqueue(
        spec(harness, "crashy", "crashy", attempts=3, heartbeat_seconds=0.5, retry_delay_seconds=0.05)
    )
    # Active with a try counted: the doomed worker has started it (SAQ marks a job active as it is
    # dequeued, a moment before the try is counted).
    await wait_until(
        harness, harness.key("crashy"), lambda i: i.state is JobState.ACTIVE and i.attempts == 1, guard=30
    )
    await kill()

    # The dead worker recorded nothing: the job still looks active.
    orphan = await harness.port.status(QUEUE, harness.key("crashy"))
    assert orphan is not None and orphan.state is JobState.ACTIVE

    async def crashy(ctx: JobContext) -> int:
        return ctx.attempt

    await harness.start_worker({"crashy": crashy}, sweep_interval=0.2)
    info = await wait_finished(harness, harness.key("crashy"))
    assert info.state is JobState.COMPLETE
    assert info.attempts >= 2
    assert info.result == info.attempts


async def test_sweeps_never_take_a_job_from_a_live_worker(harness: Harness) -> None:
    """A sweep that runs while a worker is taking a job, before the job is marked active, must
    leave it to that worker: each job runs once, and never looks finished before it has."""
    runs: list[str] = []
    finished_early: list[JobInfo] = []

    async def once(ctx: JobContext) -> int:
        runs.append(ctx.key)
        return ctx.attempt

    # Sweeps back to back, so many of them land while a job is being taken.
    worker = await harness.start_worker({"once": once}, sweep_interval=0.005)
    names = [f"job-{n}" for n in range(40)]
    for name in names:
        await harness.port.enqueue(spec(harness, name, "once", attempts=3))
    keys = [harness.key(name) for name in names]
    for key in keys:
        info = await wait_finished(harness, key)
        if (info.state, info.attempts, info.result, info.error) != (JobState.COMPLETE, 1, 1, None):
            finished_early.append(info)
    # Stopping waits for runs in progress: a job a sweep took shows as a second run, or as queued.
    await harness.stop_worker(worker)

    assert finished_early == []
    assert sorted(runs) == sorted(keys)
    stats = await harness.port.stats(QUEUE)
    assert (stats.queued, stats.active, stats.complete) == (0, 0, len(keys))


async def test_cron_jobs_run_on_their_schedule(harness: Harness) -> None:
    ticks: list[tuple[str, dict[str, Any]]] = []
    ticked = asyncio.Event()

    async def tick(ctx: JobContext, **kwargs: Any) -> None:
        ticks.append((ctx.key, kwargs))
        ticked.set()

    every_second = CronJob(function="tick", cron="* * * * * *", queue=QUEUE, kwargs={"source": "cron"})
    await harness.start_worker({"tick": tick}, cron_jobs=[every_second])
    await asyncio.wait_for(ticked.wait(), 20)

    assert ticks[0] == (cron_key("tick"), {"source": "cron"})
    info = await harness.port.status(QUEUE, cron_key("tick"))
    assert info is not None and info.function == "tick"


async def test_a_failed_job_is_listed_and_can_be_retried_with_all_its_attempts(harness: Harness) -> None:
    fixed = asyncio.Event()
    runs: list[int] = []

    async def fragile(ctx: JobContext, n: int) -> dict[str, Any]:
        runs.append(ctx.attempt)
        if not fixed.is_set():
            raise RuntimeError(f"broken on try {ctx.attempt}")
        return {"n": n, "attempt": ctx.attempt, "correlation": ctx.correlation_id}

    async def ok(ctx: JobContext) -> None:
        return None

    await harness.start_worker({"fragile": fragile, "ok": ok})
    key = harness.key("fragile")
    await harness.port.enqueue(
        spec(
            harness,
            "fragile",
            "fragile",
            kwargs={"n": 7},
            attempts=2,
            retry_delay_seconds=0.05,
            correlation_id="req-9",
        )
    )
    failed = await wait_finished(harness, key)
    assert (failed.state, failed.attempts) == (JobState.FAILED, 2)
    await harness.port.enqueue(spec(harness, "fine", "ok"))
    await wait_finished(harness, harness.key("fine"))

    listed = await harness.port.failed_jobs(QUEUE, 10)
    assert [(i.key, i.state, i.function, i.attempts) for i in listed] == [
        (key, JobState.FAILED, "fragile", 2)
    ]
    assert listed[0].error is not None and "broken on try 2" in listed[0].error
    assert await harness.port.failed_jobs(QUEUE, 0) == []

    # Only a failed or aborted job can be retried: not a completed one, not an unknown one.
    assert await harness.port.retry(QUEUE, harness.key("fine")) is None
    assert await harness.port.retry(QUEUE, harness.key("unknown")) is None

    fixed.set()
    retried = await harness.port.retry(QUEUE, key)
    assert retried is not None
    assert (retried.key, retried.state, retried.function) == (key, JobState.QUEUED, "fragile")
    done = await wait_until(harness, key, lambda i: i.state is JobState.COMPLETE)
    # A fresh run: its tries count from one again; payload and correlation id are the job's own.
    assert done.result == {"n": 7, "attempt": 1, "correlation": "req-9"}
    assert done.attempts == 1
    assert runs == [1, 2, 1]
    assert await harness.port.failed_jobs(QUEUE, 10) == []
    assert await harness.port.retry(QUEUE, key) is None  # completed now


async def test_retrying_keeps_the_jobs_attempts_and_is_done_once(harness: Harness) -> None:
    async def always_broken(ctx: JobContext) -> None:
        raise RuntimeError(f"no luck on try {ctx.attempt}")

    key = harness.key("broken")
    await harness.port.enqueue(spec(harness, "broken", "always_broken", attempts=2, retry_delay_seconds=0.05))
    worker = await harness.start_worker({"always_broken": always_broken})
    await wait_finished(harness, key)
    await harness.stop_worker(worker)

    # Two retries at once: one queues the job again, the other finds it queued already.
    first, second = await asyncio.gather(harness.port.retry(QUEUE, key), harness.port.retry(QUEUE, key))
    assert [r is not None for r in (first, second)].count(True) == 1
    assert (await harness.port.stats(QUEUE)).queued == 1

    await harness.start_worker({"always_broken": always_broken})
    again = await wait_until(harness, key, lambda i: i.state is JobState.FAILED and i.finished_at is not None)
    assert again.attempts == 2  # both tries again, then failed again
    assert again.error is not None and "no luck on try 2" in again.error


async def test_an_aborted_job_can_be_retried(harness: Harness) -> None:
    ran: list[str] = []

    async def record(ctx: JobContext) -> None:
        ran.append(ctx.key)

    key = harness.key("later")
    await harness.port.enqueue(spec(harness, "later", "record", delay_seconds=60))
    assert await harness.port.abort(QUEUE, key) is True
    assert await harness.port.failed_jobs(QUEUE, 10) == []  # aborted is not failed

    retried = await harness.port.retry(QUEUE, key)
    assert retried is not None and retried.state is JobState.QUEUED
    await harness.start_worker({"record": record})
    done = await wait_finished(harness, key)
    assert done.state is JobState.COMPLETE  # queued for now, not for its old delay
    assert ran == [key]


async def test_throughput_counts_every_finished_job_once(harness: Harness) -> None:
    async def ok(ctx: JobContext) -> None:
        return None

    async def bad(ctx: JobContext) -> None:
        raise RuntimeError("no")

    assert await harness.port.finished_per_minute(QUEUE, 60) == 0.0
    with pytest.raises(ValueError):
        await harness.port.finished_per_minute(QUEUE, 0)

    await harness.start_worker({"ok": ok, "bad": bad})
    for name in ("one", "two", "three"):
        await harness.port.enqueue(spec(harness, name, "ok"))
    await harness.port.enqueue(spec(harness, "bad", "bad", attempts=2, retry_delay_seconds=0.05))
    await harness.port.enqueue(spec(harness, "doomed", "ok", delay_seconds=60))
    await harness.port.abort(QUEUE, harness.key("doomed"))
    for name in ("one", "two", "three", "bad"):
        await wait_finished(harness, harness.key(name))

    # Three complete, one failed (its two tries count once), one aborted: five finished jobs,
    # all within the last minute; over two minutes that is half as many per minute. A worker may
    # hold its counts for a second before it writes them.
    deadline = time.monotonic() + 20  # only against a hang
    while await harness.port.finished_per_minute(QUEUE, 60) < 5 and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    assert await harness.port.finished_per_minute(QUEUE, 60) == pytest.approx(5.0)
    assert await harness.port.finished_per_minute(QUEUE, 120) == pytest.approx(2.5)
    assert await harness.port.finished_per_minute("other", 60) == 0.0
