"""The Cache port's contract, run against every adapter: the in-memory fake and Valkey."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest

from adapters.memory.cache import MemoryCache
from adapters.memory.clock import ManualClock
from core.ports import Cache


class Principal(msgspec.Struct, frozen=True):
    user_id: uuid.UUID
    plan: str
    scopes: list[str]
    created_at: datetime
    limits: dict[str, int] = {}


PRINCIPAL = Principal(
    user_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    plan="pro",
    scopes=["images:write", "images:read"],
    created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC),
    limits={"per_minute": 60},
)


@dataclass
class CacheUnderTest:
    cache: Cache
    elapse: Callable[[float], Awaitable[None]]  # let this much time pass, as the cache sees it


@pytest.fixture(params=["memory", "valkey"])
async def subject(request: pytest.FixtureRequest) -> AsyncIterator[CacheUnderTest]:
    if request.param == "memory":
        clock = ManualClock()

        async def advance(seconds: float) -> None:
            clock.advance(seconds)

        yield CacheUnderTest(MemoryCache(monotonic=clock.monotonic), advance)
        return

    from adapters.valkey.cache import ValkeyCache, escape_glob
    from adapters.valkey.client import create_valkey_client

    url: str = request.getfixturevalue("valkey_url")
    prefix: str = request.getfixturevalue("key_prefix")
    client = create_valkey_client(url)
    try:
        yield CacheUnderTest(ValkeyCache(client, key_prefix=prefix), asyncio.sleep)
    finally:
        async for key in client.scan_iter(match=escape_glob(prefix) + "*", count=500):
            await client.unlink(key)
        await client.aclose()


@pytest.fixture
def cache(subject: CacheUnderTest) -> Cache:
    return subject.cache


class Loader:
    """A loader that counts its calls, optionally slow or failing."""

    def __init__(self, value: Any = "loaded", *, delay: float = 0.0, error: Exception | None = None) -> None:
        self.value = value
        self.delay = delay
        self.error = error
        self.calls = 0

    async def __call__(self) -> Any:
        self.calls += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.error is not None:
            raise self.error
        return self.value


@pytest.mark.parametrize(
    ("value", "type_"),
    [
        (PRINCIPAL, Principal),
        ([PRINCIPAL, PRINCIPAL], list[Principal]),
        ({"free": 10, "pro": 1000}, dict[str, int]),
        ([1, 2, 3], list[int]),
        ("a string ✓", str),
        (42, int),
        (-(2**62), int),
        (1.5, float),
        (True, bool),
        ({"nested": [{"a": None}]}, dict[str, Any]),
    ],
)
async def test_values_round_trip_to_the_requested_type(cache: Cache, value: Any, type_: Any) -> None:
    await cache.set("k", value, ttl_seconds=30)
    assert await cache.get("k", type_) == value


async def test_struct_fields_are_decoded_to_their_declared_types(cache: Cache) -> None:
    await cache.set("principal", PRINCIPAL, ttl_seconds=30)
    got = await cache.get("principal", Principal)
    assert got is not None
    assert isinstance(got.user_id, uuid.UUID)
    assert got.created_at == PRINCIPAL.created_at


async def test_a_missing_key_is_none(cache: Cache) -> None:
    assert await cache.get("never-set", str) is None


async def test_a_value_of_another_shape_reads_as_a_miss(cache: Cache) -> None:
    await cache.set("k", "not a principal", ttl_seconds=30)
    assert await cache.get("k", Principal) is None
    loader = Loader(PRINCIPAL)
    assert await cache.get_or_set("k", Principal, loader, ttl_seconds=30) == PRINCIPAL
    assert loader.calls == 1
    assert await cache.get("k", Principal) == PRINCIPAL


async def test_entries_expire_after_their_sub_second_ttl(subject: CacheUnderTest) -> None:
    cache = subject.cache
    await cache.set("short", "v", ttl_seconds=0.2)
    await cache.set("long", "v", ttl_seconds=30)
    assert await cache.get("short", str) == "v"
    await subject.elapse(0.3)
    assert await cache.get("short", str) is None
    assert await cache.get("long", str) == "v"


async def test_set_overwrites_value_and_ttl(subject: CacheUnderTest) -> None:
    cache = subject.cache
    await cache.set("k", "first", ttl_seconds=0.2)
    await cache.set("k", "second", ttl_seconds=30)
    await subject.elapse(0.3)
    assert await cache.get("k", str) == "second"


async def test_ttl_must_be_positive(cache: Cache) -> None:
    loader = Loader()
    with pytest.raises(ValueError):
        await cache.set("k", "v", ttl_seconds=0)
    with pytest.raises(ValueError):
        await cache.get_or_set("k", str, loader, ttl_seconds=-1)
    assert loader.calls == 0
    assert await cache.get("k", str) is None


async def test_a_value_msgspec_cannot_encode_is_refused(cache: Cache) -> None:
    with pytest.raises(TypeError):
        await cache.set("k", object(), ttl_seconds=30)
    assert await cache.get("k", str) is None


async def test_delete_counts_the_keys_that_existed(subject: CacheUnderTest) -> None:
    cache = subject.cache
    await cache.set("a", 1, ttl_seconds=30)
    await cache.set("b", 2, ttl_seconds=30)
    await cache.set("expired", 3, ttl_seconds=0.1)
    await subject.elapse(0.2)
    assert await cache.delete("a", "b", "expired", "never-set", "a") == 2
    assert await cache.get("a", int) is None
    assert await cache.delete("a") == 0
    assert await cache.delete() == 0


async def test_invalidating_a_tag_removes_only_its_keys(cache: Cache) -> None:
    await cache.set("user:1:profile", 1, ttl_seconds=30, tags=["user:1"])
    await cache.set("user:1:keys", 2, ttl_seconds=30, tags=["user:1", "plan:pro"])
    await cache.set("user:2:profile", 3, ttl_seconds=30, tags=["user:2", "plan:pro"])
    await cache.set("untagged", 4, ttl_seconds=30)

    assert await cache.invalidate_tags("user:1") == 2
    assert await cache.get("user:1:profile", int) is None
    assert await cache.get("user:1:keys", int) is None
    assert await cache.get("user:2:profile", int) == 3
    assert await cache.get("untagged", int) == 4

    # user:1:keys was in plan:pro too, but is gone already: only user:2:profile counts.
    assert await cache.invalidate_tags("plan:pro", "no-such-tag") == 1
    assert await cache.get("user:2:profile", int) is None
    assert await cache.get("untagged", int) == 4
    assert await cache.invalidate_tags("user:1", "plan:pro") == 0
    assert await cache.invalidate_tags() == 0


async def test_a_tag_lives_as_long_as_its_longest_lived_key(subject: CacheUnderTest) -> None:
    cache = subject.cache
    await cache.set("short", 1, ttl_seconds=0.2, tags=["t"])
    await cache.set("long", 2, ttl_seconds=30, tags=["t"])
    await cache.set("shorter-later", 3, ttl_seconds=0.1, tags=["t"])
    await subject.elapse(0.3)
    assert await cache.get("long", int) == 2
    assert await cache.invalidate_tags("t") == 1
    assert await cache.get("long", int) is None


async def test_a_tag_starts_afresh_after_invalidation(cache: Cache) -> None:
    await cache.set("a", 1, ttl_seconds=30, tags=["t"])
    assert await cache.invalidate_tags("t") == 1
    await cache.set("b", 2, ttl_seconds=30, tags=["t"])
    assert await cache.invalidate_tags("t") == 1
    assert await cache.get("b", int) is None


async def test_delete_pattern_matches_globs(cache: Cache) -> None:
    keys = ["user:1:profile", "user:1:keys", "user:2:profile", "user:10:profile", "plan:free", "plan:pro"]
    for key in keys:
        await cache.set(key, key, ttl_seconds=30)

    assert await cache.delete_pattern("user:1:*") == 2
    assert await cache.delete_pattern("user:?:profile") == 1
    assert await cache.get("user:10:profile", str) == "user:10:profile"
    assert await cache.delete_pattern("plan:[f]*") == 1
    assert await cache.delete_pattern("nothing:*") == 0
    assert await cache.delete_pattern("*") == 2
    for key in keys:
        assert await cache.get(key, str) is None


@pytest.mark.parametrize(
    ("pattern", "removed"),
    [
        ("k[ab]", {"ka", "kb"}),
        ("k[^ab]", {"kc", "k*"}),
        ("k[a-b]", {"ka", "kb"}),
        ("k\\*", {"k*"}),
        ("k?", {"ka", "kb", "kc", "k*"}),
        ("k*", {"ka", "kb", "kc", "k*", "kab"}),
    ],
)
async def test_delete_pattern_classes_and_escapes(cache: Cache, pattern: str, removed: set[str]) -> None:
    keys = ["ka", "kb", "kc", "k*", "kab"]
    for key in keys:
        await cache.set(key, key, ttl_seconds=30)
    assert await cache.delete_pattern(pattern) == len(removed)
    assert {key for key in keys if await cache.get(key, str) is None} == removed


async def test_delete_pattern_works_through_many_keys(cache: Cache) -> None:
    for i in range(1200):
        await cache.set(f"bulk:{i}", i, ttl_seconds=30)
    await cache.set("kept", 0, ttl_seconds=30)
    assert await cache.delete_pattern("bulk:*") == 1200
    assert await cache.get("bulk:7", int) is None
    assert await cache.get("kept", int) == 0


async def test_get_or_set_loads_on_a_miss_then_serves_the_stored_value(subject: CacheUnderTest) -> None:
    cache = subject.cache
    loader = Loader(PRINCIPAL)
    assert await cache.get_or_set("p", Principal, loader, ttl_seconds=0.2) == PRINCIPAL
    assert await cache.get_or_set("p", Principal, loader, ttl_seconds=0.2) == PRINCIPAL
    assert loader.calls == 1
    assert await cache.get("p", Principal) == PRINCIPAL
    await subject.elapse(0.3)
    assert await cache.get_or_set("p", Principal, loader, ttl_seconds=30) == PRINCIPAL
    assert loader.calls == 2


async def test_get_or_set_attaches_tags(cache: Cache) -> None:
    await cache.get_or_set("p", str, Loader("v"), ttl_seconds=30, tags=["user:1"])
    assert await cache.invalidate_tags("user:1") == 1
    assert await cache.get("p", str) is None


async def test_get_or_set_caches_a_none_result(cache: Cache) -> None:
    loader = Loader(None)
    assert await cache.get_or_set("nothing", type(None), loader, ttl_seconds=30) is None
    assert await cache.get_or_set("nothing", type(None), loader, ttl_seconds=30) is None
    assert loader.calls == 1


async def test_concurrent_misses_run_the_loader_once(cache: Cache) -> None:
    loader = Loader(PRINCIPAL, delay=0.05)
    results = await asyncio.gather(
        *(cache.get_or_set("hot", Principal, loader, ttl_seconds=30) for _ in range(20))
    )
    assert loader.calls == 1
    assert results == [PRINCIPAL] * 20
    assert await cache.get("hot", Principal) == PRINCIPAL


async def test_concurrent_misses_on_different_keys_load_each(cache: Cache) -> None:
    loaders = {key: Loader(key, delay=0.02) for key in ("a", "b", "c")}
    results = await asyncio.gather(
        *(cache.get_or_set(key, str, loaders[key], ttl_seconds=30) for key in loaders for _ in range(5))
    )
    assert results == [key for key in loaders for _ in range(5)]
    assert [loader.calls for loader in loaders.values()] == [1, 1, 1]


async def test_a_loader_error_reaches_every_waiter_and_caches_nothing(cache: Cache) -> None:
    failing = Loader(delay=0.05, error=LookupError("source down"))
    outcomes = await asyncio.gather(
        *(cache.get_or_set("k", str, failing, ttl_seconds=30) for _ in range(20)), return_exceptions=True
    )
    assert failing.calls == 1
    assert all(isinstance(outcome, LookupError) for outcome in outcomes)
    assert await cache.get("k", str) is None

    working = Loader("recovered")
    assert await cache.get_or_set("k", str, working, ttl_seconds=30) == "recovered"
    assert working.calls == 1


async def test_a_cancelled_caller_does_not_cancel_the_others(cache: Cache) -> None:
    loader = Loader("v", delay=0.1)
    first = asyncio.create_task(cache.get_or_set("k", str, loader, ttl_seconds=30))
    second = asyncio.create_task(cache.get_or_set("k", str, loader, ttl_seconds=30))
    await asyncio.sleep(0.02)
    first.cancel()
    assert await second == "v"
    assert first.cancelled()
    assert loader.calls == 1
    assert await cache.get("k", str) == "v"


async def test_ping_answers(cache: Cache) -> None:
    await cache.ping()
