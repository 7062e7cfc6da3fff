"""The persistence port on PostgreSQL: units of work over a psycopg pool, and the outbox table.

The account repositories live in `adapters.postgres.accounts`, the billing ones in
`adapters.postgres.billing`, the generation, upload and idempotency ones in
`adapters.postgres.generations`, the webhook ones in `adapters.postgres.webhooks`; the unit of work
hands them out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextlib import AsyncExitStack
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import msgspec
from psycopg import AsyncConnection, AsyncTransaction
from psycopg_pool import PoolTimeout

from adapters.postgres.accounts import (
    PostgresApiKeyRepository,
    PostgresAuditRepository,
    PostgresTokenRepository,
    PostgresUserRepository,
)
from adapters.postgres.billing import (
    PostgresChargeRepository,
    PostgresSubscriptionRepository,
    PostgresUsageRepository,
)
from adapters.postgres.flags import PostgresFeatureFlagRepository
from adapters.postgres.generations import (
    PostgresGenerationRepository,
    PostgresIdempotencyRepository,
    PostgresUploadRepository,
)
from adapters.postgres.pool import PostgresPool
from adapters.postgres.webhooks import (
    PostgresWebhookDeliveryRepository,
    PostgresWebhookEndpointRepository,
    PostgresWebhookSecretRepository,
)
from core.errors import DomainError, ErrorCode
from core.outbox import OutboxMessage

_payload_decoder = msgspec.json.Decoder(dict[str, Any])


class PostgresDatabase:
    """Implements `core.ports.Database` on a pool from `adapters.postgres.pool.open_pool`.

    The pool belongs to the caller, who closes it; this object holds no other resources.
    """

    def __init__(self, pool: PostgresPool, *, ping_timeout: float = 2.0) -> None:
        self.pool = pool
        self._ping_timeout = ping_timeout

    def unit_of_work(self) -> PostgresUnitOfWork:
        return PostgresUnitOfWork(self.pool)

    async def ping(self) -> None:
        # Bounds both the wait for a connection and the round trip: a hung server must not hang
        # the readiness probe.
        async with asyncio.timeout(self._ping_timeout):
            async with self.pool.connection(timeout=self._ping_timeout) as conn:
                await conn.execute("SELECT 1")


class PostgresUnitOfWork:
    """Implements `core.ports.UnitOfWork`: one pooled connection inside one transaction.

    Entering checks out a connection and begins the transaction; `commit()` commits it,
    `rollback()` (or leaving the block without committing, or through an exception) rolls it back,
    and leaving always returns the connection to the pool. After `commit()` or `rollback()` the
    unit of work is finished: repositories refuse further work rather than run it outside a
    transaction. Repositories built on this class reach the connection through `connection`.
    """

    def __init__(self, pool: PostgresPool) -> None:
        self._pool = pool
        self._conn: AsyncConnection[Any] | None = None
        self._transaction: AsyncTransaction | None = None
        self._block = AsyncExitStack()  # holds the `conn.transaction()` block while it is open
        self._entered = False
        self.outbox = PostgresOutboxRepository(self)
        self._users = PostgresUserRepository(self)
        self._api_keys = PostgresApiKeyRepository(self)
        self._tokens = PostgresTokenRepository(self)
        self._audit = PostgresAuditRepository(self)
        self._subscriptions = PostgresSubscriptionRepository(self)
        self._charges = PostgresChargeRepository(self)
        self._usage = PostgresUsageRepository(self)
        self._generations = PostgresGenerationRepository(self)
        self._uploads = PostgresUploadRepository(self)
        self._idempotency = PostgresIdempotencyRepository(self)
        self._webhook_endpoints = PostgresWebhookEndpointRepository(self)
        self._webhook_secrets = PostgresWebhookSecretRepository(self)
        self._webhook_deliveries = PostgresWebhookDeliveryRepository(self)
        self._feature_flags = PostgresFeatureFlagRepository(self)

    @property
    def users(self) -> PostgresUserRepository:
        return self._users

    @property
    def api_keys(self) -> PostgresApiKeyRepository:
        return self._api_keys

    @property
    def tokens(self) -> PostgresTokenRepository:
        return self._tokens

    @property
    def audit(self) -> PostgresAuditRepository:
        return self._audit

    @property
    def subscriptions(self) -> PostgresSubscriptionRepository:
        return self._subscriptions

    @property
    def charges(self) -> PostgresChargeRepository:
        return self._charges

    @property
    def usage(self) -> PostgresUsageRepository:
        return self._usage

    @property
    def generations(self) -> PostgresGenerationRepository:
        return self._generations

    @property
    def uploads(self) -> PostgresUploadRepository:
        return self._uploads

    @property
    def idempotency(self) -> PostgresIdempotencyRepository:
        return self._idempotency

    @property
    def webhook_endpoints(self) -> PostgresWebhookEndpointRepository:
        return self._webhook_endpoints

    @property
    def webhook_secrets(self) -> PostgresWebhookSecretRepository:
        return self._webhook_secrets

    @property
    def webhook_deliveries(self) -> PostgresWebhookDeliveryRepository:
        return self._webhook_deliveries

    @property
    def feature_flags(self) -> PostgresFeatureFlagRepository:
        return self._feature_flags

    @property
    def connection(self) -> AsyncConnection[Any]:
        """The connection, while the transaction is open; RuntimeError otherwise."""
        if self._conn is None or self._transaction is None:
            raise RuntimeError("the unit of work is not in a transaction (not entered, or already ended)")
        return self._conn

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a unit of work can be entered only once")
        self._entered = True
        try:
            conn = await self._pool.getconn()
        except PoolTimeout as error:
            # Every connection busy for the whole acquire timeout: tell the client to come back.
            raise DomainError(ErrorCode.SERVICE_UNAVAILABLE, "The database is busy") from error
        block = AsyncExitStack()
        try:
            transaction = await block.enter_async_context(conn.transaction())
        except BaseException:
            await self._pool.putconn(conn)
            raise
        self._conn, self._transaction, self._block = conn, transaction, block
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        try:
            await self.rollback()
        finally:
            if conn is not None:
                # The pool discards connections left broken or inside a transaction.
                await self._pool.putconn(conn)

    async def commit(self) -> None:
        transaction, block = self._end()
        if transaction is None:
            raise RuntimeError("nothing to commit: the unit of work is not in a transaction")
        await block.aclose()  # leaving `conn.transaction()` without an error commits

    async def rollback(self) -> None:
        """Roll back the open transaction; a no-op once it has ended."""
        transaction, block = self._end()
        if transaction is not None:
            # psycopg logs and swallows a failed ROLLBACK (the connection is gone, nothing was
            # committed): the outcome the caller asked for either way.
            transaction.force_rollback = True
            await block.aclose()

    def _end(self) -> tuple[AsyncTransaction | None, AsyncExitStack]:
        ended = (self._transaction, self._block)
        self._transaction, self._block = None, AsyncExitStack()
        return ended


class PostgresOutboxRepository:
    """Implements `core.ports.OutboxRepository` on the `outbox` table (migration 0001)."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, message: OutboxMessage) -> None:
        occurred_at = _require_aware(message.occurred_at, "occurred_at")
        # ON CONFLICT keeps the transaction usable after a duplicate id, as the port promises a
        # DomainError rather than a poisoned unit of work.
        cursor = await self._uow.connection.execute(
            """
            INSERT INTO outbox (id, type, occurred_at, payload, correlation_id)
            VALUES (%s, %s, %s, %s::jsonb, %s)
            ON CONFLICT (id) DO NOTHING
            """,
            (
                message.id,
                message.type,
                occurred_at,
                msgspec.json.encode(message.payload).decode(),
                message.correlation_id,
            ),
        )
        if cursor.rowcount == 0:
            raise DomainError(ErrorCode.CONFLICT, "Outbox message already exists", message_id=message.id)

    async def claim_unpublished(self, limit: int) -> list[OutboxMessage]:
        if limit < 0:
            raise ValueError("limit must not be negative")
        cursor = await self._uow.connection.execute(
            """
            SELECT id, position, type, occurred_at, payload::text, correlation_id
            FROM outbox
            WHERE published_at IS NULL
            ORDER BY position
            LIMIT %s
            FOR UPDATE SKIP LOCKED
            """,
            (limit,),
        )
        return [
            OutboxMessage(
                id=id_,
                position=position,
                type=type_,
                occurred_at=occurred_at.astimezone(UTC),
                payload=_payload_decoder.decode(payload),
                correlation_id=correlation_id,
            )
            for id_, position, type_, occurred_at, payload, correlation_id in await cursor.fetchall()
        ]

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        published_at = _require_aware(at, "at")
        # `published_at IS NULL` keeps the first publication time when two publishers overlap.
        await self._uow.connection.execute(
            "UPDATE outbox SET published_at = %s WHERE id = ANY(%s) AND published_at IS NULL",
            (published_at, list(ids)),
        )


def _require_aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment
