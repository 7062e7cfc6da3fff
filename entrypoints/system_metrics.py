"""System gauges sampled in the background, and the registry every exposition reads.

Queue figures come from `JobQueue.stats` (one query per queue), read every
`PICTOR_METRICS_SAMPLE_INTERVAL_SECONDS` by a background task in each API process and each
worker, never at scrape time: a scrape only reads what was last sampled. The database pool gauges
are refreshed the same way by `adapters.postgres.instrumentation.report_pool_stats`; the cache
counters and breaker gauge are kept by `adapters.resilient_cache`.

Several server processes (`pictor serve --workers N`) write their figures to the directory named by
prometheus-client's own `PROMETHEUS_MULTIPROC_DIR`; an exposition then reads every process's files
(`collecting_registry`). Gauges that each process measures for itself (pool, in-progress requests)
add up across live processes; the queue gauges describe one shared queue, so the latest sample of
any live process is the answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Final

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from core.jobs import QUEUES, QueueStats
from core.ports import JobQueue

log = logging.getLogger("pictor.metrics")

MULTIPROCESS_DIR_VARIABLE: Final = "PROMETHEUS_MULTIPROC_DIR"

# "livemostrecent": every process reads the same shared queue; the freshest sample of a live
# process wins, and a stopped process's samples go with it.
_QUEUE_GAUGE_MODE: Final = "livemostrecent"
QUEUE_DEPTH: Final = Gauge(
    "pictor_queue_depth",
    "Jobs waiting on the queue, due now or scheduled for later (retries, delayed jobs)",
    ["queue"],
    multiprocess_mode=_QUEUE_GAUGE_MODE,
)
QUEUE_RUNNING: Final = Gauge(
    "pictor_queue_running_jobs", "Jobs a worker is running", ["queue"], multiprocess_mode=_QUEUE_GAUGE_MODE
)
QUEUE_FAILED: Final = Gauge(
    "pictor_queue_failed_jobs",
    "Jobs that ran out of attempts, as long as the queue keeps finished jobs",
    ["queue"],
    multiprocess_mode=_QUEUE_GAUGE_MODE,
)
QUEUE_OLDEST_AGE: Final = Gauge(
    "pictor_queue_oldest_job_age_seconds",
    "How long the oldest job due to run has waited for a worker (0 when none waits)",
    ["queue"],
    multiprocess_mode=_QUEUE_GAUGE_MODE,
)
QUEUE_STATS_ERRORS: Final = Counter(
    "pictor_queue_stats_errors_total", "Queue figures that could not be read when sampled", ["queue"]
)

# Files of gauges that only count while their process lives: `gauge_live<mode>_<pid>.db`.
_LIVE_GAUGE_FILE: Final = re.compile(r"^gauge_live[a-z]+_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    """prometheus-client's multiprocess directory, when several processes share their metrics.

    prometheus-client decides this from its own variable when it is imported; this reads the
    same variable so the exposition agrees with how the values were stored.
    """
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


def collecting_registry() -> CollectorRegistry:
    """What an exposition reads: every process's files in multiprocess mode, else this process's
    registry."""
    directory = multiprocess_dir()
    if directory is None:
        return REGISTRY
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
    return registry


def exposition() -> bytes:
    """The metrics in Prometheus text format (what `/metrics` answers)."""
    return generate_latest(collecting_registry())


def record_queue_stats(stats: QueueStats) -> None:
    """Copy one queue's figures into the queue gauges."""
    QUEUE_DEPTH.labels(stats.queue).set(stats.queued)
    QUEUE_RUNNING.labels(stats.queue).set(stats.active)
    QUEUE_FAILED.labels(stats.queue).set(stats.failed)
    age = stats.oldest_queued_age_seconds
    QUEUE_OLDEST_AGE.labels(stats.queue).set(age if age is not None and math.isfinite(age) else 0.0)


def prepare_multiprocess_dir(directory: Path) -> None:
    """Make the directory, without the files of an earlier run (prometheus-client requires a clean
    directory at start: old counters would otherwise be added to the new ones)."""
    directory.mkdir(parents=True, exist_ok=True)
    for path in directory.glob("*.db"):
        path.unlink(missing_ok=True)


def forget_dead_processes(directory: str | Path) -> list[int]:
    """Remove the live-gauge files of processes that no longer run (a crashed server worker
    cannot do it itself); their counters stay, as counters must. Returns the pids forgotten."""
    files: dict[int, list[Path]] = {}
    for path in Path(directory).glob("gauge_live*.db"):
        match = _LIVE_GAUGE_FILE.match(path.name)
        if match is not None:
            files.setdefault(int(match.group(1)), []).append(path)
    dead = sorted(pid for pid in files if not _process_exists(pid))
    for pid in dead:
        for path in files[pid]:
            path.unlink(missing_ok=True)  # another process may be sweeping too
    return dead


def forget_this_process() -> None:
    """At shutdown in multiprocess mode: this process's live gauges stop counting at once."""
    directory = multiprocess_dir()
    if directory is not None:
        for path in Path(directory).glob(f"gauge_live*_{os.getpid()}.db"):
            path.unlink(missing_ok=True)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, as another user's process
    return True


class QueueStatsSampler:
    """Reads `JobQueue.stats` for each queue every `every_seconds` and sets the queue gauges; in
    multiprocess mode it also forgets processes that died. A failed read is logged and counted,
    and the gauges keep their last values until the next good one."""

    def __init__(self, jobs: JobQueue, *, every_seconds: float, queues: Sequence[str] = QUEUES) -> None:
        self._jobs = jobs
        self._every = every_seconds
        self._queues = tuple(queues)
        # One slow answer must not stack samples up behind it.
        self._timeout = max(1.0, min(every_seconds, 10.0))

    async def sample(self) -> None:
        """One round: every queue once."""
        for queue in self._queues:
            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
                # that arrives as the call completes, and the sampler would never stop.
                async with asyncio.timeout(self._timeout):
                    stats = await self._jobs.stats(queue)
            except Exception as error:
                QUEUE_STATS_ERRORS.labels(queue).inc()
                log.warning("could not read the %s queue's figures: %r", queue, error)
                continue
            record_queue_stats(stats)
        directory = multiprocess_dir()
        if directory is not None:
            forgotten = forget_dead_processes(directory)
            if forgotten:
                log.info("metrics of stopped processes forgotten", extra={"pids": forgotten})

    async def run(self) -> None:
        """Sample until cancelled."""
        while True:
            try:
                await self.sample()
            except Exception:  # a broken round must not end the sampling for good
                log.exception("queue metrics sampling failed")
            await asyncio.sleep(self._every)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Sample in a background task for the duration of the block."""
        task = asyncio.create_task(self.run(), name="queue-metrics")
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
