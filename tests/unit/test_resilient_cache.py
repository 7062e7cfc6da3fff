"""ResilientCache: cache failures become fallbacks, are counted, and trip the breaker."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import pytest
from prometheus_client import REGISTRY

from adapters.memory.cache import MemoryCache
from adapters.memory.clock import ManualClock
from adapters.resilient_cache import ResilientCache
from adapters.valkey.cache import ValkeyCache
from adapters.valkey.client import create_valkey_client
from core.circuit_breaker import BreakerState, CircuitBreaker

T = TypeVar("T")


class BrokenCache:
    """A Cache whose every call fails the way a dropped connection does; counts the calls."""

    def __init__(self) -> None:
        self.calls = 0
        self.pings = 0

    async def _fail(self) -> Any:
        self.calls += 1
        raise ConnectionError("cache unreachable")

    async def get(self, key: str, type_: type[T]) -> T | None:
        return await self._fail()

    async def set(self, key: str, value: Any, *, ttl_seconds: float, tags: Sequence[str] = ()) -> None:
        await self._fail()

    async def delete(self, *keys: str) -> int:
        return await self._fail()

    async def get_or_set(
        self,
        key: str,
        type_: type[T],
        loader: Callable[[], Awaitable[T]],
        *,
        ttl_seconds: float,
        tags: Sequence[str] = (),
    ) -> T:
        return await self._fail()

    async def invalidate_tags(self, *tags: str) -> int:
        return await self._fail()

    async def delete_pattern(self, pattern: str) -> int:
        return await self._fail()

    async def ping(self) -> None:
        self.pings += 1
        raise ConnectionError("cache unreachable")


class FlakyCache(MemoryCache):
    """A working cache whose reads fail while `down` is set."""

    down = False

    async def get(self, key: str, type_: type[T]) -> T | None:
        if self.down:
            raise ConnectionError("cache unreachable")
        return await super().get(key, type_)


class StoreFailsAfterLoad(MemoryCache):
    """Loads through the caller's loader, then fails to store the value (a write to a dying server)."""

    async def get_or_set(
        self, key: str, type_: Any, loader: Any, *, ttl_seconds: float, tags: Any = ()
    ) -> Any:
        await loader()
        raise ConnectionError("connection lost while storing")


class Loader:
    def __init__(
        self, value: Any = "from source", *, delay: float = 0.0, error: Exception | None = None
    ) -> None:
        self.value, self.delay, self.error, self.calls = value, delay, error, 0

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def breaker_gauge() -> float | None:
    return REGISTRY.get_sample_value("pictor_cache_breaker_open")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def broken() -> BrokenCache:
    return BrokenCache()


@pytest.fixture
def breaker() -> CircuitBreaker:
    return CircuitBreaker(failure_threshold=3, reset_after_seconds=5.0)


@pytest.fixture
def resilient(broken: BrokenCache, breaker: CircuitBreaker, clock: ManualClock) -> ResilientCache:
    return ResilientCache(broken, breaker=breaker, monotonic=clock.monotonic)


async def test_failures_become_fallbacks(resilient: ResilientCache, broken: BrokenCache) -> None:
    assert await resilient.get("k", str) is None
    await resilient.set("k", "v", ttl_seconds=30)
    assert await resilient.delete("k") == 0
    assert await resilient.invalidate_tags("t") == 0
    # Three failures have opened the breaker by now: these are answered without the cache.
    assert await resilient.delete_pattern("*") == 0
    assert await resilient.get_or_set("k", str, Loader(), ttl_seconds=30) == "from source"
    assert broken.calls == 3


async def test_each_failure_is_counted_by_operation(breaker: CircuitBreaker, clock: ManualClock) -> None:
    breaker.failure_threshold = 100
    resilient = ResilientCache(BrokenCache(), breaker=breaker, monotonic=clock.monotonic)
    operations = ["get", "set", "delete", "get_or_set", "invalidate_tags", "delete_pattern"]
    before = {op: metric("pictor_cache_errors_total", operation=op) for op in operations}
    await resilient.get("k", str)
    await resilient.set("k", "v", ttl_seconds=30)
    await resilient.delete("k")
    await resilient.get_or_set("k", str, Loader(), ttl_seconds=30)
    await resilient.invalidate_tags("t")
    await resilient.delete_pattern("*")
    for op in operations:
        assert metric("pictor_cache_errors_total", operation=op) == before[op] + 1


