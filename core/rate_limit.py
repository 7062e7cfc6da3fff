"""GCRA (the generic cell rate algorithm): a rate limit as one number per key, its TAT.

Pure: state (the theoretical arrival time) + now + the limit → decision and new state. The Valkey
adapter runs the same arithmetic in one Lua script; a property test keeps the two equal.
"""

from __future__ import annotations

import math

import msgspec


class RateLimit(msgspec.Struct, frozen=True, kw_only=True):
    """`requests` per `period_seconds`, with bursts of up to `burst` at once."""

    requests: int
    period_seconds: float
    burst: int

    def __post_init__(self) -> None:
        if self.requests < 1 or self.period_seconds <= 0 or self.burst < 1:
            raise ValueError("a rate limit needs requests >= 1, period > 0 and burst >= 1")

    @property
    def emission_interval(self) -> float:
        return self.period_seconds / self.requests

    @property
    def tolerance(self) -> float:
        return self.emission_interval * self.burst


class RateLimitDecision(msgspec.Struct, frozen=True, kw_only=True):
    allowed: bool
    limit: int  # the burst: how many requests may arrive at once
    remaining: int
    retry_after_seconds: float  # 0 when allowed
    reset_after_seconds: float  # until the bucket is full again


def gcra(
    tat: float | None, now: float, limit: RateLimit, cost: int = 1
) -> tuple[RateLimitDecision, float | None]:
    """Decide one request of weight `cost` at `now` (seconds); returns the decision and the new TAT.

    A denied request leaves the state unchanged (returned as the old TAT).
    """
    interval = limit.emission_interval
    tolerance = limit.tolerance
    current = now if tat is None or tat < now else tat
    new_tat = current + interval * cost
    allow_at = new_tat - tolerance
    if now < allow_at:
        retry_after = allow_at - now
        reset_after = max(0.0, current - now)
        remaining = _remaining(current, now, interval, tolerance)
        return RateLimitDecision(
            allowed=False,
            limit=limit.burst,
            remaining=remaining,
            retry_after_seconds=retry_after,
            reset_after_seconds=reset_after,
        ), tat
    return RateLimitDecision(
        allowed=True,
        limit=limit.burst,
        remaining=_remaining(new_tat, now, interval, tolerance),
        retry_after_seconds=0.0,
        reset_after_seconds=new_tat - now,
    ), new_tat


def _remaining(tat: float, now: float, interval: float, tolerance: float) -> int:
    return max(0, math.floor((tolerance - (tat - now)) / interval + 1e-9))
