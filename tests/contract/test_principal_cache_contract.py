"""The PrincipalCache contract: NearCache over every InvalidationBus (memory, Valkey, PostgreSQL).

Read-through with one load per key at a time, TTL as a backstop, tag invalidation here and in the
other processes' caches through the bus, no keeping of a value whose load spanned an
invalidation, no serving from memory while deaf to the bus, everything dropped after a
reconnection, and a bounded size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.invalidation_bus import MemoryInvalidationBus
from adapters.near_cache import NearCache
from core.cache_tags import Invalidation, api_key_tag, user_tag
from core.ports import InvalidationBus
from tests.support.services import unique_name

WAIT_SECONDS = 10.0  # a bound on waiting for the bus, never a measured expectation
TTL = 30.0


class Loader:
    """Counts its calls; returns `value` tagged with `tags`; waits for `gate` when given one."""

    def __init__(self, value: Any, tags: Sequence[str] = (), *, gate: asyncio.Event | None = None) -> None:
        self.value = value
        self.tags = list(tags)
        self.gate = gate
        self.calls = 0
        self.started = asyncio.Event()

    async def __call__(self) -> tuple[Any, list[str]]:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        return self.value, self.tags


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) until `condition()` holds: the bus is asynchronous."""

    async def poll() -> None:
        while not condition():
            await asyncio.sleep(0.01)

    await asyncio.wait_for(poll(), WAIT_SECONDS)


@dataclass
class Server:
    kind: str
    url: str | None  # None: in memory


NETWORKED = ["valkey", "postgres"]


@pytest.fixture(params=["memory", *NETWORKED])
def server(request: pytest.FixtureRequest) -> Server:
    """A sync fixture, so only the chosen service's fixture is set up (or skipped)."""
    if request.param == "memory":
        return Server("memory", None)
    return Server(request.param, request.getfixturevalue(f"{request.param}_url"))


@dataclass
class Processes:
    """Caches that play separate processes sharing one invalidation channel."""

    server: Server
    stack: AsyncExitStack
    clock: ManualClock = field(default_factory=ManualClock)
    channel: str = field(default_factory=lambda: unique_name("invalidations"))
    _memory_bus: MemoryInvalidationBus = field(default_factory=MemoryInvalidationBus)
    _listener_names: dict[int, str] = field(default_factory=dict)

    async def bus(self) -> InvalidationBus:
        """A bus with connections of its own (in memory: the one bus of this process)."""
        if self.server.url is None:
            return self._memory_bus
        if self.server.kind == "valkey":
            from adapters.valkey.client import create_valkey_client
            from adapters.valkey.invalidation_bus import ValkeyInvalidationBus

            name = unique_name("near_cache")
            client = create_valkey_client(self.server.url, client_name=name)
            self.stack.push_async_callback(client.aclose)
            bus: InvalidationBus = ValkeyInvalidationBus(client, channel=self.channel)
            self._listener_names[id(bus)] = name
            return bus
        from adapters.postgres.invalidation_bus import PostgresInvalidationBus
        from adapters.postgres.pool import open_pool

        pool = await open_pool(self.server.url, min_size=1, max_size=2, name=unique_name("near_cache"))
        self.stack.push_async_callback(pool.close)
        return PostgresInvalidationBus(pool, channel=self.channel)

    async def cache(self, *, max_entries: int = 1000, bus: InvalidationBus | None = None) -> NearCache:
        """A started cache, listening (its first `reset` applied)."""
        bus = bus or await self.bus()
        cache = NearCache(bus, monotonic=self.clock.monotonic, max_entries=max_entries)
        cache.start()
        self.stack.push_async_callback(cache.aclose)
        await until(lambda: bus.connected)
        await cache.ping()
        return cache

    async def kill_listener(self, bus: InvalidationBus) -> None:
        """Have the server drop the connection `bus` listens on."""
        assert self.server.url is not None
        if self.server.kind == "valkey":
            from adapters.valkey.client import create_valkey_client

            admin = create_valkey_client(self.server.url, client_name=unique_name("admin"))
            try:
                name = self._listener_names[id(bus)]
                entries = [e for e in await admin.client_list(_type="pubsub") if e.get("name") == name]
                assert entries, "the bus has no pub/sub connection"
                for entry in entries:
                    await admin.execute_command("CLIENT", "KILL", "ID", entry["id"])
            finally:
                await admin.aclose()
            return
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.server.url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%%' AND query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{self.channel}%",),
            )
            assert await cursor.fetchall(), "no LISTEN backend to terminate"


@pytest.fixture
async def processes(server: Server) -> AsyncIterator[Processes]:
    async with AsyncExitStack() as stack:
        yield Processes(server, stack)


