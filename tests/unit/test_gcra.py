"""The pure GCRA rule (`core.rate_limit`): examples, then properties over random request sequences."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.rate_limit import RateLimit, RateLimitDecision, gcra, to_microseconds

SECOND = 1_000_000
# Unix time in µs around 2026 (what the Valkey server's clock gives), and a small monotonic time.
NOWS = [1_780_000_000 * SECOND + 123_456, 1000 * SECOND]


@st.composite
def limits(draw: st.DrawFn) -> RateLimit:
    # Periods in whole microseconds: the rule's resolution (see the long-run property).
    period_us = draw(st.integers(1_000, 3_600 * SECOND))
    return RateLimit(
        requests=draw(st.integers(1, 1_000)),
        period_seconds=period_us / SECOND,
        burst=draw(st.integers(1, 50)),
    )


@st.composite
def histories(draw: st.DrawFn) -> tuple[RateLimit, int, list[tuple[int, int]]]:
    """A limit, a start time, and requests as (µs since the previous one, cost)."""
    limit = draw(limits())
    interval = limit.emission_interval_us
    # Whole emission intervals (and one µs either side) land exactly on TATs: the edge cases.
    edges = [k * interval + d for k in (1, 2) for d in (-1, 0, 1)]
    steps = draw(
        st.lists(
            st.tuples(
                st.one_of(st.just(0), st.integers(0, 2 * interval), st.sampled_from(edges)),
                st.integers(1, limit.burst),
            ),
            max_size=60,
        )
    )
    return limit, draw(st.sampled_from(NOWS)), steps


def run(limit: RateLimit, start: int, steps: list[tuple[int, int]]) -> tuple[int | None, int, int]:
    """Play the steps; returns the final TAT, the final time and the total cost allowed."""
    tat: int | None = None
    now, allowed_cost = start, 0
    for delta, cost in steps:
        now += delta
        decision, tat = gcra(tat, now, limit, cost)
        allowed_cost += cost if decision.allowed else 0
    return tat, now, allowed_cost


@pytest.mark.parametrize("now", NOWS)
@pytest.mark.parametrize(
    ("requests", "period", "burst"), [(10, 1.0, 10), (3, 1.0, 3), (7, 0.7, 50), (1, 60, 1)]
)
def test_a_full_bucket_allows_exactly_the_burst_at_once(
    now: int, requests: int, period: float, burst: int
) -> None:
    # With float seconds, ten additions of 0.1 overshot the tolerance and denied the tenth request.
    limit = RateLimit(requests=requests, period_seconds=period, burst=burst)
    tat: int | None = None
    decisions: list[RateLimitDecision] = []
    for _ in range(burst + 2):
        decision, tat = gcra(tat, now, limit)
        decisions.append(decision)
    assert [d.allowed for d in decisions] == [True] * burst + [False, False]
    assert [d.remaining for d in decisions] == [*range(burst - 1, -1, -1), 0, 0]


def test_after_the_burst_one_request_per_emission_interval() -> None:
    limit = RateLimit(requests=4, period_seconds=1.0, burst=2)  # one every 250 ms
    now = 1000 * SECOND
    tat: int | None = None
    for _ in range(2):
        decision, tat = gcra(tat, now, limit)
        assert decision.allowed
    denied, same_tat = gcra(tat, now, limit)
    assert not denied.allowed
    assert same_tat == tat
    assert denied.retry_after_seconds == 0.25
    assert denied.reset_after_seconds == 0.5

    early, _ = gcra(tat, now + 249_999, limit)
    on_time, tat = gcra(tat, now + 250_000, limit)
    assert not early.allowed
    assert on_time.allowed
    assert on_time.remaining == 0
    assert on_time.reset_after_seconds == 0.5


def test_the_decision_reports_the_burst_as_its_limit() -> None:
    decision, _ = gcra(None, 0, RateLimit(requests=100, period_seconds=60, burst=7))
    assert decision.limit == 7


@pytest.mark.parametrize("cost", [0, -1, 4])
def test_a_cost_outside_one_to_the_burst_is_a_mistake(cost: int) -> None:
    with pytest.raises(ValueError, match="cost"):
        gcra(None, 0, RateLimit(requests=1, period_seconds=1, burst=3), cost)


@pytest.mark.parametrize(
    "fields",
    [
        {"requests": 0, "period_seconds": 1, "burst": 1},
        {"requests": 1, "period_seconds": 0, "burst": 1},
        {"requests": 1, "period_seconds": float("nan"), "burst": 1},
        {"requests": 1, "period_seconds": float("inf"), "burst": 1},
        {"requests": 1, "period_seconds": 1, "burst": 0},
    ],
)
def test_a_rate_limit_refuses_nonsense(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RateLimit(**fields)  # type: ignore[arg-type]


def test_the_emission_interval_rounds_up_to_whole_microseconds() -> None:
    assert RateLimit(requests=3, period_seconds=1, burst=1).emission_interval_us == 333_334
    assert RateLimit(requests=5, period_seconds=0.2, burst=1).emission_interval_us == 40_000
    assert RateLimit(requests=10**9, period_seconds=1, burst=1).emission_interval_us == 1
    assert to_microseconds(0.2) == 200_000


@given(histories(), st.integers(0, 3))
def test_never_more_than_the_burst_at_one_instant(
    history: tuple[RateLimit, int, list[tuple[int, int]]], extra: int
) -> None:
    limit, start, steps = history
    tat, now, _ = run(limit, start, steps)
    allowed = 0
    for _ in range(limit.burst + extra + 1):
        decision, tat = gcra(tat, now, limit)
        allowed += decision.allowed
    assert allowed <= limit.burst


@given(histories())
def test_the_long_run_rate_never_exceeds_the_limit_plus_the_burst(
    history: tuple[RateLimit, int, list[tuple[int, int]]],
) -> None:
    limit, start, steps = history
    _, end, allowed_cost = run(limit, start, steps)
    elapsed_us = end - start
    # allowed ≤ burst + elapsed × requests / period, compared in integers (period in whole µs).
    period_us = to_microseconds(limit.period_seconds)
    assert (allowed_cost - limit.burst) * period_us <= elapsed_us * limit.requests


@given(histories(), st.integers(0, 10 * SECOND), st.data())
def test_a_denied_request_changes_nothing(
    history: tuple[RateLimit, int, list[tuple[int, int]]], delta: int, data: st.DataObject
) -> None:
    limit, start, steps = history
    tat, now, _ = run(limit, start, steps)
    cost = data.draw(st.integers(1, limit.burst))
    decision, new_tat = gcra(tat, now + delta, limit, cost)
    if not decision.allowed:
        assert new_tat == tat
        assert decision.retry_after_seconds > 0
        assert decision.remaining < cost


@given(histories(), st.data())
def test_the_figures_tell_the_truth(
    history: tuple[RateLimit, int, list[tuple[int, int]]], data: st.DataObject
) -> None:
    """`remaining` more unit requests pass now; `retry_after` is the first instant this one would
    pass; after `reset_after` the bucket is full."""
    limit, start, steps = history
    tat, now, _ = run(limit, start, steps)
    cost = data.draw(st.integers(1, limit.burst))
    decision, new_tat = gcra(tat, now, limit, cost)

    if decision.allowed:
        assert decision.retry_after_seconds == 0
        assert 0 < to_microseconds(decision.reset_after_seconds) <= limit.tolerance_us
        state = new_tat
    else:
        retry_us = to_microseconds(decision.retry_after_seconds)
        assert gcra(tat, now + retry_us, limit, cost)[0].allowed
        assert not gcra(tat, now + retry_us - 1, limit, cost)[0].allowed
        state = tat

    for _ in range(decision.remaining):
        unit, state = gcra(state, now, limit)
        assert unit.allowed
    assert not gcra(state, now, limit)[0].allowed

    full_at = now + to_microseconds(decision.reset_after_seconds)
    assert gcra(new_tat, full_at, limit)[0].remaining == limit.burst - 1
