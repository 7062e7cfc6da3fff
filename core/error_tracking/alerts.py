"""The alert: what crossed which threshold, and the errors behind it; and its signed ops webhook.

The webhook is a Standard Webhooks message like Pictor's other webhooks: body
`{"type": "ops.alert", "timestamp": ..., "data": <Alert>}`, headers `webhook-id` (the alert's id),
`webhook-timestamp` and `webhook-signature`, signed with every version of the secret
`ops_webhook_secret` the Secrets port still accepts, so a receiver that knows either the old or
the new version during a rotation verifies it.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from datetime import datetime
from typing import Final

import msgspec

from core.error_tracking.model import ErrorCount, RecentErrors, SourceKind
from core.error_tracking.rules import AlertCheck, AlertRules
from core.webhooks.signing import MIN_SECRET_BYTES, SECRET_PREFIX, secret_key, signature_header

OPS_WEBHOOK_SECRET: Final = "ops_webhook_secret"  # in the Secrets port, like the other signing keys
ALERT_EVENT_TYPE: Final = "ops.alert"
TOP_ERRORS: Final = 5  # error cells listed in an alert


class AlertError(msgspec.Struct, frozen=True, kw_only=True):
    """One of the error cells behind an alert."""

    source: str  # "GET /v1/me" or a job function
    queue: str | None
    code: str
    status: int | None
    count: int
    last_correlation_ids: tuple[str, ...]


class Alert(msgspec.Struct, frozen=True, kw_only=True):
    """An alert that went out: logged, counted and sent to the ops webhook."""

    id: str
    alert: str  # http_5xx_rate, job_failure_rate:<queue>
    queue: str | None
    summary: str
    rate: float
    threshold: float
    failed: int
    total: int
    window_seconds: int
    cooldown_seconds: int
    triggered_at: datetime
    top_errors: tuple[AlertError, ...] = ()


def build_alert(
    check: AlertCheck, recent: RecentErrors, *, rules: AlertRules, id: str, now: datetime
) -> Alert:
    """The alert for an active check, with the window's most frequent errors behind it: 5xx cells
    for the 5xx rate, the queue's failed jobs for a queue."""
    if check.queue is None:
        behind = [e for e in recent.errors if e.source.kind is SourceKind.HTTP and e.status >= 500]
        what = "HTTP 5xx rate"
    else:
        behind = [
            e for e in recent.errors if e.source.kind is SourceKind.JOB and e.source.queue == check.queue
        ]
        what = f"job failure rate of queue {check.queue}"
    window = rules.window.covered_seconds
    return Alert(
        id=id,
        alert=check.alert,
        queue=check.queue,
        summary=(
            f"{what} is {check.rate:.1%} ({check.failed} of {check.total}) over the last {window} s, "
            f"above the {check.threshold:.1%} threshold"
        ),
        rate=check.rate,
        threshold=check.threshold,
        failed=check.failed,
        total=check.total,
        window_seconds=window,
        cooldown_seconds=rules.cooldown_seconds,
        triggered_at=now,
        top_errors=tuple(_alert_error(e) for e in sorted(behind, key=lambda e: -e.count)[:TOP_ERRORS]),
    )


def _alert_error(error: ErrorCount) -> AlertError:
    job = error.source.kind is SourceKind.JOB
    return AlertError(
        source=error.source.name,
        queue=error.source.queue if job else None,
        code=error.code,
        status=None if job else error.status,
        count=error.count,
        last_correlation_ids=error.correlation_ids,
    )


def alert_body(alert: Alert) -> bytes:
    """The webhook body: the envelope of Pictor's webhooks around the alert."""
    return msgspec.json.encode({"type": ALERT_EVENT_TYPE, "timestamp": alert.triggered_at, "data": alert})


def signing_secret(value: str) -> str | None:
    """The `whsec_…` secret a version of `ops_webhook_secret` signs with, None when it cannot sign.

    A `whsec_…` value is used as Standard Webhooks defines it (base64 of the key). Any other value
    (as `pictor secrets rotate` generates) is itself the key, its UTF-8 bytes: a receiver verifies
    with `Webhook(value.encode())`, or with `whsec_` + base64 of those bytes. Either way the key
    holds at least 24 bytes.
    """
    if value.startswith(SECRET_PREFIX):
        try:
            secret_key(value)
        except ValueError:
            return None
        return value
    raw = value.encode()
    if len(raw) < MIN_SECRET_BYTES:
        return None
    return SECRET_PREFIX + base64.b64encode(raw).decode("ascii")


def signing_secrets(values: Sequence[str]) -> list[str]:
    """The usable versions of `ops_webhook_secret` as `whsec_…` secrets, in the given order; one
    that cannot sign is skipped so that it cannot stop the others."""
    return [secret for secret in map(signing_secret, values) if secret is not None]


def alert_headers(alert: Alert, body: bytes, secrets: Sequence[str], timestamp: int) -> dict[str, str]:
    """Standard Webhooks headers for `body`, signed with each of `secrets` (ValueError without one)."""
    return {
        "webhook-id": alert.id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(secrets, alert.id, timestamp, body),
        "content-type": "application/json",
    }
