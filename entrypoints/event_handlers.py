"""In-process handlers of published domain events (the outbox publisher calls them in order)."""

from __future__ import annotations

import logging

from prometheus_client import Counter

from core.outbox import OutboxMessage
from core.use_cases.publish_outbox import EventHandler

log = logging.getLogger("pictor.events")

EVENTS_PUBLISHED = Counter(
    "pictor_events_published_total", "Domain events published from the outbox", ["type"]
)


async def count_event(message: OutboxMessage) -> None:
    EVENTS_PUBLISHED.labels(message.type).inc()


async def log_event(message: OutboxMessage) -> None:
    log.info(
        "event published",
        extra={"event_id": message.id, "event_type": message.type, "correlation_id": message.correlation_id},
    )


EVENT_HANDLERS: tuple[EventHandler, ...] = (count_event, log_event)
