"""The rules of the webhook tables (their CHECK constraints), in one place: the PostgreSQL
repositories check them before any SQL runs, and the in-memory fakes refuse what PostgreSQL would."""

from __future__ import annotations

from core.webhooks.deliveries import DeliveryStatus, WebhookDelivery
from core.webhooks.endpoints import EndpointStatus, WebhookEndpoint
from core.webhooks.targets import MAX_URL_LENGTH


def check_url(url: str) -> None:
    if not 1 <= len(url) <= MAX_URL_LENGTH:
        raise ValueError(f"a webhook URL has 1..{MAX_URL_LENGTH} characters")


def check_endpoint_row(endpoint: WebhookEndpoint) -> None:
    """ValueError where `webhook_endpoints` would refuse the row."""
    EndpointStatus(endpoint.status)
    check_url(endpoint.url)


def check_delivery_row(delivery: WebhookDelivery) -> None:
    """ValueError where `webhook_deliveries` would refuse the row."""
    status = DeliveryStatus(delivery.status)
    check_url(delivery.url)
    if delivery.attempts < 0:
        raise ValueError("attempts must not be negative")
    if delivery.max_attempts < 1:
        raise ValueError("max_attempts must be at least 1")
    if status is DeliveryStatus.PENDING and delivery.next_attempt_at is None:
        raise ValueError("a pending delivery needs next_attempt_at")
