"""The outbox publisher's handlers, in the order they run for each published event: metrics and
logs (here, since the core owns no prometheus), the audit trail, quota notices, webhook fan-out."""

from __future__ import annotations

import logging

import svcs
from prometheus_client import Counter

from core.event_handlers import audit_billing_changes, schedule_quota_notices
from core.events import DomainEvent, event_type
from core.use_cases.publish_outbox import EventHandler, Publication
from entrypoints.use_cases import webhook_fan_out_from

log = logging.getLogger("pictor.events")

EVENTS_PUBLISHED = Counter(
    "pictor_events_published_total", "Domain events published from the outbox", ["type"]
)


async def count_event(event: DomainEvent, publication: Publication) -> None:
    EVENTS_PUBLISHED.labels(event_type(event)).inc()


async def log_event(event: DomainEvent, publication: Publication) -> None:
    log.info(
        "event published",
        extra={
            "event_id": event.id,
            "event_type": event_type(event),
            "user_id": event.user_id,
            "correlation_id": event.correlation_id,
        },
    )


async def event_handlers_from(container: svcs.Container) -> tuple[EventHandler, ...]:
    return (
        count_event,
        log_event,
        audit_billing_changes,
        schedule_quota_notices,
        await webhook_fan_out_from(container),
    )
