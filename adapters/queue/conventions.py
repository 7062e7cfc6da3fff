"""What every JobQueue adapter agrees on: error texts, JSON payloads, periodic jobs.

This module imports no queue library, so the in-memory fake shares it without pulling SAQ in.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec

from core.jobs import MAINTENANCE, JobSpec

ABORTED_ERROR = "aborted"
"""The error recorded on a job stopped through `JobQueue.abort`."""

HANDED_BACK_ERROR = "cancelled"
"""The error recorded on a job a stopping worker handed back (SAQ's own word for it)."""

SWEPT_ERROR = "swept: heartbeat or timeout lapsed, the worker is presumed dead"
"""The error recorded on a job a sweep took away from a silent worker."""


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