async def test_a_value_is_loaded_once_then_served_from_memory(processes):
    cache = await processes.cache()
    loader = Loader("grant-1", [api_key_tag("k1"), user_tag("u1")])

    first = await cache.get_or_load("api-key:h1", loader, ttl_seconds=TTL)
    again = [await cache.get_or_load("api-key:h1", loader, ttl_seconds=TTL) for _ in range(5)]

    assert first == "grant-1"
    assert again == ["grant-1"] * 5
    assert loader.calls == 1
    assert len(cache) == 1


async def test_concurrent_misses_for_one_key_share_one_load(processes):
    cache = await processes.cache()
    gate = asyncio.Event()
    loader = Loader("grant", [user_tag("u1")], gate=gate)

    waiting = [asyncio.create_task(cache.get_or_load("k", loader, ttl_seconds=TTL)) for _ in range(10)]
    await asyncio.wait_for(loader.started.wait(), WAIT_SECONDS)
    gate.set()

    assert await asyncio.gather(*waiting) == ["grant"] * 10
    assert loader.calls == 1


async def test_a_value_expires_after_its_ttl(processes):
    cache = await processes.cache()
    loader = Loader("grant", [user_tag("u1")])
    await cache.get_or_load("k", loader, ttl_seconds=TTL)

    processes.clock.advance(TTL - 1)
    await cache.get_or_load("k", loader, ttl_seconds=TTL)
    assert loader.calls == 1

    processes.clock.advance(2)
    await cache.get_or_load("k", loader, ttl_seconds=TTL)
    assert loader.calls == 2


async def test_invalidating_a_tag_drops_its_entries_here_and_in_other_processes(processes):
    here, there = await processes.cache(), await processes.cache()
    alice_key = Loader("alice's key", [api_key_tag("k1"), user_tag("alice")])
    alice = Loader("alice", [user_tag("alice")])
    bob = Loader("bob", [user_tag("bob")])
    for cache in (here, there):
        await cache.get_or_load("api-key:h1", alice_key, ttl_seconds=TTL)
        await cache.get_or_load("user:alice", alice, ttl_seconds=TTL)
        await cache.get_or_load("user:bob", bob, ttl_seconds=TTL)
    assert (alice_key.calls, alice.calls, bob.calls) == (2, 2, 2)

    dropped = await here.invalidate_tags(user_tag("alice"))

    assert dropped == 2
    assert len(here) == 1  # bob's entry stays
    await until(lambda: len(there) == 1)  # the other process heard it through the bus
    for cache in (here, there):
        assert await cache.get_or_load("api-key:h1", alice_key, ttl_seconds=TTL) == "alice's key"
        await cache.get_or_load("user:alice", alice, ttl_seconds=TTL)
        await cache.get_or_load("user:bob", bob, ttl_seconds=TTL)
    assert (alice_key.calls, alice.calls, bob.calls) == (4, 4, 2)


async def test_invalidating_a_key_tag_leaves_the_users_other_entries(processes):
    cache = await processes.cache()
    key_one = Loader("one", [api_key_tag("k1"), user_tag("u1")])
    key_two = Loader("two", [api_key_tag("k2"), user_tag("u1")])
    await cache.get_or_load("api-key:h1", key_one, ttl_seconds=TTL)
    await cache.get_or_load("api-key:h2", key_two, ttl_seconds=TTL)

    assert await cache.invalidate_tags(api_key_tag("k1"), api_key_tag("unknown")) == 1

    await cache.get_or_load("api-key:h1", key_one, ttl_seconds=TTL)
    await cache.get_or_load("api-key:h2", key_two, ttl_seconds=TTL)
    assert (key_one.calls, key_two.calls) == (2, 1)


async def test_a_load_spanning_a_local_invalidation_is_returned_but_not_kept(processes):
    cache = await processes.cache()
    gate = asyncio.Event()
    stale = Loader("before the change", [user_tag("u1")], gate=gate)

    loading = asyncio.create_task(cache.get_or_load("user:u1", stale, ttl_seconds=TTL))
    await asyncio.wait_for(stale.started.wait(), WAIT_SECONDS)
    await cache.invalidate_tags(user_tag("u1"))  # committed while the load was reading
    gate.set()

    assert await loading == "before the change"
    assert len(cache) == 0
    await cache.get_or_load("user:u1", stale, ttl_seconds=TTL)
    assert stale.calls == 2


async def test_a_load_spanning_another_process_invalidation_is_not_kept(processes):
    here, there = await processes.cache(), await processes.cache()
    sentinel = Loader("sentinel", [user_tag("u1")])
    await here.get_or_load("sentinel", sentinel, ttl_seconds=TTL)
    gate = asyncio.Event()
    stale = Loader("before the change", [user_tag("u1")], gate=gate)

    loading = asyncio.create_task(here.get_or_load("user:u1", stale, ttl_seconds=TTL))
    await asyncio.wait_for(stale.started.wait(), WAIT_SECONDS)
    await there.invalidate_tags(user_tag("u1"))
    await until(lambda: len(here) == 0)  # the sentinel's drop shows the invalidation arrived
    gate.set()

    assert await loading == "before the change"
    assert len(here) == 0
    await here.get_or_load("user:u1", stale, ttl_seconds=TTL)
    assert stale.calls == 2


