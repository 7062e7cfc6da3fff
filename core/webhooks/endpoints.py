"""Webhook endpoints: where a user wants events delivered, and which ones (pure rules)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum

import msgspec

from core.errors import DomainError, ErrorCode, FieldError
from core.events import EVENT_TYPES
from core.webhooks.targets import ParsedTarget, check_target_url, forbidden_address

MAX_ENDPOINTS_PER_USER = 20


class EndpointStatus(StrEnum):
    ACTIVE = "active"
    DISABLED = "disabled"  # the receiver answered 410 Gone, or its owner turned it off


class WebhookEndpoint(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    url: str
    events: tuple[str, ...] = ()  # empty: every event type
    status: EndpointStatus = EndpointStatus.ACTIVE
    disabled_reason: str | None = None
    created_at: datetime
    updated_at: datetime

    def wants(self, event_type: str) -> bool:
        return self.status is EndpointStatus.ACTIVE and (not self.events or event_type in self.events)


def event_filter(events: Sequence[str] | None) -> tuple[str, ...]:
    """The endpoint's event filter, checked and de-duplicated; empty means every type."""
    if not events:
        return ()
    unknown = sorted({e for e in events if e not in EVENT_TYPES})
    if unknown:
        raise DomainError(
            ErrorCode.VALIDATION_FAILED,
            f"Unknown event type(s): {', '.join(unknown)}",
            errors=[FieldError("events", f"Known event types: {', '.join(EVENT_TYPES)}", "invalid_choice")],
        )
    return tuple(dict.fromkeys(events))


def checked_target(url: str, *, allow_private: bool) -> ParsedTarget:
    """A target URL that passed the static SSRF rules (scheme, shape, literal addresses), or
    DomainError(unsafe_url). Host names are resolved and checked again at every delivery."""
    try:
        target = check_target_url(url, allow_http=allow_private)
    except ValueError as exc:
        raise DomainError(ErrorCode.UNSAFE_URL, f"Webhook URL refused: {exc}") from exc
    if target.ip_literal is not None:
        reason = forbidden_address(target.ip_literal, allow_private=allow_private)
        if reason is not None:
            raise DomainError(ErrorCode.UNSAFE_URL, f"Webhook URL refused: {target.host} is a {reason}")
    return target
