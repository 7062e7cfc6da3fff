"""The generation benchmark (benchmarks/generation_load.py): its pure parts, so it cannot silently rot."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from benchmarks.generation_load import (
    BenchReport,
    RunReport,
    Timing,
    build_run_report,
    failure_kind,
    format_table,
    helper_processes,
    options_from,
    parser,
    speedup,
    timing_from,
)

T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def _ms(value: float) -> timedelta:
    return timedelta(milliseconds=value)


def _succeeded(number: int, *, created_ms: float, wait_ms: float, render_ms: float) -> Timing:
    created = T0 + _ms(created_ms)
    return Timing(
        id=f"g{number}",
        status="succeeded",
        created_at=created,
        started_at=created + _ms(wait_ms),
        finished_at=created + _ms(wait_ms + render_ms),
    )


def _api_generation(**overrides: Any) -> dict[str, Any]:
    generation: dict[str, Any] = {
        "id": "gen_1",
        "status": "succeeded",
        "prompt": "a lighthouse",
        "negative_prompt": None,
        "size": "256x256",
        "n": 1,
        "seed": 7,
        "style": None,
        "init_image": None,
        "progress": 1.0,
        "images": [],
        "created_at": "2025-03-01T12:00:00Z",
        "started_at": "2025-03-01T12:00:00.250000Z",
        "finished_at": "2025-03-01T12:00:01.000000+00:00",
    }
    return {**generation, **overrides}


def test_timing_from_reads_the_api_timestamps() -> None:
    timing = timing_from(_api_generation())
    assert timing.id == "gen_1"
    assert timing.status == "succeeded"
    assert timing.queue_wait_ms == pytest.approx(250.0)
    assert timing.render_ms == pytest.approx(750.0)
    assert timing.error_code is None


def test_timing_of_a_queued_generation_has_no_wait_or_render_yet() -> None:
    timing = timing_from(_api_generation(status="queued", started_at=None, finished_at=None))
    assert timing.queue_wait_ms is None
    assert timing.render_ms is None
    assert failure_kind(timing) == "unfinished (queued)"


def test_timing_keeps_the_error_code_of_a_failed_generation() -> None:
    failed = timing_from(_api_generation(status="failed", error={"code": "render_failed", "message": "boom"}))
    assert failed.error_code == "render_failed"
    assert failure_kind(failed) == "failed: render_failed"
    assert failure_kind(timing_from(_api_generation(status="canceled"))) == "canceled"


def test_timestamps_without_a_time_zone_are_refused() -> None:
    with pytest.raises(ValueError, match="time zone"):
        timing_from(_api_generation(created_at="2025-03-01T12:00:00"))


def test_run_report_measures_from_the_first_submit_to_the_last_success() -> None:
    # 100 generations: waits of 1..100 ms and renders of 10..1000 ms, the last ending at 10 s.
    timings = [_succeeded(i, created_ms=i * 10, wait_ms=i, render_ms=i * 10) for i in range(1, 100)] + [
        _succeeded(100, created_ms=10_000 - 1_100, wait_ms=100, render_ms=1_000)
    ]
    report = build_run_report(1, submitted=100, first_submit_at=T0, timings=timings)
    assert report.succeeded == 100
    assert report.failures == 0
    assert report.failure_kinds == {}
    assert report.seconds == pytest.approx(10.0)
    assert report.per_second == pytest.approx(10.0)
    # nearest rank: p50 is the 50th value, p99 the 99th
    assert report.queue_wait_p50_ms == pytest.approx(50.0)
    assert report.queue_wait_p99_ms == pytest.approx(99.0)
    assert report.render_p50_ms == pytest.approx(500.0)
    assert report.render_p99_ms == pytest.approx(990.0)


def test_failures_count_refusals_bad_endings_and_missing_generations() -> None:
    timings = [
        _succeeded(1, created_ms=0, wait_ms=5, render_ms=100),
        Timing(
            id="g2", status="failed", created_at=T0, started_at=T0, finished_at=T0, error_code="render_failed"
        ),
        Timing(id="g3", status="running", created_at=T0, started_at=T0, finished_at=None),
    ]
    report = build_run_report(
        2, submitted=6, first_submit_at=T0, timings=timings, refused={"HTTP 429 rate_limited": 2}
    )
    assert report.succeeded == 1
    assert report.failure_kinds == {
        "HTTP 429 rate_limited": 2,
        "failed: render_failed": 1,
        "not listed": 1,
        "unfinished (running)": 1,
    }
    assert report.failures == 5
    # only successes count towards throughput and the percentiles
    assert report.per_second == pytest.approx(1 / 0.105)
    assert report.queue_wait_p99_ms == pytest.approx(5.0)


def test_a_run_without_a_success_has_no_throughput_and_no_speedup() -> None:
    failed = Timing(id="g1", status="canceled", created_at=T0, started_at=None, finished_at=T0)
    nothing = build_run_report(1, submitted=1, first_submit_at=T0, timings=[failed])
    assert nothing.per_second is None
    assert nothing.seconds is None
    assert nothing.queue_wait_p50_ms is None
    assert nothing.failures == 1
    one = build_run_report(
        1, submitted=1, first_submit_at=T0, timings=[_succeeded(1, created_ms=0, wait_ms=0, render_ms=500)]
    )
    assert speedup(nothing, one) is None
    assert speedup(one, nothing) is None


def _run(workers: int, per_second_seconds: float, failures: int = 0) -> RunReport:
    return RunReport(
        workers=workers,
        submitted=100,
        succeeded=100 - failures,
        failures=failures,
        seconds=per_second_seconds,
        queue_wait_p50_ms=12.34,
        queue_wait_p99_ms=56.78,
        render_p50_ms=100.0,
        render_p99_ms=None,
        failure_kinds={"canceled": failures} if failures else {},
    )


def test_speedup_is_the_ratio_of_throughputs() -> None:
    assert speedup(_run(1, 10.0), _run(2, 5.0)) == pytest.approx(2.0)
    report = BenchReport(
        size="256x256", clients=4, render_steps="8", render_workers="1", runs=(_run(1, 10.0), _run(2, 5.0))
    )
    assert report.speedups() == {"2_workers/1_worker": pytest.approx(2.0)}


def test_text_report_has_a_row_per_run_and_the_speedup() -> None:
    report = BenchReport(
        size="256x256", clients=4, render_steps="8", render_workers="1", runs=(_run(1, 10.0), _run(2, 4.0, 4))
    )
    text = report.to_text()
    lines = text.splitlines()
    assert lines[0].startswith("size 256x256, n=1, built-in renderer (steps 8")
    assert lines[1].split() == [
        "workers", "generations", "seconds", "gen/s", "queue", "p50", "ms", "queue", "p99", "ms",
        "render", "p50", "ms", "render", "p99", "ms", "failures",
    ]  # fmt: skip
    assert lines[2].split() == ["1", "100", "10.00", "10.0", "12.3", "56.8", "100.0", "-", "0"]
    assert lines[3].split() == ["2", "100", "4.00", "24.0", "12.3", "56.8", "100.0", "-", "4"]
    assert "speed-up 2_workers/1_worker: 2.40x" in lines
    assert "failures with 2 worker(s): canceled 4" in lines


def test_table_columns_line_up() -> None:
    widths = {len(line) for line in format_table([_run(1, 10.0), _run(2, 4.0)]).splitlines()}
    assert len(widths) == 1


def test_json_report_round_trips_with_throughput_and_speedups() -> None:
    report = BenchReport(
        size="256x256", clients=2, render_steps="8", render_workers="1", runs=(_run(1, 10.0), _run(2, 5.0))
    )
    data = json.loads(json.dumps(report.to_json()))
    assert data["size"] == "256x256"
    assert data["n"] == 1
    assert [run["workers"] for run in data["runs"]] == [1, 2]
    assert data["runs"][0]["per_second"] == pytest.approx(10.0)
    assert data["runs"][1]["failures"] == 0
    assert data["speedups"] == {"2_workers/1_worker": pytest.approx(2.0)}


def test_command_line_defaults_and_limits() -> None:
    options = options_from(parser().parse_args([]))
    assert options.workers == (1, 2)
    assert options.size == "256x256"
    assert options.generations >= 1
    custom = options_from(
        parser().parse_args(["--generations", "30", "--workers", "1", "2", "3", "--warmup", "-1"])
    )
    assert (custom.generations, custom.workers, custom.warmup) == (30, (1, 2, 3), 0)
    with pytest.raises(SystemExit):
        parser().parse_args(["--clients", "0"])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_helper_processes_counts_the_group_besides_its_leader() -> None:
    # A shell in its own process group that forked two children before it says "ready".
    script = "sleep 30 & sleep 30 & echo ready; wait"
    with subprocess.Popen(["sh", "-c", script], stdout=subprocess.PIPE, start_new_session=True) as group:
        try:
            assert group.stdout is not None
            assert group.stdout.readline() == b"ready\n"
            assert helper_processes(group.pid) == 2
        finally:
            os.killpg(group.pid, signal.SIGKILL)
    with subprocess.Popen(["sleep", "30"], start_new_session=True) as alone:
        try:
            assert helper_processes(alone.pid) == 0
        finally:
            alone.kill()
