"""Monthly billing periods anchored on a day of the month (pure).

A subscription that starts on the 31st renews on the last day of shorter months and returns to the
31st when the month has one: Jan 31 → Feb 28 (29) → Mar 31 → Apr 30 → May 31. The anchor is never
stored: `anchor_day_of` reads it back from a monthly period (any two consecutive months include one
of 31 days, so the larger of the two days is the anchor). Periods keep the time of day of their
start, in the start's time zone (UTC throughout Pictor).
"""

from __future__ import annotations

import calendar
from datetime import datetime


def days_in_month(year: int, month: int) -> int:
    return calendar.monthrange(year, month)[1]


def anchored_day(year: int, month: int, anchor_day: int) -> int:
    """The day of `month` a period anchored on `anchor_day` starts or ends: clamped to the month."""
    return min(anchor_day, days_in_month(year, month))


def next_period_end(start: datetime, anchor_day: int) -> datetime:
    """The end of the monthly period that starts at `start`: the anchor day of the next month.

    `start` must itself fall on the anchor (clamped to its month), as every period start does;
    anything else is a programming error.
    """
    if not 1 <= anchor_day <= 31:
        raise ValueError(f"anchor_day must be 1-31, got {anchor_day}")
    if start.day != anchored_day(start.year, start.month, anchor_day):
        raise ValueError(f"{start.isoformat()} does not fall on anchor day {anchor_day}")
    year, month = (start.year + 1, 1) if start.month == 12 else (start.year, start.month + 1)
    return start.replace(year=year, month=month, day=anchored_day(year, month, anchor_day))


def first_period_end(start: datetime) -> datetime:
    """The end of a first monthly period starting at `start` (anchored on its own day)."""
    return next_period_end(start, start.day)


def anchor_day_of(period_start: datetime, period_end: datetime) -> int:
    """The anchor of the period that follows [period_start, period_end).

    A monthly period gives back its anchor; any other span (a trial, a grace period) anchors the
    months that follow on the day it ends.
    """
    candidate = max(period_start.day, period_end.day)
    if period_start.day == anchored_day(period_start.year, period_start.month, candidate) and (
        next_period_end(period_start, candidate) == period_end
    ):
        return candidate
    return period_end.day


def following_period(period_start: datetime, period_end: datetime) -> tuple[datetime, datetime]:
    """The monthly period right after [period_start, period_end)."""
    return period_end, next_period_end(period_end, anchor_day_of(period_start, period_end))
