"""What the contract suite cannot show about the in-memory cache: exact timing and glob details."""

from __future__ import annotations

import pytest

from adapters.memory.cache import MemoryCache, glob_matcher
from adapters.memory.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def cache(clock: ManualClock) -> MemoryCache:
    return MemoryCache(monotonic=clock.monotonic)


async def test_an_entry_expires_exactly_at_its_ttl(cache: MemoryCache, clock: ManualClock) -> None:
    await cache.set("k", "v", ttl_seconds=2)
    clock.advance(1.999)
    assert await cache.get("k", str) == "v"
    clock.advance(0.001)
    assert await cache.get("k", str) is None


async def test_an_expired_tag_no_longer_reaches_a_key_reset_without_it(
    cache: MemoryCache, clock: ManualClock
) -> None:
    await cache.set("k", 1, ttl_seconds=1, tags=["t"])
    clock.advance(1)
    await cache.set("k", 2, ttl_seconds=10)
    assert await cache.invalidate_tags("t") == 0
    assert await cache.get("k", int) == 2


async def test_sweeping_expired_entries_keeps_the_live_ones(cache: MemoryCache, clock: ManualClock) -> None:
    for i in range(100):
        await cache.set(f"old:{i}", i, ttl_seconds=1, tags=["old"])
    clock.advance(2)
    for i in range(2100):  # enough writes to trigger sweeps
        await cache.set(f"new:{i}", i, ttl_seconds=60, tags=["new"])
    assert all([await cache.get(f"new:{i}", int) == i for i in range(2100)])
    assert await cache.get("old:5", int) is None
    assert await cache.invalidate_tags("old") == 0
    assert await cache.invalidate_tags("new") == 2100


@pytest.mark.parametrize(
    ("pattern", "key", "matches"),
    [
        ("*", "", True),
        ("*", "a:b:c", True),
        ("a*", "a", True),
        ("a*c", "abbbc", True),
        ("a*c", "abbbd", False),
        ("?", "a", True),
        ("?", "", False),
        ("?", "ab", False),
        ("[abc]", "b", True),
        ("[abc]", "d", False),
        ("[^abc]", "d", True),
        ("[^abc]", "a", False),
        ("[a-c]x", "bx", True),
        ("[c-a]x", "bx", True),  # Valkey accepts a reversed range
        ("[a-c]x", "dx", False),
        ("[\\]]", "]", True),
        ("\\*", "*", True),
        ("\\*", "a", False),
        ("\\?", "?", True),
        ("a.b", "a.b", True),
        ("a.b", "axb", False),  # regex characters are literal
        ("(a)+", "(a)+", True),
        ("[ab", "a", True),  # a class left open closes at the end, as in Valkey
        ("user:*:profile", "user:1:profile", True),
        ("user:*:profile", "user:1:keys", False),
        ("line*", "line\nbreak", True),
    ],
)
def test_glob_patterns_match_as_in_valkey(pattern: str, key: str, matches: bool) -> None:
    assert glob_matcher(pattern)(key) is matches
