"""What an upgrade within a period costs (pure, integer arithmetic only).

The user paid the old plan's price for the whole period; moving up, they owe the price difference
for the part of the period that is left. Time is counted in whole microseconds and the amount is
rounded down to the cent, so the customer is never charged a fraction more than they owe.
"""

from __future__ import annotations

from datetime import datetime, timedelta

_MICROSECOND = timedelta(microseconds=1)


def prorate_upgrade(
    old_price_cents: int,
    new_price_cents: int,
    period_start: datetime,
    period_end: datetime,
    at: datetime,
) -> int:
    """floor((new - old) × remaining / total) cents, remaining clamped to [0, total].

    The whole difference at (or before) the period's start, nothing at (or after) its end, and
    nothing when the new plan does not cost more.
    """
    if old_price_cents < 0 or new_price_cents < 0:
        raise ValueError("prices are never negative")
    if period_end <= period_start:
        raise ValueError("a period ends after it starts")
    difference = new_price_cents - old_price_cents
    if difference <= 0:
        return 0
    total = (period_end - period_start) // _MICROSECOND
    remaining = min(max((period_end - at) // _MICROSECOND, 0), total)
    return difference * remaining // total
