"""The InvalidationBus on PostgreSQL LISTEN/NOTIFY, for set-ups without Valkey (the embedded one
with several HTTP workers)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any, Final

import msgspec
import psycopg
from psycopg import AsyncConnection, sql

from adapters.postgres.pool import PostgresPool
from core.cache_tags import Invalidation

logger = logging.getLogger(__name__)

_MAX_PAYLOAD_BYTES: Final = 7900  # NOTIFY's limit is 8000 bytes
_CHECK_EVERY_SECONDS: Final = 5.0
_RETRY_SECONDS: Final = (0.1, 0.25, 0.5, 1.0, 2.0)


class PostgresInvalidationBus:
    """Implements `core.ports.InvalidationBus`: NOTIFY through the pool, LISTEN on a connection of
    its own (a pooled connection would be handed to others)."""

    def __init__(self, pool: PostgresPool, *, channel: str, conninfo: str | None = None) -> None:
        self._pool = pool
        self._channel = channel
        self._conninfo = conninfo or str(pool.conninfo)
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def publish(self, invalidation: Invalidation) -> None:
        async with self._pool.connection() as conn:
            for payload in _payloads(invalidation):
                await conn.execute("SELECT pg_notify(%s, %s)", (self._channel, payload))

    async def listen(self) -> AsyncIterator[Invalidation]:
        failures = 0
        while True:
            conn: AsyncConnection[Any] | None = None
            try:
                conn = await AsyncConnection.connect(self._conninfo, autocommit=True, connect_timeout=5)
                await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                failures = 0
                self._connected = True
                yield Invalidation(reset=True)
                while True:
                    async for notify in conn.notifies(timeout=_CHECK_EVERY_SECONDS):
                        yield _decode(notify.payload)
                    await conn.execute("SELECT 1")  # quiet for a while: is the connection alive?
            except (psycopg.Error, OSError) as error:
                self._connected = False
                delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                failures += 1
                logger.warning("invalidation bus: %s; listening again in %.2fs", error, delay)
                await asyncio.sleep(delay)
            finally:
                self._connected = False
                if conn is not None:
                    await conn.close()

    async def ping(self) -> None:
        if not self._connected:
            raise ConnectionError("not listening on the invalidation channel")


def _payloads(invalidation: Invalidation) -> list[str]:
    """The invalidation as NOTIFY payloads under the size limit (tags split across several)."""
    whole = msgspec.json.encode(invalidation).decode()
    if len(whole.encode()) <= _MAX_PAYLOAD_BYTES:
        return [whole]
    payloads: list[str] = []
    batch: list[str] = []
    size = 0
    for tag in invalidation.tags:
        if batch and size + len(tag.encode()) + 4 > _MAX_PAYLOAD_BYTES - 64:
            payloads.append(msgspec.json.encode(Invalidation(tuple(batch))).decode())
            batch, size = [], 0
        batch.append(tag)
        size += len(tag.encode()) + 4
    if batch:
        payloads.append(msgspec.json.encode(Invalidation(tuple(batch))).decode())
    return payloads


def _decode(payload: str) -> Invalidation:
    try:
        return msgspec.json.decode(payload, type=Invalidation)
    except msgspec.DecodeError:
        logger.error("invalidation bus: undecodable notification; dropping every cached principal")
        return Invalidation(reset=True)
