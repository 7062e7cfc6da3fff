"""Checks and conversions the in-memory repositories share, so that they accept and refuse exactly
what PostgreSQL does (ids as `uuid` prints them, timezone-aware times, non-negative limits)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from core.identifiers import is_id


def canonical_or_none(text: str) -> str | None:
    """The id as PostgreSQL prints a `uuid`, or None when it is not an id (it then matches nothing)."""
    return str(uuid.UUID(text)) if is_id(text) else None


def check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError("limit must not be negative")


def utc(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment.astimezone(UTC)


def utc_or_none(moment: datetime | None, name: str) -> datetime | None:
    return None if moment is None else utc(moment, name)
