"""Cache hit paths, each beside a baseline measured in the same run, so results read as ratios.

Every round runs a batch of `OPERATIONS` awaited calls on one persistent event loop; the
baselines run the same batch shape. In a group, read the subject's time over the baseline's:
the in-memory group shows what get_or_set adds to a dict lookup (msgpack decode, expiry check,
the wrapper), the Valkey group what it adds to one raw GET round trip.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from valkey.asyncio import Valkey

from adapters.memory.cache import MemoryCache
from adapters.resilient_cache import ResilientCache
from adapters.valkey.cache import ValkeyCache
from core.ports import Cache

MEMORY_OPERATIONS = 1000
VALKEY_OPERATIONS = 200


class Principal(msgspec.Struct, frozen=True):
    """About the size and shape of the hot read: an API key's principal."""

    user_id: uuid.UUID
    plan: str
    scopes: list[str]
    limits: dict[str, int]
    created_at: datetime


PRINCIPAL = Principal(
    user_id=uuid.uuid4(),
    plan="pro",
    scopes=["images:read", "images:write", "webhooks:manage"],
    limits={"per_minute": 600, "per_month": 100_000, "concurrent": 8},
    created_at=datetime(2026, 1, 1, tzinfo=UTC),
)


async def _never_called() -> Principal:
    raise AssertionError("a hit must not call the loader")


def _run_batches(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    batch: Callable[[], Coroutine[Any, Any, None]],
    operations: int,
) -> None:
    benchmark.extra_info["operations_per_round"] = operations
    loop.run_until_complete(batch())  # warm: connections open, decoders built
    benchmark(lambda: loop.run_until_complete(batch()))


def _get_or_set_batch(cache: Cache, operations: int) -> Callable[[], Coroutine[Any, Any, None]]:
    async def batch() -> None:
        for _ in range(operations):
            await cache.get_or_set("principal", Principal, _never_called, ttl_seconds=3600)

    return batch


@pytest.fixture(scope="module")
def memory_cache(bench_loop: asyncio.AbstractEventLoop) -> MemoryCache:
    cache = MemoryCache()
    bench_loop.run_until_complete(cache.set("principal", PRINCIPAL, ttl_seconds=3600))
    return cache


@pytest.fixture(scope="module")
def valkey_cache(bench_loop: asyncio.AbstractEventLoop, bench_valkey: tuple[Valkey, str]) -> ValkeyCache:
    client, prefix = bench_valkey
    cache = ValkeyCache(client, key_prefix=prefix)
    bench_loop.run_until_complete(cache.set("principal", PRINCIPAL, ttl_seconds=3600))
    return cache


@pytest.mark.benchmark(group="cache hit: in memory")
def test_baseline_dict_lookup(benchmark: Any, bench_loop: asyncio.AbstractEventLoop) -> None:
    store = {"principal": PRINCIPAL}

    async def batch() -> None:
        for _ in range(MEMORY_OPERATIONS):
            store.get("principal")

    _run_batches(benchmark, bench_loop, batch, MEMORY_OPERATIONS)


@pytest.mark.benchmark(group="cache hit: in memory")
def test_memory_get_or_set_hit(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, memory_cache: MemoryCache
) -> None:
    _run_batches(benchmark, bench_loop, _get_or_set_batch(memory_cache, MEMORY_OPERATIONS), MEMORY_OPERATIONS)


@pytest.mark.benchmark(group="cache hit: in memory")
def test_resilient_memory_get_or_set_hit(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, memory_cache: MemoryCache
) -> None:
    batch = _get_or_set_batch(ResilientCache(memory_cache), MEMORY_OPERATIONS)
    _run_batches(benchmark, bench_loop, batch, MEMORY_OPERATIONS)


@pytest.mark.benchmark(group="cache hit: Valkey")
def test_baseline_raw_valkey_get(
    benchmark: Any,
    bench_loop: asyncio.AbstractEventLoop,
    bench_valkey: tuple[Valkey, str],
    valkey_cache: ValkeyCache,
) -> None:
    client, prefix = bench_valkey
    key = f"{prefix}val:principal"  # the very bytes the cache reads, without decoding them

    async def batch() -> None:
        for _ in range(VALKEY_OPERATIONS):
            await client.get(key)

    _run_batches(benchmark, bench_loop, batch, VALKEY_OPERATIONS)


@pytest.mark.benchmark(group="cache hit: Valkey")
def test_valkey_get_or_set_hit(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, valkey_cache: ValkeyCache
) -> None:
    _run_batches(benchmark, bench_loop, _get_or_set_batch(valkey_cache, VALKEY_OPERATIONS), VALKEY_OPERATIONS)


@pytest.mark.benchmark(group="cache hit: Valkey")
def test_resilient_valkey_get_or_set_hit(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, valkey_cache: ValkeyCache
) -> None:
    batch = _get_or_set_batch(ResilientCache(valkey_cache), VALKEY_OPERATIONS)
    _run_batches(benchmark, bench_loop, batch, VALKEY_OPERATIONS)
