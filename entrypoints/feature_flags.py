"""Feature flags at the composition root: the per-process flag cache on the registry, and the flag
use cases built from a container (for the HTTP routes, the CLI and gated features)."""

from __future__ import annotations

from typing import Any

import svcs

from adapters.flag_cache import FlagSnapshotCache
from adapters.memory.invalidation_bus import MemoryInvalidationBus
from core.flags.service import FeatureFlags, FlagAdministration
from core.ports import Clock, Database, FeatureFlagCache, Ids, InvalidationBus
from entrypoints.settings import Settings


def register_feature_flags(registry: svcs.Registry, settings: Settings, pool: Any, valkey: Any) -> None:
    """The flag snapshot of this process, invalidated through Valkey pub/sub when there is Valkey,
    else PostgreSQL LISTEN/NOTIFY, else in memory (one process). Its channel is its own: flag
    changes never disturb the principal cache, nor the other way round."""
    bus: InvalidationBus
    if valkey is not None:
        from adapters.valkey.invalidation_bus import ValkeyInvalidationBus

        bus = ValkeyInvalidationBus(valkey, channel=f"{settings.namespace}:flag-invalidations")
    elif pool is not None:
        from adapters.postgres.invalidation_bus import PostgresInvalidationBus

        bus = PostgresInvalidationBus(pool, channel=f"{settings.namespace}_flag_invalidations")
    else:
        bus = MemoryInvalidationBus()
    cache = FlagSnapshotCache(bus, ttl_seconds=settings.cache_ttl_seconds)
    cache.start()
    registry.register_value(FeatureFlagCache, cache, ping=_ping, on_registry_close=cache.aclose)


async def _ping(cache: FeatureFlagCache) -> None:
    await cache.ping()


async def feature_flags_from(container: svcs.Container) -> FeatureFlags:
    database, cache, clock = await container.aget(Database, FeatureFlagCache, Clock)
    return FeatureFlags(database=database, cache=cache, clock=clock)


async def flag_administration_from(container: svcs.Container) -> FlagAdministration:
    database, cache, ids, clock = await container.aget(Database, FeatureFlagCache, Ids, Clock)
    return FlagAdministration(database=database, cache=cache, ids=ids, clock=clock)
