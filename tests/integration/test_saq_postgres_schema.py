"""SAQ's tables on a fresh PostgreSQL database, created while several processes start at once."""

from __future__ import annotations

import asyncio

import psycopg
import pytest

from adapters.queue.factory import job_queue_from_url
from adapters.queue.saq_queue import SaqJobQueue


async def test_concurrent_starts_all_wait_for_the_tables(postgres_url: str, key_prefix: str):
    # Separate job queues have separate pools: as far as PostgreSQL sees, separate processes.
    queues = [job_queue_from_url(postgres_url, name_prefix=key_prefix.rstrip(":")) for _ in range(4)]
    try:

        async def start(queue: SaqJobQueue) -> None:
            await queue.prepare()
            await queue.ping()  # usable the moment it is prepared: the schema is complete

        assert all(isinstance(q, SaqJobQueue) for q in queues)
        await asyncio.gather(*(start(q) for q in queues))  # type: ignore[arg-type]
    finally:
        for queue in queues:
            await queue.close()


async def test_ping_fails_until_the_tables_exist(postgres_url: str, key_prefix: str):
    queue = job_queue_from_url(postgres_url, name_prefix=key_prefix.rstrip(":"))
    try:
        with pytest.raises(psycopg.errors.UndefinedTable):
            await queue.ping()
        assert isinstance(queue, SaqJobQueue)
        await queue.prepare()
        await queue.ping()
    finally:
        await queue.close()