async def test_an_open_breaker_keeps_calls_away_until_the_reset_time(
    resilient: ResilientCache, broken: BrokenCache, breaker: CircuitBreaker, clock: ManualClock
) -> None:
    for _ in range(3):
        await resilient.get("k", str)
    assert breaker.state is BreakerState.OPEN
    assert breaker_gauge() == 1
    bypassed = metric("pictor_cache_bypassed_total", operation="get")

    for _ in range(8):
        assert await resilient.get("k", str) is None
        clock.advance(0.5)
    assert broken.calls == 3
    assert metric("pictor_cache_bypassed_total", operation="get") == bypassed + 8

    clock.advance(1.0)  # 5 s since opening: one trial call goes through, fails, and re-opens
    assert await resilient.get("k", str) is None
    assert broken.calls == 4
    assert await resilient.get("k", str) is None
    assert broken.calls == 4


async def test_a_successful_trial_closes_the_breaker(breaker: CircuitBreaker, clock: ManualClock) -> None:
    flaky = FlakyCache(monotonic=clock.monotonic)
    await flaky.set("k", "v", ttl_seconds=60)
    resilient = ResilientCache(flaky, breaker=breaker, monotonic=clock.monotonic)
    flaky.down = True
    for _ in range(3):
        assert await resilient.get("k", str) is None
    assert breaker_gauge() == 1

    flaky.down = False  # the server came back
    clock.advance(4.0)
    assert await resilient.get("k", str) is None  # still bypassed: too early to try
    clock.advance(1.0)
    assert await resilient.get("k", str) == "v"
    assert breaker.is_closed
    assert breaker_gauge() == 0


async def test_ping_tells_the_truth_even_while_the_breaker_is_open(
    resilient: ResilientCache, broken: BrokenCache, breaker: CircuitBreaker
) -> None:
    for _ in range(3):
        await resilient.get("k", str)
    assert breaker.state is BreakerState.OPEN
    with pytest.raises(ConnectionError):
        await resilient.ping()
    assert broken.pings == 1


async def test_a_loader_error_is_the_callers_not_the_caches(breaker: CircuitBreaker) -> None:
    resilient = ResilientCache(MemoryCache(), breaker=breaker)
    errors = metric("pictor_cache_errors_total", operation="get_or_set")
    failing = Loader(delay=0.02, error=LookupError("source down"))
    outcomes = await asyncio.gather(
        *(resilient.get_or_set("k", str, failing, ttl_seconds=30) for _ in range(10)), return_exceptions=True
    )
    assert failing.calls == 1
    assert all(isinstance(outcome, LookupError) for outcome in outcomes)
    assert metric("pictor_cache_errors_total", operation="get_or_set") == errors
    assert breaker.is_closed
    assert breaker.consecutive_failures == 0


async def test_a_loader_error_keeps_its_own_cause(breaker: CircuitBreaker) -> None:
    resilient = ResilientCache(MemoryCache(), breaker=breaker)

    async def load() -> str:
        try:
            raise KeyError("row")
        except KeyError as error:
            raise LookupError("no such principal") from error

    with pytest.raises(LookupError) as raised:
        await resilient.get_or_set("k", str, load, ttl_seconds=30)
    assert isinstance(raised.value.__cause__, KeyError)


async def test_caller_mistakes_are_raised_and_do_not_trip_the_breaker(breaker: CircuitBreaker) -> None:
    resilient = ResilientCache(MemoryCache(), breaker=breaker)
    for _ in range(5):
        with pytest.raises(TypeError):
            await resilient.set("k", object(), ttl_seconds=30)
        with pytest.raises(ValueError):
            await resilient.set("k", "v", ttl_seconds=0)
    assert breaker.is_closed


async def test_a_value_loaded_before_the_store_failed_is_not_loaded_again(breaker: CircuitBreaker) -> None:
    resilient = ResilientCache(StoreFailsAfterLoad(), breaker=breaker)
    loader = Loader("v")
    assert await resilient.get_or_set("k", str, loader, ttl_seconds=30) == "v"
    assert loader.calls == 1
    assert breaker.consecutive_failures == 1