async def test_a_cache_deaf_to_the_bus_loads_every_time(processes):
    if processes.server.url is None:
        deaf_bus = MemoryInvalidationBus()
        deaf_bus.connected_flag = False  # the fake's lost connection
        deaf = NearCache(deaf_bus, monotonic=processes.clock.monotonic)
    else:
        deaf = NearCache(await processes.bus(), monotonic=processes.clock.monotonic)  # not listening
    loader = Loader("grant", [user_tag("u1")])

    values = [await deaf.get_or_load("k", loader, ttl_seconds=TTL) for _ in range(3)]

    assert values == ["grant"] * 3
    assert loader.calls == 3
    assert len(deaf) == 0
    with pytest.raises(ConnectionError):
        await deaf.ping()


@pytest.mark.parametrize("server", NETWORKED, indirect=True)  # an in-process bus has no connection to lose
async def test_a_cache_whose_bus_disconnects_bypasses_memory_then_starts_empty(processes):
    bus = await processes.bus()
    cache = await processes.cache(bus=bus)
    loader = Loader("grant", [user_tag("u1")])
    await cache.get_or_load("k", loader, ttl_seconds=TTL)
    assert len(cache) == 1

    await processes.kill_listener(bus)

    await until(lambda: len(cache) == 0 and bus.connected)  # reconnected, and the reset applied
    await cache.get_or_load("k", loader, ttl_seconds=TTL)
    await cache.get_or_load("k", loader, ttl_seconds=TTL)
    assert loader.calls == 2  # reloaded once after the reset, then kept again


async def test_the_memory_fake_bypasses_while_disconnected():
    bus = MemoryInvalidationBus()
    cache = NearCache(bus)
    cache.start()
    try:
        await until(lambda: len(bus._listeners) == 1)
        loader = Loader("grant", [user_tag("u1")])
        await cache.get_or_load("k", loader, ttl_seconds=TTL)
        bus.connected_flag = False

        await cache.get_or_load("k", loader, ttl_seconds=TTL)
        await cache.get_or_load("k", loader, ttl_seconds=TTL)

        assert loader.calls == 3
        with pytest.raises(ConnectionError):
            await cache.ping()
    finally:
        await cache.aclose()


async def test_the_cache_is_bounded(processes):
    cache = await processes.cache(max_entries=4)
    loaders = [Loader(f"v{n}", [user_tag(f"u{n}")]) for n in range(10)]

    for n, loader in enumerate(loaders):
        await cache.get_or_load(f"k{n}", loader, ttl_seconds=TTL)
        assert len(cache) <= 4

    newest = loaders[-1]
    await cache.get_or_load("k9", newest, ttl_seconds=TTL)
    assert newest.calls == 1  # the newest entry survived eviction
    await cache.get_or_load("k0", loaders[0], ttl_seconds=TTL)
    assert loaders[0].calls == 2  # the oldest did not
    assert len(cache) <= 4


async def test_eviction_drops_expired_entries_first(processes):
    cache = await processes.cache(max_entries=4)
    for n in range(3):
        await cache.get_or_load(f"short{n}", Loader(n, [user_tag(f"u{n}")]), ttl_seconds=1)
    keeper = Loader("keeper", [user_tag("keeper")])
    await cache.get_or_load("keeper", keeper, ttl_seconds=TTL)
    processes.clock.advance(2)

    await cache.get_or_load("new", Loader("new", [user_tag("new")]), ttl_seconds=TTL)

    assert len(cache) == 2
    await cache.get_or_load("keeper", keeper, ttl_seconds=TTL)
    assert keeper.calls == 1
    # The evicted entries' tags went with them: invalidating one drops nothing.
    assert await cache.invalidate_tags(user_tag("u0")) == 0
    assert await cache.invalidate_tags(user_tag("keeper")) == 1


async def test_invalidate_tags_still_drops_locally_when_publishing_fails(processes):
    class BrokenPublisher:
        """A bus that listens but cannot publish (the write is committed anyway)."""

        def __init__(self, inner: InvalidationBus) -> None:
            self.inner = inner

        @property
        def connected(self) -> bool:
            return self.inner.connected

        async def publish(self, invalidation: Invalidation) -> None:
            raise ConnectionError("publish failed")

        def listen(self) -> AsyncIterator[Invalidation]:
            return self.inner.listen()

        async def ping(self) -> None:
            await self.inner.ping()

    cache = await processes.cache(bus=BrokenPublisher(await processes.bus()))
    loader = Loader("grant", [user_tag("u1")])
    await cache.get_or_load("k", loader, ttl_seconds=TTL)

    assert await cache.invalidate_tags(user_tag("u1")) == 1
    await cache.get_or_load("k", loader, ttl_seconds=TTL)
    assert loader.calls == 2
