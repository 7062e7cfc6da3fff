"""The InvalidationBus port's contract, run against every adapter: in memory, Valkey pub/sub and
PostgreSQL LISTEN/NOTIFY.

A listener's first item is a `reset`; then it hears what any bus on the same channel publishes
(this process's or another's), in order and whole; and when the server drops its connection it
listens again and says `reset` first, because what was published meanwhile is lost.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

import pytest

from adapters.memory.invalidation_bus import MemoryInvalidationBus
from core.cache_tags import Invalidation, api_key_tag, user_tag
from core.ports import InvalidationBus
from tests.support.services import unique_name

WAIT_SECONDS = 10.0  # a bound on waiting for a message, never a measured expectation


@dataclass
class BusUnderTest:
    bus: InvalidationBus
    # A bus on the same channel with connections of its own: another process's publisher.
    peer: Callable[[], Awaitable[InvalidationBus]]
    # Make the server drop the connection `bus.listen()` listens on; None where there is no server.
    kill_listener: Callable[[], Awaitable[None]] | None


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


@pytest.fixture
async def subject(server: Server) -> AsyncIterator[BusUnderTest]:
    async with AsyncExitStack() as stack:
        if server.url is None:
            bus = MemoryInvalidationBus()

            async def same_bus() -> InvalidationBus:
                return bus  # one process: publishers and listeners share the bus

            yield BusUnderTest(bus, same_bus, None)
        elif server.kind == "valkey":
            yield await _valkey_subject(server.url, stack)
        else:
            yield await _postgres_subject(server.url, stack)


async def _valkey_subject(url: str, stack: AsyncExitStack) -> BusUnderTest:
    from adapters.valkey.client import create_valkey_client
    from adapters.valkey.invalidation_bus import ValkeyInvalidationBus

    channel = unique_name("pictor_test") + ":invalidations"
    listener_name = unique_name("bus_listener")  # finds this test's pub/sub connection, nobody else's

    def client(name: str) -> Any:
        valkey = create_valkey_client(url, client_name=name)
        stack.push_async_callback(valkey.aclose)
        return valkey

    admin = client(unique_name("bus_admin"))

    async def peer() -> InvalidationBus:
        return ValkeyInvalidationBus(client(unique_name("bus_peer")), channel=channel)

    async def kill_listener() -> None:
        subscribers = [
            entry for entry in await admin.client_list(_type="pubsub") if entry.get("name") == listener_name
        ]
        assert subscribers, "the listener has no pub/sub connection to kill"
        for entry in subscribers:
            await admin.execute_command("CLIENT", "KILL", "ID", entry["id"])

    return BusUnderTest(ValkeyInvalidationBus(client(listener_name), channel=channel), peer, kill_listener)


async def _postgres_subject(url: str, stack: AsyncExitStack) -> BusUnderTest:
    import psycopg

    from adapters.postgres.invalidation_bus import PostgresInvalidationBus
    from adapters.postgres.pool import open_pool

    channel = unique_name("invalidations")

    async def pool() -> Any:
        opened = await open_pool(url, min_size=1, max_size=2, name=unique_name("bus"))
        stack.push_async_callback(opened.close)
        return opened

    async def peer() -> InvalidationBus:
        return PostgresInvalidationBus(await pool(), channel=channel)

    async def kill_listener() -> None:
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE query LIKE 'LISTEN%%' AND query LIKE %s AND pid <> pg_backend_pid()",
                (f"%{channel}%",),
            )
            killed = await cursor.fetchall()
        assert killed and all(row[0] for row in killed), "no LISTEN backend to terminate"

    return BusUnderTest(PostgresInvalidationBus(await pool(), channel=channel), peer, kill_listener)


async def next_of(listening: AsyncIterator[Invalidation]) -> Invalidation:
    return await asyncio.wait_for(anext(listening), WAIT_SECONDS)


async def tags_until(listening: AsyncIterator[Invalidation], count: int) -> list[str]:
    """The tags of the invalidations that arrive until `count` tags have (a long list may come in
    several messages)."""
    tags: list[str] = []
    while len(tags) < count:
        invalidation = await next_of(listening)
        assert not invalidation.reset, "an unexpected reset: the listener lost its connection"
        tags.extend(invalidation.tags)
    return tags


@pytest.fixture
async def listening(subject: BusUnderTest) -> AsyncIterator[AsyncIterator[Invalidation]]:
    stream = subject.bus.listen()
    try:
        yield stream
    finally:
        await stream.aclose()  # type: ignore[attr-defined]


async def test_a_listener_starts_with_a_reset_then_hears_publications_in_order(subject, listening):
    first = await next_of(listening)
    assert first == Invalidation(reset=True)
    assert subject.bus.connected
    await subject.bus.ping()

    await subject.bus.publish(Invalidation((user_tag("u1"),)))
    await subject.bus.publish(Invalidation((api_key_tag("k1"), user_tag("u2"))))
    await subject.bus.publish(Invalidation(reset=True))

    assert await next_of(listening) == Invalidation((user_tag("u1"),))
    assert await next_of(listening) == Invalidation((api_key_tag("k1"), user_tag("u2")))
    assert await next_of(listening) == Invalidation(reset=True)
    assert subject.bus.connected


async def test_a_listener_hears_another_process_publish(subject, listening):
    assert (await next_of(listening)).reset
    other_process = await subject.peer()

    for n in range(5):
        await other_process.publish(Invalidation((user_tag(f"u{n}"),)))

    assert [await next_of(listening) for _ in range(5)] == [
        Invalidation((user_tag(f"u{n}"),)) for n in range(5)
    ]


async def test_a_large_tag_list_arrives_complete_and_in_order(subject, listening):
    assert (await next_of(listening)).reset
    # About 90 kB of tags: over PostgreSQL's 8000-byte NOTIFY limit many times.
    tags = [api_key_tag(f"{n:06d}-{'k' * 60}") for n in range(1500)]

    await (await subject.peer()).publish(Invalidation(tuple(tags)))
    await subject.bus.publish(Invalidation((user_tag("after"),)))

    assert await tags_until(listening, len(tags)) == tags
    assert await next_of(listening) == Invalidation((user_tag("after"),))


@pytest.mark.parametrize("server", NETWORKED, indirect=True)  # an in-process bus has no connection to lose
async def test_a_listener_whose_connection_is_killed_listens_again_after_a_reset(subject, listening):
    assert subject.kill_listener is not None
    assert (await next_of(listening)).reset
    await subject.bus.publish(Invalidation((user_tag("before"),)))
    assert await next_of(listening) == Invalidation((user_tag("before"),))

    await subject.kill_listener()

    assert await next_of(listening) == Invalidation(reset=True)
    assert subject.bus.connected
    await (await subject.peer()).publish(Invalidation((user_tag("after"),)))
    assert await next_of(listening) == Invalidation((user_tag("after"),))


async def test_several_listeners_each_hear_every_publication(subject):
    first, second = subject.bus.listen(), (await subject.peer()).listen()
    try:
        assert (await next_of(first)).reset
        assert (await next_of(second)).reset

        await subject.bus.publish(Invalidation((user_tag("both"),)))

        assert await next_of(first) == Invalidation((user_tag("both"),))
        assert await next_of(second) == Invalidation((user_tag("both"),))
    finally:
        await first.aclose()  # type: ignore[attr-defined]
        await second.aclose()  # type: ignore[attr-defined]
