"""What every JobQueue adapter agrees on: error texts, JSON payloads, periodic jobs.

This module imports no queue library, so the in-memory fake shares it without pulling SAQ in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

import msgspec

from core.jobs import MAINTENANCE, JobSpec

ABORTED_ERROR = "aborted"
"""The error recorded on a job stopped through `JobQueue.abort`."""

HANDED_BACK_ERROR = "cancelled"
"""The error recorded on a job a stopping worker handed back (SAQ's own word for it)."""

SWEPT_ERROR = "swept: heartbeat or timeout lapsed, the worker is presumed dead"
"""The error recorded on a job a sweep took away from a silent worker."""


THROUGHPUT_BUCKET_SECONDS = 10
"""Workers count finished jobs per queue in buckets of this many seconds, in the queue's store."""

THROUGHPUT_RETENTION_SECONDS = 3600
"""How long a bucket is kept: the longest window `finished_per_minute` can look back over."""


class CronJob(msgspec.Struct, frozen=True, kw_only=True):
    """A job a worker enqueues on a cron schedule (e.g. `*/5 * * * *`).

    The job's key is `cron:<function>`, so however many workers serve the queue, one run per tick
    is pending at a time.
    """

    function: str
    cron: str
    queue: str = MAINTENANCE
    kwargs: dict[str, Any] = {}
    timeout_seconds: float = 60.0
    attempts: int = 1


def cron_key(function: str) -> str:
    """The key of a periodic job's pending run (SAQ's convention)."""
    return f"cron:{function}"


def json_round_trip(value: Any) -> Any:
    """`value` as it comes back from the queue's JSON store; TypeError/ValueError if it cannot."""
    return json.loads(json.dumps(value))


def check_spec(spec: JobSpec) -> None:
    """Reject specs no queue can honour, the same way for every adapter."""
    if not spec.queue:
        raise ValueError("a job needs a queue name")
    if not spec.function:
        raise ValueError("a job needs a function name")
    if spec.attempts < 1:
        raise ValueError("attempts counts tries and must be at least 1")
    if spec.delay_seconds < 0 or spec.timeout_seconds < 0 or spec.retry_delay_seconds < 0:
        raise ValueError("delays and timeouts cannot be negative")
    if spec.heartbeat_seconds < 0:
        raise ValueError("heartbeat_seconds cannot be negative")
    if spec.key is not None and not spec.key:
        raise ValueError("a job key cannot be empty")


def throughput_bucket(at: float) -> int:
    """The bucket a job finished at epoch second `at` is counted in."""
    return math.floor(at / THROUGHPUT_BUCKET_SECONDS)


def throughput_window(now: float, window_seconds: float) -> range:
    """The buckets `finished_per_minute(window_seconds)` reads at `now`, oldest first."""
    window = _checked_window(window_seconds)
    return range(throughput_bucket(now - window), throughput_bucket(now) + 1)


def finished_per_minute(counts: Mapping[int, int], *, now: float, window_seconds: float) -> float:
    """Finished jobs per minute over the `window_seconds` before `now`, from per-bucket counts.

    A bucket counts in proportion to the part of it (up to `now`) that lies in the window, so the
    oldest bucket, which straddles the window's start, neither inflates nor deflates the rate by
    up to a bucket's worth (finishes are taken as spread evenly within a bucket).
    """
    window = _checked_window(window_seconds)
    start = now - window
    finished = 0.0
    for bucket, count in counts.items():
        low = bucket * THROUGHPUT_BUCKET_SECONDS
        elapsed_end = min(low + THROUGHPUT_BUCKET_SECONDS, now)
        elapsed = elapsed_end - low
        if elapsed <= 0:  # the bucket began this instant: whatever it holds is inside
            finished += count if low >= start else 0
            continue
        inside = elapsed_end - max(low, start)
        if inside > 0:
            finished += count * min(1.0, inside / elapsed)
    return finished * 60.0 / window


def _checked_window(window_seconds: float) -> float:
    if not 0 < window_seconds <= THROUGHPUT_RETENTION_SECONDS:
        raise ValueError(f"the window must be within (0, {THROUGHPUT_RETENTION_SECONDS}] seconds")
    return float(window_seconds)
