"""Checks and conversions the PostgreSQL repositories share for values they bind or read."""

from __future__ import annotations

from datetime import UTC, datetime


def check_limit(limit: int) -> None:
    if limit < 0:
        raise ValueError("limit must not be negative")


def aware(moment: datetime, name: str) -> datetime:
    """`moment`, refused when naive: a naive time would be read in the session's time zone."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment


def aware_or_none(moment: datetime | None, name: str) -> datetime | None:
    return None if moment is None else aware(moment, name)


def utc_or_none(moment: datetime | None) -> datetime | None:
    return None if moment is None else moment.astimezone(UTC)
