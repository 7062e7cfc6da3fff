"""A GCRA decision, each path beside a baseline measured in the same run, so results read as ratios.

Every round runs a batch of `OPERATIONS` decisions on one persistent event loop; the baselines run
the same batch shape. In-memory group: the pure rule and the MemoryRateLimiter over a dict lookup.
Valkey group: one decision (a single EVALSHA of the GCRA script) over one raw GET round trip.
The limit is generous enough that every decision is an allowed hit that writes the new TAT.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
from valkey.asyncio import Valkey

from adapters.memory.rate_limiter import MemoryRateLimiter
from adapters.valkey.rate_limiter import ValkeyRateLimiter
from core.ports import RateLimiter
from core.rate_limit import RateLimit, gcra

MEMORY_OPERATIONS = 1000
VALKEY_OPERATIONS = 200

LIMIT = RateLimit(requests=10**9, period_seconds=1, burst=10**6)


def _run_batches(
    benchmark: Any,
    loop: asyncio.AbstractEventLoop,
    batch: Callable[[], Coroutine[Any, Any, None]],
    operations: int,
) -> None:
    benchmark.extra_info["operations_per_round"] = operations
    loop.run_until_complete(batch())  # warm: connections open, script loaded
    benchmark(lambda: loop.run_until_complete(batch()))


def _hit_batch(limiter: RateLimiter, operations: int) -> Callable[[], Coroutine[Any, Any, None]]:
    async def batch() -> None:
        for _ in range(operations):
            await limiter.hit("login:203.0.113.7", LIMIT)

    return batch


@pytest.mark.benchmark(group="rate limit: in memory")
def test_baseline_dict_lookup(benchmark: Any, bench_loop: asyncio.AbstractEventLoop) -> None:
    tats = {"login:203.0.113.7": 0}

    async def batch() -> None:
        for _ in range(MEMORY_OPERATIONS):
            tats.get("login:203.0.113.7")

    _run_batches(benchmark, bench_loop, batch, MEMORY_OPERATIONS)


@pytest.mark.benchmark(group="rate limit: in memory")
def test_pure_gcra_decision(benchmark: Any, bench_loop: asyncio.AbstractEventLoop) -> None:
    tats: dict[str, int | None] = {}

    async def batch() -> None:
        now = 1_000_000
        for _ in range(MEMORY_OPERATIONS):
            now += 1
            _, tats["login:203.0.113.7"] = gcra(tats.get("login:203.0.113.7"), now, LIMIT)

    _run_batches(benchmark, bench_loop, batch, MEMORY_OPERATIONS)


@pytest.mark.benchmark(group="rate limit: in memory")
def test_memory_rate_limiter_hit(benchmark: Any, bench_loop: asyncio.AbstractEventLoop) -> None:
    _run_batches(benchmark, bench_loop, _hit_batch(MemoryRateLimiter(), MEMORY_OPERATIONS), MEMORY_OPERATIONS)


@pytest.mark.benchmark(group="rate limit: Valkey")
def test_baseline_raw_valkey_get(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, bench_valkey: tuple[Valkey, str]
) -> None:
    client, prefix = bench_valkey
    key = f"{prefix}rate:baseline"
    bench_loop.run_until_complete(client.set(key, "1780000000123456"))

    async def batch() -> None:
        for _ in range(VALKEY_OPERATIONS):
            await client.get(key)

    _run_batches(benchmark, bench_loop, batch, VALKEY_OPERATIONS)


@pytest.mark.benchmark(group="rate limit: Valkey")
def test_valkey_rate_limiter_hit(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, bench_valkey: tuple[Valkey, str]
) -> None:
    client, prefix = bench_valkey
    limiter = ValkeyRateLimiter(client, key_prefix=prefix)
    _run_batches(benchmark, bench_loop, _hit_batch(limiter, VALKEY_OPERATIONS), VALKEY_OPERATIONS)
