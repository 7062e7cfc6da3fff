"""Webhook delivery metrics (issue 6): attempts by outcome, attempt latency, and the lag from an
event to its successful delivery. Recorded from what the `webhooks` job returns."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from core.webhooks.delivery import DeliveryReport

DELIVERY_ATTEMPTS = Counter(
    "pictor_webhook_deliveries_total",
    "Webhook delivery attempts by event type and outcome (succeeded, retrying, failed, gone, canceled)",
    ["event_type", "outcome"],
)
ATTEMPT_DURATION = Histogram(
    "pictor_webhook_delivery_duration_seconds",
    "Time one webhook HTTP attempt took, whatever its outcome",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 15.0),
)
DELIVERY_LAG = Histogram(
    "pictor_webhook_delivery_lag_seconds",
    "Time from an event to its successful delivery (retries included)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0, 7200.0, 86400.0),
)


def observe_delivery(report: DeliveryReport) -> None:
    """Record one `deliver_webhook` job. A duplicate job that found nothing to do is not counted."""
    if report.outcome == "skipped":
        return
    DELIVERY_ATTEMPTS.labels(report.event_type or "unknown", report.outcome).inc()
    if report.duration_seconds is not None:
        ATTEMPT_DURATION.observe(report.duration_seconds)
    if report.lag_seconds is not None:
        DELIVERY_LAG.observe(report.lag_seconds)
