"""The RateLimiter port's contract, run against the in-memory limiter and Valkey.

Both run on real clocks (the process's monotonic clock, the Valkey server's), so the tests that
need time to pass sleep briefly; waiting longer than asked can only let more requests through,
which the tests allow for. Then what only one adapter does: the Valkey script's figures equal the
pure rule's (a Hypothesis property, with the script's clock replaced by chosen instants), its key
TTLs, and the memory limiter's forgetting of full buckets.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory.clock import ManualClock
from adapters.memory.rate_limiter import MemoryRateLimiter
from core.ports import RateLimiter
from core.rate_limit import RateLimit, RateLimitDecision, gcra
from tests.support import services

HOURLY = RateLimit(requests=3, period_seconds=3600, burst=3)  # nothing refills during a test
QUICK = RateLimit(requests=5, period_seconds=0.5, burst=2)  # one back every 100 ms


@pytest.fixture(params=["memory", "valkey"])
def backend(request: pytest.FixtureRequest) -> tuple[str, str, str]:
    if request.param == "memory":
        return "memory", "", ""
    return "valkey", request.getfixturevalue("valkey_url"), request.getfixturevalue("key_prefix")


@pytest.fixture
async def limiter(backend: tuple[str, str, str]) -> AsyncIterator[RateLimiter]:
    kind, url, prefix = backend
    if kind == "memory":
        yield MemoryRateLimiter()
        return
    from adapters.valkey.cache import escape_glob
    from adapters.valkey.client import create_valkey_client
    from adapters.valkey.rate_limiter import ValkeyRateLimiter

    client = create_valkey_client(url)
    try:
        yield ValkeyRateLimiter(client, key_prefix=prefix)
    finally:
        async for key in client.scan_iter(match=escape_glob(prefix) + "*", count=500):
            await client.unlink(key)
        await client.aclose()


async def exhaust(limiter: RateLimiter, key: str, limit: RateLimit) -> RateLimitDecision:
    """Hit until denied (a few hits at most); returns the denial."""
    for _ in range(limit.burst + 10):
        decision = await limiter.hit(key, limit)
        if not decision.allowed:
            return decision
    raise AssertionError("never denied")


async def test_ping(limiter: RateLimiter) -> None:
    await limiter.ping()


async def test_a_burst_is_allowed_then_denied_with_a_retry_after(limiter: RateLimiter) -> None:
    decisions = [await limiter.hit("login:alice", HOURLY) for _ in range(4)]

    assert [d.allowed for d in decisions] == [True, True, True, False]
    assert [d.remaining for d in decisions] == [2, 1, 0, 0]
    assert {d.limit for d in decisions} == {3}
    assert all(d.retry_after_seconds == 0 for d in decisions[:3])
    denied = decisions[3]
    assert 1100 < denied.retry_after_seconds <= 1200  # one emission interval, less the time taken
    assert 3500 < denied.reset_after_seconds <= 3600


async def test_requests_are_allowed_again_after_the_retry_after(limiter: RateLimiter) -> None:
    denied = await exhaust(limiter, "k", QUICK)
    assert 0 < denied.retry_after_seconds <= QUICK.emission_interval

    await asyncio.sleep(denied.retry_after_seconds + 0.02)

    assert (await limiter.hit("k", QUICK)).allowed


async def test_a_full_bucket_comes_back_after_the_reset_after(limiter: RateLimiter) -> None:
    await exhaust(limiter, "k", QUICK)
    peeked = await limiter.peek("k", QUICK)

    await asyncio.sleep(peeked.reset_after_seconds + 0.02)

    assert [(await limiter.hit("k", QUICK)).allowed for _ in range(QUICK.burst)] == [True] * QUICK.burst


async def test_keys_are_independent(limiter: RateLimiter) -> None:
    await exhaust(limiter, "ip:203.0.113.7", HOURLY)
    other = await limiter.hit("ip:203.0.113.8", HOURLY)
    assert other.allowed
    assert other.remaining == 2


async def test_reset_gives_a_full_bucket(limiter: RateLimiter) -> None:
    await exhaust(limiter, "k", HOURLY)
    await limiter.reset("k")
    decision = await limiter.hit("k", HOURLY)
    assert decision.allowed
    assert decision.remaining == 2
    await limiter.reset("never-used")


async def test_peek_tells_what_a_hit_would_get_without_counting_it(limiter: RateLimiter) -> None:
    first_peek = await limiter.peek("k", HOURLY)
    assert first_peek.allowed
    assert first_peek.remaining == 2
    assert [(await limiter.peek("k", HOURLY)).remaining for _ in range(5)] == [2] * 5

    assert [(await limiter.hit("k", HOURLY)).allowed for _ in range(3)] == [True] * 3
    exhausted = await limiter.peek("k", HOURLY)
    assert not exhausted.allowed
    assert exhausted.retry_after_seconds > 0
    assert not (await limiter.hit("k", HOURLY)).allowed


async def test_a_heavy_request_takes_its_cost_and_a_denied_one_takes_nothing(limiter: RateLimiter) -> None:
    limit = RateLimit(requests=5, period_seconds=3600, burst=5)
    heavy = await limiter.hit("k", limit, cost=3)
    assert heavy.allowed
    assert heavy.remaining == 2

    too_heavy = await limiter.hit("k", limit, cost=3)
    assert not too_heavy.allowed
    assert too_heavy.remaining == 2
    assert too_heavy.retry_after_seconds > 0

    assert [(await limiter.hit("k", limit)).allowed for _ in range(3)] == [True, True, False]


@pytest.mark.parametrize("cost", [0, 4])
async def test_a_cost_the_burst_cannot_hold_is_refused(limiter: RateLimiter, cost: int) -> None:
    with pytest.raises(ValueError, match="cost"):
        await limiter.hit("k", HOURLY, cost=cost)


# --- Valkey: the script is the pure rule ---


@pytest.fixture(scope="module")
def script_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """A loop for the Hypothesis test, which is synchronous so each example can run a sequence."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.close()


