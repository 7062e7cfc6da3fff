"""The FeatureFlagCache contract (`adapters.flag_cache.FlagSnapshotCache`), run over every
InvalidationBus it can listen on: in memory, Valkey pub/sub and PostgreSQL LISTEN/NOTIFY.

A snapshot serves reads without loading again while it is fresh, and concurrent readers share one
load; a change made through one process's cache reaches another process's (its own bus, its own
connections, the same channel) once the bus delivers it; a load that spans an invalidation is not
kept; the TTL and, while the bus is deaf, the short lifetime bound how long a missed message
could leave old flags in place.

Waiting for another process to hear a change polls with a generous bound (`WAIT_SECONDS`), never a
timing assertion; the time it took is printed (`pytest -s`) as a measurement.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from adapters.flag_cache import FlagSnapshotCache
from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.invalidation_bus import MemoryInvalidationBus
from core.accounts.context import Caller
from core.cache_tags import Invalidation
from core.flags.evaluation import EvaluationContext
from core.flags.model import Flag, FlagDefinition, define_flag
from core.flags.service import FeatureFlags, FlagAdministration
from core.ports import InvalidationBus
from tests.support.services import unique_name

WAIT_SECONDS = 10.0  # a bound on waiting for another process to hear a change, not an expectation
T0 = datetime(2026, 3, 1, tzinfo=UTC)
USER = EvaluationContext(user_id="0190f0e4-1b2c-7d3e-8f40-123456789abc", plan="free")


@dataclass
class Buses:
    """Two buses on one channel, each with connections of its own: two processes' buses."""

    kind: str
    make: Callable[[], Awaitable[InvalidationBus]]


@pytest.fixture(params=["memory", "valkey", "postgres"])
def server(request: pytest.FixtureRequest) -> tuple[str, str | None]:
    """A sync fixture, so only the chosen service's fixture is set up (or skipped)."""
    if request.param == "memory":
        return "memory", None
    return request.param, request.getfixturevalue(f"{request.param}_url")


@pytest.fixture
async def buses(server: tuple[str, str | None]) -> AsyncIterator[Buses]:
    kind, url = server
    async with AsyncExitStack() as stack:
        if url is None:
            shared = MemoryInvalidationBus()  # one process: every cache shares the bus

            async def same() -> InvalidationBus:
                return shared

            yield Buses("memory", same)
        elif kind == "valkey":
            from adapters.valkey.client import create_valkey_client
            from adapters.valkey.invalidation_bus import ValkeyInvalidationBus

            channel = unique_name("pictor_test") + ":flag-invalidations"

            async def valkey_bus() -> InvalidationBus:
                client = create_valkey_client(url, client_name=unique_name("flags"))
                stack.push_async_callback(client.aclose)
                return ValkeyInvalidationBus(client, channel=channel)

            yield Buses("valkey", valkey_bus)
        else:
            from adapters.postgres.invalidation_bus import PostgresInvalidationBus
            from adapters.postgres.pool import open_pool

            channel = unique_name("flag_invalidations")

            async def postgres_bus() -> InvalidationBus:
                pool = await open_pool(url, min_size=1, max_size=2, name=unique_name("flags"))
                stack.push_async_callback(pool.close)
                return PostgresInvalidationBus(pool, channel=channel)

            yield Buses("postgres", postgres_bus)


class Process:
    """One process's view: its own cache (listening on its own bus) over the shared database."""

    def __init__(self, cache: FlagSnapshotCache, database: MemoryDatabase, clock: ManualClock) -> None:
        self.cache = cache
        self.database = database
        self.flags = FeatureFlags(database=database, cache=cache, clock=clock)
        self.admin = FlagAdministration(database=database, cache=cache, ids=SequentialIds(), clock=clock)

    async def value(self, key: str) -> Any:
        return (await self.flags.evaluate(key, USER, False)).value


@pytest.fixture
async def processes(buses: Buses) -> AsyncIterator[Callable[[], Awaitable[Process]]]:
    database, clock = MemoryDatabase(), ManualClock(T0)
    started: list[FlagSnapshotCache] = []

    async def start() -> Process:
        cache = FlagSnapshotCache(await buses.make(), ttl_seconds=3600)
        cache.start()
        started.append(cache)
        await wait_until(lambda: cache._bus.connected)  # subscribed: nothing published is missed
        return Process(cache, database, clock)

    yield start
    for cache in started:
        await cache.aclose()


async def wait_until(condition: Callable[[], bool]) -> float:
    """Seconds until `condition` held, polling; fails after WAIT_SECONDS."""
    started = time.perf_counter()
    while not condition():
        assert time.perf_counter() - started < WAIT_SECONDS, "the condition never held"
        await asyncio.sleep(0.005)
    return time.perf_counter() - started


