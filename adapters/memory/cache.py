"""An in-process Cache: the fake for tests and the embedded default for a single process."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any, Final, TypeVar

import msgspec

from adapters.cache_codec import decode_value, encode_value, ttl_milliseconds
from adapters.single_flight import SingleFlight

T = TypeVar("T")

logger = logging.getLogger(__name__)

# Expired entries are dropped when read; a full sweep every so many writes bounds the rest.
_SWEEP_EVERY_WRITES: Final = 1024


class _Miss(Enum):
    MISS = "miss"


_MISS: Final = _Miss.MISS


class MemoryCache:
    """Implements `core.ports.Cache` in a dict, with the same semantics as `ValkeyCache`.

    Values are stored msgpack-encoded (callers never share mutable objects through the cache and
    the same types round-trip as on Valkey). Time comes from `monotonic`, so tests can expire
    entries by moving a manual clock. Tag membership is additive, as on Valkey: a key stays in a
    tag's set until the tag is invalidated or expires, so re-setting a key with other tags can
    only over-invalidate it, never leave it stale.
    """

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._entries: dict[str, tuple[bytes, float]] = {}
        self._tags: dict[str, tuple[set[str], float]] = {}
        self._flights = SingleFlight()
        self._writes = 0

    async def get(self, key: str, type_: type[T]) -> T | None:
        found = self._lookup(key, type_)
        return None if found is _MISS else found

    async def set(self, key: str, value: Any, *, ttl_seconds: float, tags: Sequence[str] = ()) -> None:
        self._store(key, encode_value(value), ttl_milliseconds(ttl_seconds), tags)

    async def delete(self, *keys: str) -> int:
        now = self._monotonic()
        removed = 0
        for key in keys:
            entry = self._entries.pop(key, None)
            if entry is not None and entry[1] > now:
                removed += 1
        return removed

    async def get_or_set(
        self,
        key: str,
        type_: type[T],
        loader: Callable[[], Awaitable[T]],
        *,
        ttl_seconds: float,
        tags: Sequence[str] = (),
    ) -> T:
        ttl_ms = ttl_milliseconds(ttl_seconds)
        found = self._lookup(key, type_)
        if found is not _MISS:
            return found

        async def load() -> T:
            # A flight that finished just before this one began may have filled the key.
            again = self._lookup(key, type_)
            if again is not _MISS:
                return again
            value = await loader()
            self._store(key, encode_value(value), ttl_ms, tags)
            return value

        return await self._flights.run(key, load)

    async def invalidate_tags(self, *tags: str) -> int:
        now = self._monotonic()
        keys: set[str] = set()
        for tag in tags:
            members = self._tags.pop(tag, None)
            if members is not None and members[1] > now:
                keys |= members[0]
        return await self.delete(*keys)

    async def delete_pattern(self, pattern: str) -> int:
        matches = glob_matcher(pattern)
        return await self.delete(*[key for key in self._entries if matches(key)])

    async def ping(self) -> None:
        return None

    def _lookup(self, key: str, type_: type[T]) -> T | _Miss:
        entry = self._entries.get(key)
        if entry is None:
            return _MISS
        data, expires_at = entry
        if expires_at <= self._monotonic():
            del self._entries[key]
            return _MISS
        try:
            return decode_value(data, type_)
        except msgspec.DecodeError as error:
            # Written by an older shape of the type: a miss, so the caller reloads and overwrites.
            logger.warning("cache entry %r does not decode as %r: %s", key, type_, error)
            return _MISS

    def _store(self, key: str, data: bytes, ttl_ms: int, tags: Sequence[str]) -> None:
        now = self._monotonic()
        expires_at = now + ttl_ms / 1000
        self._entries[key] = (data, expires_at)
        for tag in tags:
            members = self._tags.get(tag)
            if members is None or members[1] <= now:
                self._tags[tag] = ({key}, expires_at)
            else:
                members[0].add(key)
                self._tags[tag] = (members[0], max(members[1], expires_at))
        self._writes += 1
        if self._writes % _SWEEP_EVERY_WRITES == 0:
            self._sweep(now)

    def _sweep(self, now: float) -> None:
        self._entries = {key: entry for key, entry in self._entries.items() if entry[1] > now}
        self._tags = {tag: members for tag, members in self._tags.items() if members[1] > now}


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """A predicate matching whole strings the way Valkey's MATCH does.

    `*` any run of characters, `?` one character, `[abc]`, `[a-z]` and `[^abc]` classes, and a
    backslash makes the next character literal.
    """
    parts: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char == "\\" and i + 1 < n:
            i += 1
            parts.append(re.escape(pattern[i]))
        elif char == "[":
            i, part = _character_class(pattern, i + 1)
            parts.append(part)
        else:
            parts.append(re.escape(char))
        i += 1
    compiled = re.compile("".join(parts), re.DOTALL)
    return lambda key: compiled.fullmatch(key) is not None


def _character_class(pattern: str, i: int) -> tuple[int, str]:
    """Translate `[...]` starting after the bracket; returns the index of its `]` and the regex."""
    n = len(pattern)
    negate = i < n and pattern[i] == "^"
    if negate:
        i += 1
    items: list[str] = []
    while i < n and pattern[i] != "]":
        if pattern[i] == "\\" and i + 1 < n:
            i += 1
            items.append(re.escape(pattern[i]))
        elif i + 2 < n and pattern[i + 1] == "-" and pattern[i + 2] != "]":
            low, high = sorted((pattern[i], pattern[i + 2]))
            items.append(f"{re.escape(low)}-{re.escape(high)}")
            i += 2
        else:
            items.append(re.escape(pattern[i]))
        i += 1
    # Like Valkey, a class left open at the end of the pattern closes there.
    if not items:
        return i, "." if negate else "(?!)"
    return i, ("[^" if negate else "[") + "".join(items) + "]"