@pytest.fixture(scope="module")
def script_limiter(script_loop: asyncio.AbstractEventLoop) -> Iterator[Any]:
    from adapters.valkey.cache import escape_glob
    from adapters.valkey.client import create_valkey_client
    from adapters.valkey.rate_limiter import ValkeyRateLimiter

    url = services.require_valkey()
    prefix = services.unique_name("pictor_test") + ":"
    client = create_valkey_client(url)
    try:
        yield ValkeyRateLimiter(client, key_prefix=prefix)
    finally:

        async def clean_up() -> None:
            async for key in client.scan_iter(match=escape_glob(prefix) + "*", count=500):
                await client.unlink(key)
            await client.aclose()

        script_loop.run_until_complete(clean_up())


SECOND = 1_000_000


@st.composite
def sequences(draw: st.DrawFn) -> tuple[list[RateLimit], int, list[tuple[int, int, int, bool]]]:
    """Up to two limits used on one key, a start time, and (µs since the last call, limit index,
    cost, peek) per call."""
    limits = draw(
        st.lists(
            st.builds(
                RateLimit,
                requests=st.integers(1, 1_000),
                period_seconds=st.integers(1_000, 3_600 * SECOND).map(lambda us: us / SECOND),
                burst=st.integers(1, 30),
            ),
            min_size=1,
            max_size=2,
        )
    )
    longest = max(limit.emission_interval_us for limit in limits)
    # Whole emission intervals (and one µs either side) land exactly on TATs: the edge cases.
    edges = sorted(
        {k * limit.emission_interval_us + d for limit in limits for k in (1, 2) for d in (-1, 0, 1)}
    )
    calls = draw(
        st.lists(
            st.tuples(
                st.one_of(st.just(0), st.integers(0, 2 * longest), st.sampled_from(edges)),
                st.integers(0, len(limits) - 1),
                st.integers(1, 30),
                st.booleans(),
            ),
            min_size=1,
            max_size=25,
        )
    )
    # In the future (so the script's PXAT expiry never removes a key mid-test) but below 2**53.
    start = draw(st.integers(2_000_000_000 * SECOND, 4_000_000_000 * SECOND))
    return limits, start, calls


@pytest.mark.services
@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sequence=sequences())
def test_the_valkey_script_decides_exactly_as_the_pure_rule(
    script_limiter: Any, script_loop: asyncio.AbstractEventLoop, sequence: Any
) -> None:
    limits, start, calls = sequence
    key = uuid.uuid4().hex

    async def play() -> None:
        tat: int | None = None
        now = start
        for delta, which, cost, peek in calls:
            now += delta
            limit = limits[which]
            cost = min(cost, limit.burst)
            expected, new_tat = gcra(tat, now, limit, 1 if peek else cost)
            got = await script_limiter.decide(key, limit, 1 if peek else cost, record=not peek, now_us=now)
            assert got == expected
            if not peek:
                tat = new_tat
            stored = await script_limiter._client.get(script_limiter._key(key))
            assert (None if stored is None else int(stored)) == tat

    script_loop.run_until_complete(play())


@pytest.mark.services
async def test_a_valkey_key_lives_until_its_bucket_is_full(valkey_url: str, key_prefix: str) -> None:
    from adapters.valkey.client import create_valkey_client
    from adapters.valkey.rate_limiter import ValkeyRateLimiter

    client = create_valkey_client(valkey_url)
    try:
        limiter = ValkeyRateLimiter(client, key_prefix=key_prefix)
        decision = await limiter.hit("k", HOURLY, cost=2)
        ttl_ms = await client.pttl(f"{key_prefix}rate:k")
        assert decision.reset_after_seconds * 1000 - 1000 < ttl_ms <= decision.reset_after_seconds * 1000 + 1

        # The next decision sees the stored TAT: one request left of three.
        assert (await limiter.hit("k", HOURLY)).allowed
        assert not (await limiter.hit("k", HOURLY)).allowed
    finally:
        await client.unlink(f"{key_prefix}rate:k")
        await client.aclose()


# --- memory: full buckets are forgotten ---


async def test_the_memory_limiter_forgets_full_buckets() -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(monotonic=clock.monotonic)
    limit = RateLimit(requests=1, period_seconds=1, burst=1)
    for i in range(1023):
        await limiter.hit(f"old-{i}", limit)
    clock.advance(1.0)  # every old bucket is full again

    await limiter.hit("new", limit)  # the 1024th hit sweeps

    assert len(limiter) == 1
    assert not (await limiter.hit("new", limit)).allowed


async def test_the_memory_limiter_runs_on_its_clock() -> None:
    clock = ManualClock()
    limiter = MemoryRateLimiter(monotonic=clock.monotonic)
    limit = RateLimit(requests=2, period_seconds=1, burst=1)
    assert (await limiter.hit("k", limit)).allowed
    clock.advance(0.499999)
    assert not (await limiter.hit("k", limit)).allowed
    clock.advance(0.000001)
    assert (await limiter.hit("k", limit)).allowed
