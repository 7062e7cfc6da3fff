"""What only the Valkey cache does: its key layout, URLs, and single-flight across processes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from valkey.asyncio import Valkey

from adapters.valkey.cache import ValkeyCache, escape_glob
from adapters.valkey.client import create_valkey_client

pytestmark = pytest.mark.services


@pytest.fixture
async def client(valkey_url: str, key_prefix: str) -> AsyncIterator[Valkey]:
    client = create_valkey_client(valkey_url)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=escape_glob(key_prefix) + "*", count=500):
            await client.unlink(key)
        await client.aclose()


class Loader:
    def __init__(self, value: Any = "loaded", *, delay: float = 0.0, error: Exception | None = None) -> None:
        self.value, self.delay, self.error, self.calls = value, delay, error, 0

    async def __call__(self) -> Any:
        self.calls += 1
        await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


async def test_a_valkey_scheme_url_connects(valkey_url: str) -> None:
    client = create_valkey_client(valkey_url.replace("redis://", "valkey://", 1))
    try:
        assert await client.ping()
    finally:
        await client.aclose()


async def test_keys_live_under_the_prefix_with_millisecond_ttls(client: Valkey, key_prefix: str) -> None:
    cache = ValkeyCache(client, key_prefix=key_prefix)
    await cache.set("k", "v", ttl_seconds=1.5, tags=["t"])
    assert 0 < await client.pttl(f"{key_prefix}val:k") <= 1500
    assert 0 < await client.pttl(f"{key_prefix}tag:t") <= 1500
    assert set(await client.smembers(f"{key_prefix}tag:t")) == {f"{key_prefix}val:k".encode()}


async def test_prefixes_never_see_each_other(client: Valkey, key_prefix: str) -> None:
    mine = ValkeyCache(client, key_prefix=key_prefix + "a:")
    theirs = ValkeyCache(client, key_prefix=key_prefix + "b:")
    await mine.set("k", 1, ttl_seconds=30, tags=["t"])
    await theirs.set("k", 2, ttl_seconds=30, tags=["t"])
    assert await mine.get("k", int) == 1
    assert await mine.delete_pattern("*") == 1
    assert await mine.invalidate_tags("t") == 0
    assert await theirs.get("k", int) == 2


async def test_a_prefix_with_glob_characters_only_matches_itself(client: Valkey, key_prefix: str) -> None:
    odd = ValkeyCache(client, key_prefix=key_prefix + "[x]*:")
    plain = ValkeyCache(client, key_prefix=key_prefix + "x-other:")
    await odd.set("k", 1, ttl_seconds=30)
    await plain.set("k", 2, ttl_seconds=30)
    assert await odd.delete_pattern("*") == 1
    assert await plain.get("k", int) == 2


async def test_delete_pattern_scans_and_never_calls_keys(
    client: Valkey, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def forbidden(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("KEYS blocks the server; use SCAN")

    monkeypatch.setattr(client, "keys", forbidden)
    cache = ValkeyCache(client, key_prefix=key_prefix, scan_count=10)
    for i in range(55):
        await cache.set(f"k{i}", i, ttl_seconds=30)
    assert await cache.delete_pattern("k*") == 55


async def test_concurrent_misses_in_two_processes_load_once(
    valkey_url: str, client: Valkey, key_prefix: str
) -> None:
    # Two caches with their own connections and single-flight maps stand in for two processes.
    other_client = create_valkey_client(valkey_url)
    try:
        here = ValkeyCache(client, key_prefix=key_prefix)
        there = ValkeyCache(other_client, key_prefix=key_prefix)
        loader = Loader("v", delay=0.2)
        results = await asyncio.gather(
            *(
                cache.get_or_set("hot", str, loader, ttl_seconds=30)
                for cache in (here, there)
                for _ in range(10)
            )
        )
    finally:
        await other_client.aclose()
    assert results == ["v"] * 20
    assert loader.calls == 1
    assert await client.exists(f"{key_prefix}lock:hot") == 0


async def test_a_lock_left_by_a_dead_process_expires(client: Valkey, key_prefix: str) -> None:
    await client.set(f"{key_prefix}lock:k", "someone-who-died", px=200)
    cache = ValkeyCache(client, key_prefix=key_prefix, lock_wait_seconds=5)
    loader = Loader("v")
    assert await cache.get_or_set("k", str, loader, ttl_seconds=30) == "v"
    assert loader.calls == 1
    assert await client.exists(f"{key_prefix}lock:k") == 0


async def test_a_slow_holder_is_waited_for_only_briefly(client: Valkey, key_prefix: str) -> None:
    await client.set(f"{key_prefix}lock:k", "someone-slow", px=10_000)
    cache = ValkeyCache(client, key_prefix=key_prefix, lock_wait_seconds=0.1)
    loader = Loader("v")
    assert await cache.get_or_set("k", str, loader, ttl_seconds=30) == "v"
    assert loader.calls == 1
    assert await cache.get("k", str) == "v"
    assert await client.get(f"{key_prefix}lock:k") == b"someone-slow"  # not ours to release


async def test_waiters_in_another_process_get_the_holders_value(client: Valkey, key_prefix: str) -> None:
    await client.set(f"{key_prefix}lock:k", "other-process", px=10_000)
    cache = ValkeyCache(client, key_prefix=key_prefix, lock_wait_seconds=5)
    loader = Loader("mine")
    waiting = asyncio.create_task(cache.get_or_set("k", str, loader, ttl_seconds=30))
    await asyncio.sleep(0.05)
    await ValkeyCache(client, key_prefix=key_prefix).set("k", "theirs", ttl_seconds=30)
    assert await waiting == "theirs"
    assert loader.calls == 0


async def test_a_failed_load_releases_the_lock(client: Valkey, key_prefix: str) -> None:
    cache = ValkeyCache(client, key_prefix=key_prefix)
    with pytest.raises(LookupError):
        await cache.get_or_set("k", str, Loader(error=LookupError("down")), ttl_seconds=30)
    assert await client.exists(f"{key_prefix}lock:k") == 0
