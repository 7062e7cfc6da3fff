"""Queue gauges sampled from `JobQueue.stats`, and the multiprocess directory's bookkeeping."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from adapters.memory.job_queue import MemoryJobQueue
from core.jobs import EMAIL, GENERATION, JobSpec, QueueStats
from entrypoints.system_metrics import (
    QueueStatsSampler,
    forget_dead_processes,
    prepare_multiprocess_dir,
    record_queue_stats,
)


def gauge(name: str, queue: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"queue": queue})


class ScriptedQueue:
    """A JobQueue whose `stats` answers what the test says, or raises."""

    def __init__(self) -> None:
        self.answers: dict[str, QueueStats | Exception] = {}
        self.calls: list[str] = []

    async def stats(self, queue: str) -> QueueStats:
        self.calls.append(queue)
        answer = self.answers[queue]
        if isinstance(answer, Exception):
            raise answer
        return answer


def stats(queue: str, *, queued: int, active: int, failed: int, oldest: float | None) -> QueueStats:
    return QueueStats(
        queue=queue, queued=queued, active=active, complete=0, failed=failed, oldest_queued_age_seconds=oldest
    )


async def test_a_sample_sets_every_queue_gauge() -> None:
    jobs = ScriptedQueue()
    jobs.answers = {
        "q-one": stats("q-one", queued=7, active=2, failed=1, oldest=12.5),
        "q-two": stats("q-two", queued=0, active=0, failed=0, oldest=None),
    }
    await QueueStatsSampler(jobs, every_seconds=60, queues=["q-one", "q-two"]).sample()  # type: ignore[arg-type]
    assert gauge("pictor_queue_depth", "q-one") == 7
    assert gauge("pictor_queue_running_jobs", "q-one") == 2
    assert gauge("pictor_queue_failed_jobs", "q-one") == 1
    assert gauge("pictor_queue_oldest_job_age_seconds", "q-one") == 12.5
    assert gauge("pictor_queue_depth", "q-two") == 0
    assert gauge("pictor_queue_oldest_job_age_seconds", "q-two") == 0  # nobody waits


async def test_a_failed_read_is_counted_and_keeps_the_last_figures_and_the_other_queues_go_on() -> None:
    jobs = ScriptedQueue()
    jobs.answers = {
        "q-flaky": stats("q-flaky", queued=3, active=1, failed=0, oldest=4.0),
        "q-fine": stats("q-fine", queued=1, active=0, failed=0, oldest=1.0),
    }
    sampler = QueueStatsSampler(jobs, every_seconds=60, queues=["q-flaky", "q-fine"])  # type: ignore[arg-type]
    await sampler.sample()
    errors = REGISTRY.get_sample_value("pictor_queue_stats_errors_total", {"queue": "q-flaky"}) or 0.0
    jobs.answers["q-flaky"] = ConnectionError("valkey down")
    jobs.answers["q-fine"] = stats("q-fine", queued=5, active=0, failed=0, oldest=2.0)
    await sampler.sample()
    assert REGISTRY.get_sample_value("pictor_queue_stats_errors_total", {"queue": "q-flaky"}) == errors + 1
    assert gauge("pictor_queue_depth", "q-flaky") == 3  # last known
    assert gauge("pictor_queue_depth", "q-fine") == 5


async def test_the_sampler_reads_the_memory_queue_in_the_background() -> None:
    jobs = MemoryJobQueue()
    for n in range(3):
        await jobs.enqueue(
            JobSpec(queue=EMAIL, function="send_verification_email", kwargs={"user_id": str(n)})
        )
    record_queue_stats(stats(EMAIL, queued=0, active=0, failed=0, oldest=None))  # a known start
    sampler = QueueStatsSampler(jobs, every_seconds=0.01, queues=[EMAIL, GENERATION])
    async with sampler.running():
        for _ in range(500):
            if gauge("pictor_queue_depth", EMAIL) == 3:
                break
            await asyncio.sleep(0.01)
    assert gauge("pictor_queue_depth", EMAIL) == 3
    assert gauge("pictor_queue_running_jobs", EMAIL) == 0
    assert (gauge("pictor_queue_oldest_job_age_seconds", EMAIL) or 0) >= 0
    assert gauge("pictor_queue_depth", GENERATION) == 0


async def test_a_broken_round_does_not_stop_the_sampling() -> None:
    class Exploding:
        def __init__(self) -> None:
            self.rounds = 0

        async def stats(self, queue: str) -> QueueStats:
            self.rounds += 1
            if self.rounds == 1:
                raise RuntimeError("first round breaks")
            return stats(queue, queued=self.rounds, active=0, failed=0, oldest=None)

    jobs = Exploding()
    async with QueueStatsSampler(jobs, every_seconds=0.01, queues=["q-boom"]).running():  # type: ignore[arg-type]
        for _ in range(500):
            if jobs.rounds >= 3:
                break
            await asyncio.sleep(0.01)
    assert jobs.rounds >= 3
    assert (gauge("pictor_queue_depth", "q-boom") or 0) >= 2


def a_dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_dead_processes_lose_their_live_gauges_and_keep_their_counters(tmp_path: Path) -> None:
    dead = a_dead_pid()
    alive = os.getpid()
    names = [
        f"gauge_livesum_{dead}.db",
        f"gauge_livemostrecent_{dead}.db",
        f"counter_{dead}.db",
        f"histogram_{dead}.db",
        f"gauge_all_{dead}.db",  # "all" gauges keep a series per pid, dead ones too, by design
        f"gauge_livesum_{alive}.db",
        f"counter_{alive}.db",
    ]
    for name in names:
        (tmp_path / name).write_bytes(b"")
    assert forget_dead_processes(tmp_path) == [dead]
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(set(names) - {f"gauge_livesum_{dead}.db", f"gauge_livemostrecent_{dead}.db"})
    assert forget_dead_processes(tmp_path) == []


def test_preparing_the_directory_removes_an_earlier_runs_files_only(tmp_path: Path) -> None:
    directory = tmp_path / "metrics"
    prepare_multiprocess_dir(directory)  # created when missing
    (directory / "counter_1.db").write_bytes(b"old")
    (directory / "notes.txt").write_text("not ours")
    prepare_multiprocess_dir(directory)
    assert sorted(p.name for p in directory.iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("age", [float("nan"), float("inf")])
def test_an_unreadable_age_is_shown_as_zero(age: float) -> None:
    record_queue_stats(stats("q-odd", queued=1, active=0, failed=0, oldest=age))
    assert gauge("pictor_queue_oldest_job_age_seconds", "q-odd") == 0


@pytest.mark.timeout(30)
async def test_stopping_never_hangs_even_when_a_read_completes_as_it_is_cancelled() -> None:
    # With asyncio.wait_for (Python 3.11) a cancellation arriving as stats() completes was
    # swallowed: the sampler slept on and leaving `running()` hung (the app never shut down).
    class Quick:
        async def stats(self, queue: str) -> QueueStats:
            return stats(queue, queued=0, active=0, failed=0, oldest=None)

    sampler = QueueStatsSampler(Quick(), every_seconds=3600, queues=["q-a", "q-b", "q-c"])  # type: ignore[arg-type]
    for round_ in range(300):
        async with sampler.running():
            for _ in range(round_ % 7):  # stop at every point of a sampling round
                await asyncio.sleep(0)
