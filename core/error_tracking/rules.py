"""When to alert: a failure rate over its threshold on enough volume, at most once per cooldown.

Two kinds of alerts: the 5xx rate of HTTP responses (`http_5xx_rate`) and the failure rate of each
job queue (`job_failure_rate:<queue>`). An alert is *active* while its rate is over the threshold
on at least `min_volume` requests or jobs in the window (one error out of one request is not an
outage); an active alert is *sent* only when its cooldown allows, so a long incident makes one alert
per cooldown, not one per check.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import msgspec

from core.error_tracking.model import Totals, WindowTotals
from core.error_tracking.window import SlidingWindow

HTTP_5XX_RATE: Final = "http_5xx_rate"
JOB_FAILURE_RATE: Final = "job_failure_rate"


def job_alert(queue: str) -> str:
    """The name of a queue's failure-rate alert."""
    return f"{JOB_FAILURE_RATE}:{queue}"


class AlertRules(msgspec.Struct, frozen=True, kw_only=True):
    """Thresholds are rates in [0, 1): an alert needs a rate strictly above its threshold (0 alerts
    on any failure)."""

    window: SlidingWindow
    http_5xx_rate: float
    job_failure_rate: float
    min_volume: int
    cooldown_seconds: int

    def __post_init__(self) -> None:
        for name in ("http_5xx_rate", "job_failure_rate"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ValueError(f"{name} must be at least 0 and below 1")
        if self.min_volume < 1:
            raise ValueError("min_volume must be at least 1")
        if self.cooldown_seconds < 1:
            raise ValueError("cooldown_seconds must be at least 1")


class AlertCheck(msgspec.Struct, frozen=True, kw_only=True):
    """One alert rule applied to a window's totals."""

    alert: str
    queue: str | None  # the job queue of a job alert
    active: bool
    failed: int
    total: int
    rate: float
    threshold: float


def crosses(totals: Totals, *, threshold: float, min_volume: int) -> bool:
    """Whether `totals` show a failure rate above `threshold` on at least `min_volume` runs."""
    return totals.total >= min_volume and totals.rate > threshold


def evaluate(rules: AlertRules, totals: WindowTotals) -> list[AlertCheck]:
    """Every alert rule against the window's totals: the 5xx rate first, then each queue seen in
    the window, by name."""
    checks = [_check(HTTP_5XX_RATE, None, totals.http, rules.http_5xx_rate, rules.min_volume)]
    for queue in sorted(totals.jobs):
        checks.append(
            _check(job_alert(queue), queue, totals.jobs[queue], rules.job_failure_rate, rules.min_volume)
        )
    return checks


def _check(alert: str, queue: str | None, totals: Totals, threshold: float, min_volume: int) -> AlertCheck:
    return AlertCheck(
        alert=alert,
        queue=queue,
        active=crosses(totals, threshold=threshold, min_volume=min_volume),
        failed=totals.failed,
        total=totals.total,
        rate=totals.rate,
        threshold=threshold,
    )


def claim_cooldown(held_until: datetime | None, now: datetime, cooldown_seconds: float) -> datetime | None:
    """The cooldown rule: an alert may go out at `now` unless a previous one's cooldown holds until
    after `now`. Returns the new end of the cooldown when it may (the caller stores it), else None.

    ErrorLog adapters apply this atomically, so that of all processes checking at once one alerts.
    """
    if held_until is not None and now < held_until:
        return None
    return now + timedelta(seconds=cooldown_seconds)
