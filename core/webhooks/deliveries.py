"""Webhook deliveries: one event to one target, its attempts and its retry schedule (pure rules).

A delivery is `pending` until an attempt gets a 2xx (`succeeded`), the schedule runs out or the
receiver answers 410 Gone (`failed`), or its endpoint goes away (`canceled`). Attempts follow
Svix's schedule (immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h) with jitter; a
`Retry-After` longer than the next step is honoured. The database is the source of truth: a
dispatcher leases each due delivery and enqueues one `webhooks` job for that lease; the job may
send only while the lease is still the one it was dispatched with, so two jobs never send the same
attempt, and a job or worker that died leaves a lease that simply runs out.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import msgspec

SVIX_SCHEDULE_SECONDS: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 36000)
ATTEMPT_TIMEOUT_SECONDS = 15.0
JITTER = 0.1  # each delay moves by up to ±10 %, so retries of many deliveries spread out
MAX_RETRY_AFTER_SECONDS = 86_400.0  # a receiver cannot push a retry further than a day
MAX_ERROR_LENGTH = 500


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"


class WebhookDelivery(msgspec.Struct, frozen=True, kw_only=True):
    """One event on its way to one target.

    `endpoint_id` is None for a per-request `webhook_url` (signed with the account's secret).
    `max_attempts` is the schedule's length; a manual retry allows one attempt more.
    `locked_until` is the lease: while it lies ahead, a job is on its way or sending.
    """

    id: str
    user_id: str
    endpoint_id: str | None
    url: str
    event_id: str
    event_type: str
    event_occurred_at: datetime
    data: dict[str, Any]
    status: DeliveryStatus = DeliveryStatus.PENDING
    attempts: int = 0
    max_attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None = None
    last_error: str | None = None
    last_attempt_at: datetime | None = None
    delivered_at: datetime | None = None
    locked_until: datetime | None = None
    created_at: datetime
    updated_at: datetime

    @property
    def is_finished(self) -> bool:
        return self.status is not DeliveryStatus.PENDING

    def is_due(self, now: datetime) -> bool:
        return (
            self.status is DeliveryStatus.PENDING
            and self.next_attempt_at is not None
            and self.next_attempt_at <= now
            and (self.locked_until is None or self.locked_until <= now)
        )


class AttemptResult(msgspec.Struct, frozen=True, kw_only=True):
    """What one HTTP attempt got: a status code, or an error when no response came back."""

    status_code: int | None = None
    error: str | None = None  # "timeout after 15s", "connection refused", "unsafe target: …"
    retry_after_seconds: float | None = None
    duration_seconds: float = 0.0

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def gone(self) -> bool:
        return self.status_code == 410


class AttemptOutcome(StrEnum):
    SUCCEEDED = "succeeded"
    RETRYING = "retrying"  # failed; another attempt is scheduled
    FAILED = "failed"  # failed and out of attempts
    GONE = "gone"  # 410: the endpoint is disabled and the delivery failed


def new_delivery(
    *,
    id: str,
    user_id: str,
    endpoint_id: str | None,
    url: str,
    event_id: str,
    event_type: str,
    event_occurred_at: datetime,
    data: dict[str, Any],
    schedule: Sequence[float],
    now: datetime,
) -> WebhookDelivery:
    return WebhookDelivery(
        id=id,
        user_id=user_id,
        endpoint_id=endpoint_id,
        url=url,
        event_id=event_id,
        event_type=event_type,
        event_occurred_at=event_occurred_at,
        data=data,
        max_attempts=len(schedule),
        next_attempt_at=now + timedelta(seconds=schedule[0]),
        created_at=now,
        updated_at=now,
    )


def retry_delay_seconds(
    attempts_made: int, schedule: Sequence[float], *, jitter: float, retry_after_seconds: float | None = None
) -> float:
    """Seconds before attempt `attempts_made + 1`. `jitter` ∈ [0, 1) is drawn by the caller and
    moves the step by up to ±JITTER; a longer `Retry-After` wins (capped at a day)."""
    if attempts_made < 1:
        raise ValueError("attempts_made counts attempts already made and is at least 1")
    if not 0.0 <= jitter < 1.0:
        raise ValueError("jitter must be in [0, 1)")
    step = schedule[min(attempts_made, len(schedule) - 1)]
    delay = step * (1.0 + JITTER * (2.0 * jitter - 1.0))
    if retry_after_seconds is not None and retry_after_seconds > delay:
        delay = min(retry_after_seconds, MAX_RETRY_AFTER_SECONDS)
    return max(delay, 0.0)


def record_attempt(
    delivery: WebhookDelivery,
    result: AttemptResult,
    *,
    now: datetime,
    schedule: Sequence[float],
    jitter: float,
) -> tuple[WebhookDelivery, AttemptOutcome]:
    """The delivery after one attempt, and what the attempt came to. The lease is released."""
    attempts = delivery.attempts + 1
    error = None if result.error is None else result.error[:MAX_ERROR_LENGTH]
    base = msgspec.structs.replace(
        delivery,
        attempts=attempts,
        last_status_code=result.status_code,
        last_error=error,
        last_attempt_at=now,
        locked_until=None,
        updated_at=now,
    )
    if result.succeeded:
        done = msgspec.structs.replace(
            base, status=DeliveryStatus.SUCCEEDED, delivered_at=now, next_attempt_at=None
        )
        return done, AttemptOutcome.SUCCEEDED
    if result.gone or attempts >= delivery.max_attempts:
        failed = msgspec.structs.replace(base, status=DeliveryStatus.FAILED, next_attempt_at=None)
        return failed, AttemptOutcome.GONE if result.gone else AttemptOutcome.FAILED
    delay = retry_delay_seconds(
        attempts, schedule, jitter=jitter, retry_after_seconds=result.retry_after_seconds
    )
    retrying = msgspec.structs.replace(base, next_attempt_at=now + timedelta(seconds=delay))
    return retrying, AttemptOutcome.RETRYING


def retried_by_hand(delivery: WebhookDelivery, now: datetime, lease_until: datetime) -> WebhookDelivery:
    """A finished delivery made pending again for one more attempt, now (the owner asked), and
    dispatched at once: leased until `lease_until` for the job that makes the attempt."""
    return msgspec.structs.replace(
        delivery,
        status=DeliveryStatus.PENDING,
        max_attempts=delivery.attempts + 1,
        next_attempt_at=now,
        delivered_at=None,
        locked_until=lease_until,
        updated_at=now,
    )


def canceled(delivery: WebhookDelivery, reason: str, now: datetime) -> WebhookDelivery:
    return msgspec.structs.replace(
        delivery,
        status=DeliveryStatus.CANCELED,
        last_error=reason[:MAX_ERROR_LENGTH],
        next_attempt_at=None,
        locked_until=None,
        updated_at=now,
    )


def parse_schedule(text: str) -> tuple[float, ...]:
    """A schedule from configuration: comma-separated seconds, first usually 0; ValueError if bad."""
    try:
        steps = tuple(float(part) for part in text.split(","))
    except ValueError as exc:
        raise ValueError("the retry schedule must be comma-separated seconds, like 0,5,300") from exc
    if not steps or any(step < 0 or step != step or step == float("inf") for step in steps):
        raise ValueError("the retry schedule needs at least one step, each 0 or more seconds")
    return steps