async def test_while_the_cache_is_down_concurrent_loads_are_still_shared(
    resilient: ResilientCache, breaker: CircuitBreaker
) -> None:
    for _ in range(3):
        await resilient.get("k", str)
    assert breaker.state is BreakerState.OPEN
    loader = Loader("v", delay=0.05)
    results = await asyncio.gather(
        *(resilient.get_or_set("k", str, loader, ttl_seconds=30) for _ in range(20))
    )
    assert results == ["v"] * 20
    assert loader.calls == 1


async def test_hits_and_misses_are_counted(breaker: CircuitBreaker) -> None:
    resilient = ResilientCache(MemoryCache(), breaker=breaker)
    hits, misses = metric("pictor_cache_hits_total"), metric("pictor_cache_misses_total")
    assert await resilient.get("k", str) is None  # miss
    assert await resilient.get_or_set("k", str, Loader("v"), ttl_seconds=30) == "v"  # miss, loaded
    assert await resilient.get_or_set("k", str, Loader("other"), ttl_seconds=30) == "v"  # hit
    assert await resilient.get("k", str) == "v"  # hit
    assert metric("pictor_cache_hits_total") == hits + 2
    assert metric("pictor_cache_misses_total") == misses + 2


async def test_a_working_cache_keeps_single_flight(breaker: CircuitBreaker) -> None:
    resilient = ResilientCache(MemoryCache(), breaker=breaker)
    loader = Loader("v", delay=0.05)
    results = await asyncio.gather(
        *(resilient.get_or_set("k", str, loader, ttl_seconds=30) for _ in range(20))
    )
    assert results == ["v"] * 20
    assert loader.calls == 1


async def test_a_cancelled_trial_does_not_jam_the_breaker(
    breaker: CircuitBreaker, clock: ManualClock
) -> None:
    hanging = asyncio.Event()

    class HangingCache(BrokenCache):
        async def get(self, key: str, type_: type[T]) -> T | None:
            await hanging.wait()
            return None

    resilient = ResilientCache(HangingCache(), breaker=breaker, monotonic=clock.monotonic)
    for _ in range(3):
        await resilient.delete("k")
    clock.advance(5.0)
    trial = asyncio.create_task(resilient.get("k", str))
    await asyncio.sleep(0)
    assert breaker.trial_in_flight
    trial.cancel()
    with pytest.raises(asyncio.CancelledError):
        await trial
    assert not breaker.trial_in_flight
    hanging.set()
    assert await resilient.get("k", str) is None  # the next caller got the trial, and it succeeded
    assert breaker.is_closed


async def test_many_wrappers_share_the_metrics() -> None:
    first = ResilientCache(MemoryCache())
    second = ResilientCache(MemoryCache())
    hits = metric("pictor_cache_hits_total")
    await first.set("k", 1, ttl_seconds=30)
    await second.set("k", 2, ttl_seconds=30)
    assert await first.get("k", int) == 1
    assert await second.get("k", int) == 2
    assert metric("pictor_cache_hits_total") == hits + 2


async def test_a_real_client_on_a_closed_port_falls_back_fast(breaker: CircuitBreaker) -> None:
    client = create_valkey_client("redis://127.0.0.1:1/0", socket_timeout=0.2, connect_timeout=0.2)
    try:
        resilient = ResilientCache(ValkeyCache(client, key_prefix="pictor_test_closed:"), breaker=breaker)
        errors = metric("pictor_cache_errors_total", operation="get")
        assert await resilient.get("k", str) is None
        assert metric("pictor_cache_errors_total", operation="get") == errors + 1
        assert await resilient.get_or_set("k", str, Loader("v"), ttl_seconds=30) == "v"
        await resilient.set("k", "v", ttl_seconds=30)
        assert breaker.state is BreakerState.OPEN
        assert await resilient.get_or_set("k", str, Loader("w"), ttl_seconds=30) == "w"
        with pytest.raises(Exception):  # whichever connection error the driver raises
            await resilient.ping()
    finally:
        await client.aclose()
