"""The circuit breaker rule: when calls may go to a failing dependency."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from core.circuit_breaker import BreakerState, CircuitBreaker


def tripped(threshold: int = 3, reset: float = 5.0, now: float = 100.0) -> CircuitBreaker:
    breaker = CircuitBreaker(failure_threshold=threshold, reset_after_seconds=reset)
    for _ in range(threshold):
        assert breaker.allows(now)
        breaker.record_failure(now)
    return breaker


def test_a_new_breaker_is_closed_and_allows_calls() -> None:
    breaker = CircuitBreaker()
    assert breaker.is_closed
    assert all(breaker.allows(float(t)) for t in range(10))


def test_it_opens_after_the_threshold_of_consecutive_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    breaker.record_failure(1.0)
    breaker.record_failure(1.0)
    assert breaker.is_closed
    breaker.record_failure(1.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows(1.0)


def test_a_success_resets_the_count_of_failures() -> None:
    breaker = CircuitBreaker(failure_threshold=3)
    for _ in range(5):
        breaker.record_failure(1.0)
        breaker.record_failure(1.0)
        breaker.record_success()
    assert breaker.is_closed


def test_after_the_reset_time_one_trial_goes_through() -> None:
    breaker = tripped(reset=5.0, now=100.0)
    assert not breaker.allows(104.9)
    assert breaker.allows(105.0)
    assert breaker.state is BreakerState.HALF_OPEN
    assert not breaker.allows(105.0)  # only one trial at a time
    assert not breaker.allows(200.0)


def test_a_successful_trial_closes_it() -> None:
    breaker = tripped(now=100.0)
    assert breaker.allows(105.0)
    breaker.record_success()
    assert breaker.is_closed
    assert breaker.allows(105.0)
    assert breaker.allows(105.0)


def test_a_failed_trial_opens_it_again_from_that_moment() -> None:
    breaker = tripped(reset=5.0, now=100.0)
    assert breaker.allows(107.0)
    breaker.record_failure(107.0)
    assert breaker.state is BreakerState.OPEN
    assert not breaker.allows(111.0)
    assert breaker.allows(112.0)


def test_an_abandoned_trial_lets_the_next_caller_try() -> None:
    breaker = tripped(now=100.0)
    assert breaker.allows(105.0)
    breaker.record_abandoned()
    assert breaker.state is BreakerState.HALF_OPEN
    assert breaker.allows(105.0)


@given(threshold=st.integers(1, 10), failures=st.integers(0, 30))
def test_it_is_open_exactly_when_the_threshold_was_reached(threshold: int, failures: int) -> None:
    breaker = CircuitBreaker(failure_threshold=threshold)
    for _ in range(failures):
        breaker.record_failure(0.0)
    assert breaker.is_closed == (failures < threshold)


class BreakerMachine(RuleBasedStateMachine):
    """Random interleavings of time, calls and outcomes; the invariants must always hold."""

    def __init__(self) -> None:
        super().__init__()
        self.breaker = CircuitBreaker(failure_threshold=3, reset_after_seconds=5.0)
        self.now = 0.0
        self.failures_since_success = 0
        self.failed_while_not_closed = False
        self.allowed_since_outcome = 0

    @rule(seconds=st.floats(min_value=0, max_value=8, allow_nan=False))
    def time_passes(self, seconds: float) -> None:
        self.now += seconds

    @rule()
    def ask(self) -> None:
        breaker = self.breaker
        state, opened_at = breaker.state, breaker.opened_at
        allowed = breaker.allows(self.now)
        if state is BreakerState.CLOSED:
            assert allowed
        elif state is BreakerState.OPEN and self.now - opened_at < breaker.reset_after_seconds:
            assert not allowed, "allowed a call while open, before the reset time"
        elif state is BreakerState.OPEN:
            assert allowed, "the reset time passed but no trial was allowed"
        if allowed and not breaker.is_closed:
            self.allowed_since_outcome += 1
            assert self.allowed_since_outcome == 1, "more than one half-open trial at a time"

    @rule()
    def success(self) -> None:
        self.breaker.record_success()
        self.failures_since_success = 0
        self.failed_while_not_closed = False
        self.allowed_since_outcome = 0

    @rule()
    def failure(self) -> None:
        if not self.breaker.is_closed:
            self.failed_while_not_closed = True
        self.breaker.record_failure(self.now)
        self.failures_since_success += 1
        self.allowed_since_outcome = 0

    @precondition(lambda self: self.breaker.state is BreakerState.HALF_OPEN)
    @rule()
    def abandon(self) -> None:
        self.breaker.record_abandoned()
        self.allowed_since_outcome = 0

    @invariant()
    def opens_only_after_enough_failures(self) -> None:
        if self.failures_since_success >= self.breaker.failure_threshold:
            assert not self.breaker.is_closed
        elif not self.failed_while_not_closed:
            assert self.breaker.is_closed

    @invariant()
    def never_opened_in_the_future(self) -> None:
        assert self.breaker.opened_at <= self.now


BreakerMachine.TestCase.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)
test_breaker_state_machine = BreakerMachine.TestCase
