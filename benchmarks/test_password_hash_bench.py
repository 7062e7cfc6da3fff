"""Password hashing: Pictor's argon2id (OWASP's minimum parameters) beside argon2-cffi's default.

Each group holds argon2-cffi's default `PasswordHasher()` (64 MiB, t=3, p=4) as the baseline of
the run, the same library with OWASP's parameters (19 MiB, t=2, p=1) called directly, and the
adapter (the same parameters, through `asyncio.to_thread` and its semaphore) on an event loop:
read the adapter over the direct call for what going off the loop costs, and the direct call
over the baseline for what the lighter parameters save. The burst group verifies eight logins at
once through the adapter against the same eight one after another on the event loop's thread.
Hashes take tens of milliseconds, so every benchmark runs a few pedantic rounds only.
"""

from __future__ import annotations

import asyncio
from typing import Any

import argon2
import pytest

from adapters.passwords.argon2_hasher import (
    OWASP_MEMORY_COST_KIB,
    OWASP_PARALLELISM,
    OWASP_TIME_COST,
    Argon2PasswordHasher,
)

PASSWORD = "correct horse battery staple"
ROUNDS = 5
BURST = 8


def _pedantic(benchmark: Any, target: Any, rounds: int = ROUNDS) -> Any:
    return benchmark.pedantic(target, rounds=rounds, iterations=1, warmup_rounds=1)


@pytest.fixture(scope="module")
def default_argon2() -> argon2.PasswordHasher:
    return argon2.PasswordHasher()


@pytest.fixture(scope="module")
def owasp_argon2() -> argon2.PasswordHasher:
    return argon2.PasswordHasher(
        time_cost=OWASP_TIME_COST, memory_cost=OWASP_MEMORY_COST_KIB, parallelism=OWASP_PARALLELISM
    )


@pytest.fixture(scope="module")
def adapter() -> Argon2PasswordHasher:
    return Argon2PasswordHasher()


@pytest.mark.benchmark(group="password hash")
def test_baseline_argon2_default_hash(benchmark: Any, default_argon2: argon2.PasswordHasher) -> None:
    assert _pedantic(benchmark, lambda: default_argon2.hash(PASSWORD)).startswith("$argon2id$")


@pytest.mark.benchmark(group="password hash")
def test_argon2_owasp_hash_direct(benchmark: Any, owasp_argon2: argon2.PasswordHasher) -> None:
    assert _pedantic(benchmark, lambda: owasp_argon2.hash(PASSWORD)).startswith("$argon2id$")


@pytest.mark.benchmark(group="password hash")
def test_adapter_hash(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, adapter: Argon2PasswordHasher
) -> None:
    result = _pedantic(benchmark, lambda: bench_loop.run_until_complete(adapter.hash(PASSWORD)))
    assert result.startswith("$argon2id$")


@pytest.mark.benchmark(group="password verify")
def test_baseline_argon2_default_verify(benchmark: Any, default_argon2: argon2.PasswordHasher) -> None:
    stored = default_argon2.hash(PASSWORD)
    assert _pedantic(benchmark, lambda: default_argon2.verify(stored, PASSWORD)) is True


@pytest.mark.benchmark(group="password verify")
def test_argon2_owasp_verify_direct(benchmark: Any, owasp_argon2: argon2.PasswordHasher) -> None:
    stored = owasp_argon2.hash(PASSWORD)
    assert _pedantic(benchmark, lambda: owasp_argon2.verify(stored, PASSWORD)) is True


@pytest.mark.benchmark(group="password verify")
def test_adapter_verify(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, adapter: Argon2PasswordHasher
) -> None:
    stored = bench_loop.run_until_complete(adapter.hash(PASSWORD))
    result = _pedantic(benchmark, lambda: bench_loop.run_until_complete(adapter.verify(stored, PASSWORD)))
    assert result is True


@pytest.mark.benchmark(group=f"password verify: burst of {BURST}")
def test_baseline_burst_verified_one_after_another(
    benchmark: Any, owasp_argon2: argon2.PasswordHasher
) -> None:
    stored = owasp_argon2.hash(PASSWORD)
    benchmark.extra_info["logins_per_round"] = BURST
    results = _pedantic(benchmark, lambda: [owasp_argon2.verify(stored, PASSWORD) for _ in range(BURST)], 3)
    assert results == [True] * BURST


@pytest.mark.benchmark(group=f"password verify: burst of {BURST}")
def test_adapter_burst_verified_concurrently(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, adapter: Argon2PasswordHasher
) -> None:
    stored = bench_loop.run_until_complete(adapter.hash(PASSWORD))
    benchmark.extra_info["logins_per_round"] = BURST
    benchmark.extra_info["max_concurrent"] = adapter.max_concurrent

    async def burst() -> list[bool]:
        return await asyncio.gather(*(adapter.verify(stored, PASSWORD) for _ in range(BURST)))

    results = _pedantic(benchmark, lambda: bench_loop.run_until_complete(burst()), 3)
    assert results == [True] * BURST
