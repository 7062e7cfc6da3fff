"""The principal cache: resolved credentials kept in this process, invalidated from every process.

A hit costs a dict lookup, no network round trip (DESIGN.md §11). Correctness comes from the
InvalidationBus: a writer invalidates a tag after committing, every process drops the entries
under it, and while a process cannot hear the bus it serves nothing from memory (a lost message
must never leave a revoked key working). Entries also expire after their TTL, as a backstop.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Final, TypeVar

from adapters.invalidation_listener import InvalidationListener
from adapters.single_flight import SingleFlight
from core.cache_tags import Invalidation
from core.ports import InvalidationBus

T = TypeVar("T")

logger = logging.getLogger(__name__)

DEFAULT_MAX_ENTRIES: Final = 100_000


class NearCache:
    """Implements `core.ports.PrincipalCache`. Values are kept as the objects the loader returned
    (frozen Structs), never shared with another process. Call `start()` to begin listening."""

    def __init__(
        self,
        bus: InvalidationBus,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        max_entries: int = DEFAULT_MAX_ENTRIES,
    ) -> None:
        self._bus = bus
        self._monotonic = monotonic
        self._max_entries = max_entries
        self._entries: dict[str, tuple[Any, float, tuple[str, ...]]] = {}
        self._by_tag: dict[str, set[str]] = {}
        self._epoch = 0  # bumped by every invalidation: a load that spans one is not kept
        self._flights = SingleFlight()
        self._listener = InvalidationListener(bus, self.apply, name="principal-cache-invalidations")

    def __len__(self) -> int:
        return len(self._entries)

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[tuple[T, Sequence[str]]]],
        *,
        ttl_seconds: float,
    ) -> T:
        if not self._bus.connected:
            value, _ = await loader()  # deaf to invalidations: the source decides
            return value
        entry = self._entries.get(key)
        if entry is not None and entry[1] > self._monotonic():
            found: T = entry[0]
            return found

        async def load() -> T:
            epoch = self._epoch
            value, tags = await loader()
            if epoch == self._epoch and self._bus.connected:
                self._store(key, value, ttl_seconds, tuple(tags))
            return value

        return await self._flights.run(key, load)

    async def invalidate_tags(self, *tags: str) -> int:
        dropped = self._drop_tags(tags)
        try:
            await self._bus.publish(Invalidation(tuple(tags)))
        except Exception:  # the write is committed; peers that cannot hear the bus serve nothing cached
            logger.exception("could not publish the invalidation of %s", ", ".join(tags))
        return dropped

    async def ping(self) -> None:
        await self._bus.ping()

    # --- listening ------------------------------------------------------------------------

    def start(self) -> None:
        self._listener.start()

    async def aclose(self) -> None:
        await self._listener.aclose()

    def apply(self, invalidation: Invalidation) -> None:
        """Act on one message from the bus."""
        if invalidation.reset:
            self._epoch += 1
            self._entries.clear()
            self._by_tag.clear()
        else:
            self._drop_tags(invalidation.tags)

    # --- storage --------------------------------------------------------------------------

    def _drop_tags(self, tags: Sequence[str]) -> int:
        self._epoch += 1
        dropped = 0
        for tag in tags:
            for key in self._by_tag.pop(tag, ()):
                if self._entries.pop(key, None) is not None:
                    dropped += 1
        return dropped

    def _store(self, key: str, value: Any, ttl_seconds: float, tags: tuple[str, ...]) -> None:
        now = self._monotonic()
        if len(self._entries) >= self._max_entries and key not in self._entries:
            self._evict(now)
        self._entries[key] = (value, now + ttl_seconds, tags)
        for tag in tags:
            self._by_tag.setdefault(tag, set()).add(key)

    def _evict(self, now: float) -> None:
        """Drop expired entries; if that is not enough, the oldest half (insertion order)."""
        live = {key: entry for key, entry in self._entries.items() if entry[1] > now}
        if len(live) >= self._max_entries:
            keep = list(live.items())[len(live) // 2 :]
            live = dict(keep)
        self._entries = live
        self._by_tag = {}
        for key, (_, _, tags) in live.items():
            for tag in tags:
                self._by_tag.setdefault(tag, set()).add(key)
