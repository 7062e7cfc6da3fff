"""Domain events as they are stored in the transactional outbox."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class OutboxMessage(msgspec.Struct, frozen=True, kw_only=True):
    """An event written in the same transaction as the state change that caused it.

    `position` is assigned by the store and orders publication; it is 0 until stored.
    """

    id: str
    type: str
    occurred_at: datetime
    payload: dict[str, Any]
    correlation_id: str | None = None
    position: int = 0
    published_at: datetime | None = None
