"""The feature flag cache: every flag, as one snapshot kept in this process.

Flags are few and read on hot paths (GET /v1/flags, gated features), so each process keeps all of
them and reading costs a dict lookup. A change is committed, then `invalidate()` drops the snapshot
here and publishes on an InvalidationBus; every process listening drops its own, and the next read
loads afresh. So a change is seen everywhere as soon as the bus delivers it (well within a second
on Valkey pub/sub or PostgreSQL NOTIFY).

Two backstops bound how long a missed message could leave a process on old flags: the snapshot
expires after `ttl_seconds` anyway, and while the bus is disconnected (messages may be lost) it
lives at most `deaf_ttl_seconds` — so flags stay cheap to read, and a change still lands within
about a second, even with the bus down.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from types import MappingProxyType
from typing import Final

from adapters.invalidation_listener import InvalidationListener
from adapters.single_flight import SingleFlight
from core.cache_tags import Invalidation
from core.flags.model import Flag
from core.ports import InvalidationBus

logger = logging.getLogger(__name__)

FLAGS_TAG: Final = "feature-flags"  # the tag the bus carries for "some flag changed"
DEFAULT_TTL_SECONDS: Final = 30.0
DEFAULT_DEAF_TTL_SECONDS: Final = 1.0


class FlagSnapshotCache:
    """Implements `core.ports.FeatureFlagCache` over `bus`. Call `start()` to begin listening."""

    def __init__(
        self,
        bus: InvalidationBus,
        *,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        deaf_ttl_seconds: float = DEFAULT_DEAF_TTL_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if ttl_seconds <= 0 or deaf_ttl_seconds <= 0:
            raise ValueError("the snapshot's lifetimes must be positive")
        self._bus = bus
        self._ttl = ttl_seconds
        self._deaf_ttl = min(deaf_ttl_seconds, ttl_seconds)
        self._monotonic = monotonic
        self._snapshot: Mapping[str, Flag] | None = None
        self._loaded_at = 0.0
        self._epoch = 0  # bumped by every invalidation: a load that spans one is not kept
        self._flights = SingleFlight()
        self._listener = InvalidationListener(bus, self.apply, name="feature-flag-invalidations")
        self.loads = 0  # how many times the source was read (for tests and benchmarks)

    async def get_or_load(self, loader: Callable[[], Awaitable[Sequence[Flag]]]) -> Mapping[str, Flag]:
        snapshot = self._snapshot
        if snapshot is not None and self._monotonic() - self._loaded_at < self._lifetime():
            return snapshot

        async def load() -> Mapping[str, Flag]:
            epoch = self._epoch
            self.loads += 1
            flags = MappingProxyType({flag.key: flag for flag in await loader()})
            if epoch == self._epoch:
                self._snapshot, self._loaded_at = flags, self._monotonic()
            return flags

        return await self._flights.run("flags", load)

    async def invalidate(self) -> None:
        self.drop()
        try:
            await self._bus.publish(Invalidation((FLAGS_TAG,)))
        except Exception:  # the change is committed; peers fall back on their short lifetimes
            logger.exception("could not publish the invalidation of the feature flags")

    async def ping(self) -> None:
        await self._bus.ping()

    def drop(self) -> None:
        """Forget the snapshot in this process only; the next read loads."""
        self._epoch += 1
        self._snapshot = None

    def apply(self, invalidation: Invalidation) -> None:
        """Act on one message from the bus: a reset (messages may have been lost) or our tag."""
        if invalidation.reset or FLAGS_TAG in invalidation.tags:
            self.drop()

    def _lifetime(self) -> float:
        return self._ttl if self._bus.connected else self._deaf_ttl

    # --- listening ------------------------------------------------------------------------

    def start(self) -> None:
        self._listener.start()

    async def aclose(self) -> None:
        await self._listener.aclose()