async def test_a_change_through_one_process_reaches_the_others(processes, buses) -> None:
    api, other = await processes(), await processes()
    await api.admin.put(None, "new-editor", FlagDefinition(enabled=False), Caller())
    assert await other.value("new-editor") is False  # loaded into the other's snapshot
    assert await api.value("new-editor") is False

    changed_at = time.perf_counter()
    await api.admin.put(None, "new-editor", FlagDefinition(enabled=True), Caller())
    assert await api.value("new-editor") is True  # the writer's own snapshot is dropped at once

    async def other_sees_it() -> None:
        while await other.value("new-editor") is not True:
            assert time.perf_counter() - changed_at < WAIT_SECONDS, "the change never arrived"
            await asyncio.sleep(0.005)

    await other_sees_it()
    print(f"\n{buses.kind}: another process served the change after {time.perf_counter() - changed_at:.4f}s")

    await api.admin.delete(None, "new-editor", Caller())
    await wait_until(lambda: other.cache._snapshot is None)
    assert (await other.flags.flags()) == {}


async def test_a_fresh_snapshot_is_served_without_loading_and_loads_are_shared(processes) -> None:
    process = await processes()
    # Written straight to the database: a change through the cache would publish, and this
    # process hearing its own message later would drop the snapshot under the test's feet.
    async with process.database.unit_of_work() as uow:
        await uow.feature_flags.put(define_flag("a", FlagDefinition(), created_at=T0, now=T0))
        await uow.commit()
    gate = asyncio.Event()
    calls = 0

    async def slow_loader() -> Sequence[Flag]:
        nonlocal calls
        calls += 1
        await gate.wait()
        return await process.flags._load()

    readers = [asyncio.create_task(process.cache.get_or_load(slow_loader)) for _ in range(20)]
    await asyncio.sleep(0.01)
    gate.set()
    snapshots = await asyncio.gather(*readers)
    assert calls == 1 and all(snapshot is snapshots[0] for snapshot in snapshots)
    assert set(snapshots[0]) == {"a"}
    assert await process.cache.get_or_load(slow_loader) is snapshots[0]
    assert calls == 1


async def test_a_load_that_spans_an_invalidation_is_not_kept(processes) -> None:
    process = await processes()
    started, release = asyncio.Event(), asyncio.Event()

    async def loader() -> Sequence[Flag]:
        started.set()
        await release.wait()
        return []

    load = asyncio.create_task(process.cache.get_or_load(loader))
    await started.wait()
    process.cache.apply(Invalidation(("feature-flags",)))  # a change lands while loading
    release.set()
    assert await load == {}
    assert process.cache._snapshot is None  # the next read loads again
    process.cache.apply(Invalidation(("user:someone",)))  # other tags are not ours


async def test_the_ttl_and_a_deaf_bus_bound_a_snapshots_life() -> None:
    bus = MemoryInvalidationBus()
    now = [0.0]
    cache = FlagSnapshotCache(bus, ttl_seconds=30, deaf_ttl_seconds=1, monotonic=lambda: now[0])
    loads = 0

    async def loader() -> Sequence[Flag]:
        nonlocal loads
        loads += 1
        return []

    await cache.get_or_load(loader)
    now[0] = 29.9
    await cache.get_or_load(loader)
    assert loads == 1
    now[0] = 30.0
    await cache.get_or_load(loader)
    assert loads == 2

    bus.connected_flag = False  # messages may be lost now: the snapshot lives a second at most
    with pytest.raises(ConnectionError):
        await cache.ping()
    now[0] = 30.9
    await cache.get_or_load(loader)
    assert loads == 2
    now[0] = 31.0
    await cache.get_or_load(loader)
    assert loads == 3

    bus.connected_flag = True
    await cache.ping()
    cache.apply(Invalidation(reset=True))  # reconnected: what was missed is unknown
    await cache.get_or_load(loader)
    assert loads == 4


async def test_a_failed_publication_still_drops_the_local_snapshot() -> None:
    class BrokenBus(MemoryInvalidationBus):
        async def publish(self, invalidation: Invalidation) -> None:
            raise ConnectionError("down")

    cache = FlagSnapshotCache(BrokenBus())

    async def loader() -> Sequence[Flag]:
        return []

    await cache.get_or_load(loader)
    await cache.invalidate()  # logged, not raised: the change is already committed
    assert cache._snapshot is None


async def test_closing_ends_a_listener_that_swallowed_a_cancellation() -> None:
    class StubbornBus(MemoryInvalidationBus):
        async def listen(self) -> AsyncIterator[Invalidation]:
            yield Invalidation(reset=True)
            with contextlib.suppress(asyncio.CancelledError):  # as a client library may, connecting
                await asyncio.Event().wait()
            while True:
                await asyncio.sleep(3600)
                yield Invalidation(reset=True)

    cache = FlagSnapshotCache(StubbornBus())
    cache.start()
    await asyncio.sleep(0.01)  # the listener is inside `listen`
    closing = asyncio.create_task(cache.aclose())
    done, _ = await asyncio.wait({closing}, timeout=WAIT_SECONDS)  # a bound, not an expectation
    if not done:
        closing.cancel()
    assert closing in done, "closing hung on a listener that swallowed its cancellation"
