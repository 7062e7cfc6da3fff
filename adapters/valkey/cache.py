"""The Cache port on Valkey: msgpack values with PX TTLs, tag sets, SCAN-based pattern deletes."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any, Final, TypeVar

import msgspec
from valkey.asyncio import Valkey

from adapters.cache_codec import decode_value, encode_value, ttl_milliseconds
from adapters.single_flight import SingleFlight

T = TypeVar("T")

logger = logging.getLogger(__name__)

# KEYS[1] value key, KEYS[2..] tag sets; ARGV[1] value, ARGV[2] TTL in ms. A tag set lives at
# least as long as its newest member, so no live key ever drops out of its tag.
_SET_WITH_TAGS: Final = """
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
"""

# KEYS: tag sets. Unlinks every member and the set itself, in one atomic step so a key tagged
# meanwhile is either removed now or lands in a fresh set; returns how many members existed.
_INVALIDATE_TAGS: Final = """
local removed = 0
for i = 1, #KEYS do
  local members = redis.call('SMEMBERS', KEYS[i])
  for j = 1, #members, 500 do
    removed = removed + redis.call('UNLINK', unpack(members, j, math.min(j + 499, #members)))
  end
  redis.call('UNLINK', KEYS[i])
end
return removed
"""

# KEYS[1] value key, KEYS[2] lock key; ARGV[1] lock token, ARGV[2] lock TTL in ms. The value if
# present, else 1 when this caller took the load lock, else 0: one round trip per attempt.
_VALUE_OR_LOCK: Final = """
local value = redis.call('GET', KEYS[1])
if value then return value end
if redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
return 0
"""

# KEYS[1] lock key; ARGV[1] token. Only the holder releases; an expired lock may be someone else's.
_RELEASE_LOCK: Final = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

_UNLINK_BATCH: Final = 500
_FIRST_POLL_SECONDS: Final = 0.005
_MAX_POLL_SECONDS: Final = 0.1


class _Miss(Enum):
    MISS = "miss"


_MISS: Final = _Miss.MISS


def escape_glob(text: str) -> str:
    """`text` with Valkey glob metacharacters escaped, so it matches only itself."""
    return re.sub(r"([*?\[\]\\])", r"\\\1", text)


class ValkeyCache:
    """Implements `core.ports.Cache` on Valkey (or Redis 7).

    Layout under `key_prefix`: values at `{prefix}val:{key}`, tag sets at `{prefix}tag:{name}`
    (members are full value keys), load locks at `{prefix}lock:{key}`; different prefixes never
    see each other's keys. Single-flight is two-level: one load per key per process (a shared
    task), and across processes a short lock (SET NX PX `lock_ttl_seconds`) that other callers
    poll for up to `lock_wait_seconds` before loading themselves, so a dead or slow holder only
    costs a bounded wait, never a deadlock. Tag invalidation runs a Lua script over keys it
    reads from the tag set, so this needs a standalone (or primary/replica) server, not Cluster.
    """

    def __init__(
        self,
        client: Valkey,
        *,
        key_prefix: str = "pictor:",
        lock_ttl_seconds: float = 5.0,
        lock_wait_seconds: float = 2.0,
        scan_count: int = 500,
    ) -> None:
        self._client = client
        self._prefix = key_prefix
        self._lock_ttl_ms = ttl_milliseconds(lock_ttl_seconds)
        self._lock_wait_seconds = lock_wait_seconds
        self._scan_count = scan_count
        self._flights = SingleFlight()
        self._set_with_tags = client.register_script(_SET_WITH_TAGS)
        self._invalidate_tags = client.register_script(_INVALIDATE_TAGS)
        self._value_or_lock = client.register_script(_VALUE_OR_LOCK)
        self._release_lock = client.register_script(_RELEASE_LOCK)

    async def get(self, key: str, type_: type[T]) -> T | None:
        found = await self._lookup(key, type_)
        return None if found is _MISS else found

    async def set(self, key: str, value: Any, *, ttl_seconds: float, tags: Sequence[str] = ()) -> None:
        await self._write(key, encode_value(value), ttl_milliseconds(ttl_seconds), tags)

    async def delete(self, *keys: str) -> int:
        return await self._unlink([self._value_key(key) for key in keys])

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
        found = await self._lookup(key, type_)
        if found is not _MISS:
            return found
        return await self._flights.run(key, lambda: self._load(key, type_, loader, ttl_ms, tags))

    async def invalidate_tags(self, *tags: str) -> int:
        if not tags:
            return 0
        removed = await self._invalidate_tags(keys=[self._tag_key(tag) for tag in tags])
        return int(removed)

    async def delete_pattern(self, pattern: str) -> int:
        match = escape_glob(self._value_key("")) + pattern
        removed = 0
        cursor = 0
        while True:
            # SCAN walks the keyspace in small steps (KEYS would block the server); a key can be
            # reported twice, but UNLINK counts it only once.
            cursor, keys = await self._client.scan(cursor, match=match, count=self._scan_count)
            removed += await self._unlink(keys)
            if cursor == 0:
                return removed

    async def ping(self) -> None:
        await self._client.ping()

    def _value_key(self, key: str) -> str:
        return f"{self._prefix}val:{key}"

    def _tag_key(self, tag: str) -> str:
        return f"{self._prefix}tag:{tag}"

    def _lock_key(self, key: str) -> str:
        return f"{self._prefix}lock:{key}"

    async def _lookup(self, key: str, type_: type[T]) -> T | _Miss:
        data = await self._client.get(self._value_key(key))
        return _MISS if data is None else self._decode(key, data, type_)

    def _decode(self, key: str, data: bytes, type_: type[T]) -> T | _Miss:
        try:
            return decode_value(data, type_)
        except msgspec.DecodeError as error:
            # Written by an older shape of the type: a miss, so the caller reloads and overwrites.
            logger.warning("cache entry %r does not decode as %r: %s", key, type_, error)
            return _MISS

    async def _write(self, key: str, data: bytes, ttl_ms: int, tags: Sequence[str]) -> None:
        value_key = self._value_key(key)
        if not tags:
            await self._client.set(value_key, data, px=ttl_ms)
            return
        await self._set_with_tags(keys=[value_key, *map(self._tag_key, tags)], args=[data, ttl_ms])

    async def _unlink(self, keys: Sequence[str | bytes]) -> int:
        removed = 0
        for start in range(0, len(keys), _UNLINK_BATCH):
            removed += int(await self._client.unlink(*keys[start : start + _UNLINK_BATCH]))
        return removed

    async def _load(
        self,
        key: str,
        type_: type[T],
        loader: Callable[[], Awaitable[T]],
        ttl_ms: int,
        tags: Sequence[str],
    ) -> T:
        """One process's load of `key`: wait for another process's load, or take the lock and load."""
        value_key, lock_key = self._value_key(key), self._lock_key(key)
        token = secrets.token_hex(16)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._lock_wait_seconds
        pause = _FIRST_POLL_SECONDS
        while True:
            outcome = await self._value_or_lock(keys=[value_key, lock_key], args=[token, self._lock_ttl_ms])
            if isinstance(outcome, bytes):
                found = self._decode(key, outcome, type_)
                if found is not _MISS:
                    return found
                break  # an entry in an old shape: nobody is loading it, replace it
            if outcome == 1:
                try:
                    return await self._load_and_store(key, loader, ttl_ms, tags)
                finally:
                    await self._release(lock_key, token)
            remaining = deadline - loop.time()
            if remaining <= 0:
                break  # the holder is slow or gone: load without the lock rather than wait on
            await asyncio.sleep(min(pause, remaining))
            pause = min(pause * 2, _MAX_POLL_SECONDS)
        return await self._load_and_store(key, loader, ttl_ms, tags)

    async def _load_and_store(
        self, key: str, loader: Callable[[], Awaitable[T]], ttl_ms: int, tags: Sequence[str]
    ) -> T:
        value = await loader()
        await self._write(key, encode_value(value), ttl_ms, tags)
        return value

    async def _release(self, lock_key: str, token: str) -> None:
        try:
            await self._release_lock(keys=[lock_key], args=[token])
        except Exception as error:
            # The lock expires by itself; failing to release it early must not hide the outcome.
            logger.warning("could not release cache lock %r: %r", lock_key, error)
