"""GCRA (the generic cell rate algorithm): a rate limit as one number per key, its TAT.

Pure: state (the theoretical arrival time) + now + the limit → decision and new state. The Valkey
adapter runs the same arithmetic in one Lua script; a property test keeps the two equal.

Times are whole microseconds (ints), not float seconds. With floats the sums drift: at
`now = 1000.0` a limit of 10 per second with a burst of 10 allowed only 9 requests at once,
because ten additions of 0.1 overshoot the tolerance by one rounding step. Integers are exact, and
Lua's doubles hold them exactly up to 2**53 µs (past the year 2255 as Unix time), so the script's
decisions are identical to these, not merely close.
"""

from __future__ import annotations

import math
from typing import Final

import msgspec

MICROSECONDS_PER_SECOND: Final = 1_000_000


def to_microseconds(seconds: float) -> int:
    """`seconds` as the nearest whole number of microseconds, the rule's unit of time."""
    return round(seconds * MICROSECONDS_PER_SECOND)


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """`requests` per `period_seconds`, with bursts of up to `burst` at once."""

    requests: int
    period_seconds: float
    burst: int

    def __post_init__(self) -> None:
        if (
            self.requests < 1
            or not (self.period_seconds > 0 and math.isfinite(self.period_seconds))
            or self.burst < 1
        ):
            raise ValueError("a rate limit needs requests >= 1, a finite period > 0 and burst >= 1")

    @property
    def emission_interval(self) -> float:
        """Seconds between two requests at the sustained rate."""
        return self.period_seconds / self.requests

    @property
    def tolerance(self) -> float:
        """Seconds of requests that may be booked ahead of now (the burst's worth)."""
        return self.emission_interval * self.burst

    @property
    def emission_interval_us(self) -> int:
        """The emission interval in whole microseconds, at least 1.

        Rounded up, so the long-run rate never exceeds `requests` per `period_seconds` (it can fall
        short by less than one request per microsecond of period, i.e. not measurably).
        """
        period_us = max(1, to_microseconds(self.period_seconds))
        return -(-period_us // self.requests)

    @property
    def tolerance_us(self) -> int:
        return self.emission_interval_us * self.burst


class RateLimitDecision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    limit: int  # the burst: how many requests may arrive at once
    remaining: int  # unit-cost requests that would still be allowed right now
    retry_after_seconds: float  # 0 when allowed; else when this request (same cost) would be allowed
    reset_after_seconds: float  # until the bucket is full again

    @classmethod
    def from_microseconds(
        cls, *, allowed: bool, limit: int, remaining: int, retry_after_us: int, reset_after_us: int
    ) -> RateLimitDecision:
        """A decision from the rule's integer figures (also how the Valkey script's reply is read)."""
        return cls(
            allowed=allowed,
            limit=limit,
            remaining=remaining,
            retry_after_seconds=retry_after_us / MICROSECONDS_PER_SECOND,
            reset_after_seconds=reset_after_us / MICROSECONDS_PER_SECOND,
        )


def check_cost(limit: RateLimit, cost: int) -> None:
    """Raise ValueError unless 1 <= cost <= limit.burst.

    A request costing more than the burst could never be allowed, however long it waited; that is
    a caller's mistake, not a decision to report.
    """
    if not 1 <= cost <= limit.burst:
        raise ValueError(f"a request's cost must be between 1 and the burst ({limit.burst}), got {cost}")


def gcra(tat: int | None, now: int, limit: RateLimit, cost: int = 1) -> tuple[RateLimitDecision, int | None]:
    """Decide one request of weight `cost` at `now`; returns the decision and the new TAT.

    `tat` and `now` are microseconds on one clock (a process's monotonic clock, or the Valkey
    server's). `tat` None (or any value not after `now`) means a full bucket: `burst` unit requests
    are allowed at once, then one per emission interval. A denied request leaves the state
    unchanged (the old TAT is returned). To peek, call this and discard the new TAT: the decision
    is the one a hit would get. Raises ValueError for a cost outside 1..burst (see `check_cost`).
    """
    check_cost(limit, cost)
    interval = limit.emission_interval_us
    tolerance = limit.tolerance_us
    current = now if tat is None or tat < now else tat
    new_tat = current + interval * cost
    allow_at = new_tat - tolerance
    if now < allow_at:
        denied = RateLimitDecision.from_microseconds(
            allowed=False,
            limit=limit.burst,
            remaining=_remaining(current - now, interval, tolerance),
            retry_after_us=allow_at - now,
            reset_after_us=current - now,
        )
        return denied, tat
    allowed = RateLimitDecision.from_microseconds(
        allowed=True,
        limit=limit.burst,
        remaining=_remaining(new_tat - now, interval, tolerance),
        retry_after_us=0,
        reset_after_us=new_tat - now,
    )
    return allowed, new_tat


def _remaining(booked_us: int, interval: int, tolerance: int) -> int:
    # Negative when the key was last used with a larger burst than this limit's.
    return max(0, (tolerance - booked_us) // interval)
