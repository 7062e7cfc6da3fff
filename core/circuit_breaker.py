"""A circuit breaker as a pure state machine: facts in (`now`, success or failure), decision out.

Closed: calls go through. After `failure_threshold` consecutive failures it opens: calls are
skipped for `reset_after_seconds`. Then it is half-open: one trial call goes through; success
closes it, failure opens it again. A trial that ends with neither (the caller was cancelled) is
`record_abandoned`: the next caller may try instead, so a lost trial never jams the breaker.
"""

from __future__ import annotations

from enum import StrEnum

import msgspec


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker(msgspec.Struct, kw_only=True):
    failure_threshold: int = 3
    reset_after_seconds: float = 5.0
    state: BreakerState = BreakerState.CLOSED
    consecutive_failures: int = 0
    opened_at: float = 0.0
    trial_in_flight: bool = False

    def allows(self, now: float) -> bool:
        """Whether a call may go to the protected dependency now."""
        if self.state is BreakerState.CLOSED:
            return True
        if self.state is BreakerState.OPEN and now - self.opened_at >= self.reset_after_seconds:
            self.state = BreakerState.HALF_OPEN
            self.trial_in_flight = False
        if self.state is BreakerState.HALF_OPEN and not self.trial_in_flight:
            self.trial_in_flight = True
            return True
        return False

    @property
    def is_closed(self) -> bool:
        """Whether calls flow normally (not open and not waiting on a trial)."""
        return self.state is BreakerState.CLOSED

    def record_success(self) -> None:
        self.state = BreakerState.CLOSED
        self.consecutive_failures = 0
        self.trial_in_flight = False

    def record_failure(self, now: float) -> None:
        self.consecutive_failures += 1
        self.trial_in_flight = False
        if self.state is BreakerState.HALF_OPEN or self.consecutive_failures >= self.failure_threshold:
            self.state = BreakerState.OPEN
            self.opened_at = now

    def record_abandoned(self) -> None:
        """A call that was allowed ended without an outcome: free the half-open trial slot."""
        self.trial_in_flight = False
