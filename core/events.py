"""Domain events: what happened, as a tagged union of msgspec Structs.

Use cases build an event and write it to the outbox in the transaction of the state change that
caused it (`to_outbox`); the publisher reads it back (`from_outbox`) and hands the typed event to
in-process handlers. Every event has an id, a type (the union's tag), a time, the correlation id
of the request or job that caused it, the user it belongs to (whose webhooks receive it) and a
thin `data` payload: ids and figures, never image bytes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec

from core.outbox import OutboxMessage

GENERATION_SUCCEEDED = "generation.succeeded"
GENERATION_FAILED = "generation.failed"
GENERATION_CANCELED = "generation.canceled"
SUBSCRIPTION_UPDATED = "subscription.updated"
QUOTA_THRESHOLD_REACHED = "quota.threshold_reached"


class EventError(msgspec.Struct, frozen=True, kw_only=True):
    code: str
    message: str


class GenerationData(msgspec.Struct, frozen=True, kw_only=True):
    generation_id: str
    status: str
    n: int
    images: int = 0  # how many images were stored; webhooks sign links to them when delivering
    error: EventError | None = None
    webhook_url: str | None = None  # the generation's own target (per-request webhooks)


class SubscriptionData(msgspec.Struct, frozen=True, kw_only=True):
    plan: str
    status: str
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    scheduled_plan: str | None = None
    trial_end: datetime | None = None
    events: tuple[str, ...] = ()  # the state machine's events that led here


class QuotaThresholdData(msgspec.Struct, frozen=True, kw_only=True):
    plan: str
    percent: int
    images_used: int
    images_limit: int
    period_start: datetime
    period_end: datetime


class Event(msgspec.Struct, frozen=True, kw_only=True, tag_field="type"):
    id: str
    occurred_at: datetime
    user_id: str
    correlation_id: str | None = None


class GenerationSucceeded(Event, frozen=True, kw_only=True, tag=GENERATION_SUCCEEDED):
    data: GenerationData


class GenerationFailed(Event, frozen=True, kw_only=True, tag=GENERATION_FAILED):
    data: GenerationData


class GenerationCanceled(Event, frozen=True, kw_only=True, tag=GENERATION_CANCELED):
    data: GenerationData


class SubscriptionUpdated(Event, frozen=True, kw_only=True, tag=SUBSCRIPTION_UPDATED):
    data: SubscriptionData


class QuotaThresholdReached(Event, frozen=True, kw_only=True, tag=QUOTA_THRESHOLD_REACHED):
    data: QuotaThresholdData


DomainEvent = (
    GenerationSucceeded | GenerationFailed | GenerationCanceled | SubscriptionUpdated | QuotaThresholdReached
)
GenerationEvent = GenerationSucceeded | GenerationFailed | GenerationCanceled

EVENT_TYPES: tuple[str, ...] = (
    GENERATION_SUCCEEDED,
    GENERATION_FAILED,
    GENERATION_CANCELED,
    SUBSCRIPTION_UPDATED,
    QUOTA_THRESHOLD_REACHED,
)

_ENVELOPE = frozenset({"type", "id", "occurred_at", "correlation_id"})


class UndecodableEvent(Exception):
    """An outbox row that is no event of this version (unknown type or malformed payload)."""


def event_type(event: DomainEvent) -> str:
    tag = type(event).__struct_config__.tag
    assert isinstance(tag, str)
    return tag


def to_outbox(event: DomainEvent) -> OutboxMessage:
    """The outbox row for `event`: the envelope in columns, the rest (`user_id`, `data`) as payload."""
    fields = msgspec.to_builtins(event)
    payload = {key: value for key, value in fields.items() if key not in _ENVELOPE}
    return OutboxMessage(
        id=event.id,
        type=event_type(event),
        occurred_at=event.occurred_at,
        payload=payload,
        correlation_id=event.correlation_id,
    )


def from_outbox(message: OutboxMessage) -> DomainEvent:
    """The typed event in an outbox row; UndecodableEvent when it holds none."""
    fields: dict[str, Any] = {
        **message.payload,
        "type": message.type,
        "id": message.id,
        "occurred_at": message.occurred_at,
        "correlation_id": message.correlation_id,
    }
    try:
        event: DomainEvent = msgspec.convert(fields, DomainEvent)
    except msgspec.ValidationError as exc:
        raise UndecodableEvent(f"outbox message {message.id} ({message.type}): {exc}") from exc
    return event
