"""Webhook fan-out: the outbox handler that turns each published event into deliveries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

from core.events import DomainEvent, GenerationCanceled, GenerationFailed, GenerationSucceeded, event_type
from core.ports import Clock, Ids
from core.use_cases.publish_outbox import Publication
from core.webhooks.deliveries import WebhookDelivery, new_delivery


def webhook_data(event: DomainEvent) -> dict[str, Any]:
    """The thin `data` of the event's webhook body: ids and figures, no image bytes (links to a
    succeeded generation's images are signed when each attempt is sent, so they are fresh)."""
    if isinstance(event, GenerationSucceeded | GenerationFailed | GenerationCanceled):
        data: dict[str, Any] = {
            "id": event.data.generation_id,
            "status": event.data.status,
            "n": event.data.n,
        }
        if event.data.error is not None:
            data["error"] = msgspec.to_builtins(event.data.error)
        return data
    builtins: dict[str, Any] = msgspec.to_builtins(event.data)
    return builtins


class WebhookFanOut:
    """For each event: one delivery per active endpoint of its user that wants the type, and one to
    a generation's own `webhook_url`. Written in the publishing transaction, so they exist exactly
    when the event counts as published; re-publishing adds nothing (deliveries are unique per
    event and target). The dispatcher sends them. A batch costs two statements, whatever its size:
    one read of its users' endpoints, one (pipelined) insert of its deliveries."""

    def __init__(self, *, ids: Ids, clock: Clock, schedule: Sequence[float]) -> None:
        self._ids = ids
        self._clock = clock
        self._schedule = tuple(schedule)

    async def handle_batch(self, events: Sequence[DomainEvent], publication: Publication) -> None:
        uow = publication.uow
        endpoints = await uow.webhook_endpoints.list_active_for_users(sorted({e.user_id for e in events}))
        now = self._clock.now()
        deliveries: list[WebhookDelivery] = []
        for event in events:
            type_ = event_type(event)
            targets: list[tuple[str | None, str]] = [
                (endpoint.id, endpoint.url)
                for endpoint in endpoints.get(event.user_id, ())
                if endpoint.wants(type_)
            ]
            if (
                isinstance(event, GenerationSucceeded | GenerationFailed | GenerationCanceled)
                and event.data.webhook_url
            ):
                targets.append((None, event.data.webhook_url))
            data = webhook_data(event) if targets else {}
            deliveries.extend(
                new_delivery(
                    id=self._ids.new_id(),
                    user_id=event.user_id,
                    endpoint_id=endpoint_id,
                    url=url,
                    event_id=event.id,
                    event_type=type_,
                    event_occurred_at=event.occurred_at,
                    data=data,
                    schedule=self._schedule,
                    now=now,
                )
                for endpoint_id, url in targets
            )
        if deliveries:
            await uow.webhook_deliveries.add_many(deliveries)
