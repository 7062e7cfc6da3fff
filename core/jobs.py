"""Background jobs: what the JobQueue port accepts and reports, and the pure retry schedule."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec

# The queues of DESIGN.md §7. Paid plans' generations go to the priority queue.
GENERATION = "generation"
GENERATION_PRIORITY = "generation-priority"
WEBHOOKS = "webhooks"
EMAIL = "email"
MAINTENANCE = "maintenance"
QUEUES: tuple[str, ...] = (GENERATION_PRIORITY, GENERATION, WEBHOOKS, EMAIL, MAINTENANCE)


class JobState(StrEnum):
    QUEUED = "queued"  # waiting, possibly scheduled for later (a retry or a delayed job)
    ACTIVE = "active"  # a worker is running it
    COMPLETE = "complete"
    FAILED = "failed"  # out of attempts
    ABORTED = "aborted"

    @property
    def is_finished(self) -> bool:
        return self in (JobState.COMPLETE, JobState.FAILED, JobState.ABORTED)


class JobSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A request to run `function(**kwargs)` on `queue`.

    Payloads carry ids, not objects. With a `key`, enqueueing again while a job with that key is
    unfinished does nothing, so producers may enqueue freely.
    """

    queue: str
    function: str
    kwargs: dict[str, Any] = {}
    key: str | None = None
    delay_seconds: float = 0.0
    timeout_seconds: float = 60.0
    attempts: int = 3  # total tries, the first included
    retry_delay_seconds: float = 1.0
    retry_backoff: bool = True  # exponential back-off with jitter between tries
    heartbeat_seconds: float = 0.0  # 0: no heartbeat; else a silent job is presumed dead after it
    correlation_id: str | None = None


class JobInfo(msgspec.Struct, frozen=True, kw_only=True):
    queue: str
    key: str
    function: str
    state: JobState
    attempts: int  # tries started so far
    progress: float = 0.0
    error: str | None = None
    result: Any = None
    enqueued_at: datetime | None = None
    scheduled_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class QueueStats(msgspec.Struct, frozen=True, kw_only=True):
    queue: str
    queued: int
    active: int
    complete: int
    failed: int
    aborted: int = 0
    oldest_queued_age_seconds: float | None = None


def retry_delay(
    attempt: int, *, base_seconds: float, backoff: bool, jitter: float, cap_seconds: float = 3600.0
) -> float:
    """Seconds to wait before try `attempt + 1`, after try `attempt` (1-based) failed.

    Exponential back-off (base, 2·base, 4·base, …) capped at `cap_seconds`, with "equal jitter":
    half the delay is fixed, half is scaled by `jitter` ∈ [0, 1) (a random number the caller draws,
    so this rule stays pure). Without back-off the delay is constant.
    """
    if attempt < 1:
        raise ValueError("attempt is 1-based")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    if base_seconds <= 0:
        return 0.0
    if not backoff:
        return base_seconds
    delay = min(cap_seconds, base_seconds * 2.0 ** min(attempt - 1, 62))
    return delay / 2 + delay / 2 * jitter
