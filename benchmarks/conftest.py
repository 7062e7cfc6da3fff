"""Fixtures for the micro-benchmarks: a persistent event loop and, when reachable, Valkey.

Benchmarks skip (never fail) when a service is missing, whatever PICTOR_REQUIRE_SERVICES says:
they measure, they do not verify.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from valkey.asyncio import Valkey

from adapters.valkey.cache import escape_glob
from adapters.valkey.client import create_valkey_client
from tests.support import services


@pytest.fixture(scope="module")
def bench_loop() -> Iterator[asyncio.AbstractEventLoop]:
    """One event loop for a module's benchmarks: each round runs a batch with `run_until_complete`."""
    loop = asyncio.new_event_loop()
    try:
        yield loop
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()


@pytest.fixture(scope="module")
def bench_valkey(bench_loop: asyncio.AbstractEventLoop) -> Iterator[tuple[Valkey, str]]:
    """A client on the test Valkey and a key prefix of its own (removed afterwards)."""
    url = services.valkey_url()
    parts = urlsplit(url)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 6379), timeout=2):
            pass
    except OSError as error:
        pytest.skip(f"Valkey unreachable at {parts.hostname}:{parts.port}: {error}")
    client = create_valkey_client(url)
    prefix = services.unique_name("pictor_bench") + ":"
    try:
        yield client, prefix
    finally:

        async def clean_up() -> None:
            async for key in client.scan_iter(match=escape_glob(prefix) + "*", count=500):
                await client.unlink(key)
            await client.aclose()

        bench_loop.run_until_complete(clean_up())
