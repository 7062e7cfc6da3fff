"""The rate limiter's automatic pipelining on real Valkey: concurrent decisions share round trips
and still decide exactly as one-at-a-time calls would."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from valkey.asyncio import Valkey

from adapters.valkey.auto_pipeline import AutoPipeline
from adapters.valkey.cache import escape_glob
from adapters.valkey.client import create_valkey_client
from adapters.valkey.rate_limiter import ValkeyRateLimiter
from core.rate_limit import RateLimit

pytestmark = pytest.mark.services

LIMIT = RateLimit(requests=10, period_seconds=3600, burst=10)  # nothing refills during a test


@pytest.fixture
async def client(valkey_url: str, key_prefix: str) -> AsyncIterator[Valkey]:
    client = create_valkey_client(valkey_url)
    try:
        yield client
    finally:
        async for key in client.scan_iter(match=escape_glob(key_prefix) + "*", count=500):
            await client.unlink(key)
        await client.aclose()


class CountingPipeline(AutoPipeline):
    def __init__(self, client: Valkey) -> None:
        super().__init__(client)
        self.batches: list[int] = []

    async def _send(self, batch):  # type: ignore[no-untyped-def]
        self.batches.append(len(batch))
        await super()._send(batch)


async def test_concurrent_hits_share_round_trips_and_never_overspend(client: Valkey, key_prefix: str) -> None:
    limiter = ValkeyRateLimiter(client, key_prefix=key_prefix)
    counting = CountingPipeline(client)
    limiter._pipeline = counting  # observe the batches

    decisions = await asyncio.gather(*(limiter.hit(f"k{i % 3}", LIMIT) for i in range(60)))

    assert sum(decision.allowed for decision in decisions) == 30  # 10 per key, three keys
    for key in range(3):
        remaining = sorted(d.remaining for i, d in enumerate(decisions) if i % 3 == key and d.allowed)
        assert remaining == list(range(10))  # each key's budget spent one by one, none twice
    assert len(counting.batches) < 60  # they were pipelined
    assert sum(counting.batches) == 60


async def test_a_forgotten_script_is_loaded_again_under_concurrency(client: Valkey, key_prefix: str) -> None:
    limiter = ValkeyRateLimiter(client, key_prefix=key_prefix)
    await client.script_flush()
    decisions = await asyncio.gather(*(limiter.hit("k", LIMIT) for _ in range(15)))
    assert sum(decision.allowed for decision in decisions) == 10


async def test_a_failed_connection_fails_every_caller_of_the_batch() -> None:
    dead = create_valkey_client("redis://127.0.0.1:1/0", connect_timeout=0.2, pool_timeout=0.2)
    try:
        pipeline = AutoPipeline(dead)
        results = await asyncio.gather(
            *(pipeline.execute("GET", "x") for _ in range(5)), return_exceptions=True
        )
        assert all(isinstance(result, Exception) for result in results), results
    finally:
        await dead.aclose()


async def test_a_cancelled_caller_does_not_disturb_the_others(client: Valkey, key_prefix: str) -> None:
    pipeline = AutoPipeline(client)
    await client.set(f"{key_prefix}x", "1")
    waiting = [asyncio.ensure_future(pipeline.execute("GET", f"{key_prefix}x")) for _ in range(5)]
    waiting[0].cancel()
    results = await asyncio.gather(*waiting, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert results[1:] == [b"1"] * 4
