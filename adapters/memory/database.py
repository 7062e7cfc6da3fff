"""An in-memory `Database` with PostgreSQL's transaction semantics, for tests and `memory://`.

What it mirrors (and `tests/contract/test_database_contract.py` holds it to): a unit of work's
writes are visible to itself at once and to others only after `commit()`; rollback, an exception or
leaving without `commit()` discards them; messages a unit of work has claimed or updated are row-
locked until it ends, so other claimers skip them (`FOR UPDATE SKIP LOCKED`) and other updaters wait
for them; positions come from a sequence that never goes back, even across rollbacks.

The account, billing, generation and webhook repositories (`adapters.memory.accounts`,
`adapters.memory.billing`, `adapters.memory.generations`, `adapters.memory.webhooks`, on
`adapters.memory.tables`) follow the same rules; a commit makes the outbox's and every table's
writes visible together.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import UTC, datetime
from types import TracebackType
from typing import Any, Self

import msgspec

from adapters.memory.accounts import (
    AccountTables,
    MemoryApiKeyRepository,
    MemoryAuditRepository,
    MemoryTokenRepository,
    MemoryUserRepository,
)
from adapters.memory.billing import (
    BillingTables,
    MemoryChargeRepository,
    MemorySubscriptionRepository,
    MemoryUsageRepository,
    billing_repositories,
)
from adapters.memory.flags import FlagTables, MemoryFeatureFlagRepository
from adapters.memory.generations import (
    GenerationTables,
    MemoryGenerationRepository,
    MemoryIdempotencyRepository,
    MemoryUploadRepository,
    generation_repositories,
)
from adapters.memory.tables import Locks, Transaction
from adapters.memory.webhooks import (
    MemoryWebhookDeliveryRepository,
    MemoryWebhookEndpointRepository,
    MemoryWebhookSecretRepository,
    WebhookTables,
    webhook_repositories,
)
from core.accounts.api_keys import ApiKey
from core.accounts.audit import AuditRecord
from core.accounts.tokens import OneTimeToken
from core.accounts.users import User
from core.billing.charges import Charge
from core.billing.subscriptions import Subscription
from core.billing.usage import QuotaReservation, UsagePeriod
from core.errors import DomainError, ErrorCode
from core.generations.generation import Generation
from core.outbox import OutboxMessage
from core.webhooks.deliveries import WebhookDelivery
from core.webhooks.endpoints import WebhookEndpoint
from core.webhooks.signing_secrets import WebhookSecretVersion


class _OutboxTable:
    """The committed rows, the row locks, and the sequence, shared by every unit of work."""

    def __init__(self) -> None:
        self.rows: dict[str, OutboxMessage] = {}
        self.last_position = 0
        # Row locks (claimed or updated rows) and uncommitted inserts, by message id → owner.
        self.locks: dict[str, object] = {}
        self.inserting: dict[str, object] = {}
        self.released = asyncio.Condition()

    def next_position(self) -> int:
        self.last_position += 1
        return self.last_position

    async def wait_until_free(self, table: dict[str, object], message_id: str, owner: object) -> None:
        """Wait while another unit of work holds `message_id` in `table`, as PostgreSQL would block."""
        if table.get(message_id, owner) is owner:
            return
        async with self.released:
            await self.released.wait_for(lambda: table.get(message_id, owner) is owner)

    async def release(self, owner: object) -> None:
        for table in (self.locks, self.inserting):
            for message_id in [key for key, holder in table.items() if holder is owner]:
                del table[message_id]
        async with self.released:
            self.released.notify_all()


class MemoryDatabase:
    """Implements `core.ports.Database` in memory, with the same transaction semantics as PostgreSQL."""

    def __init__(self) -> None:
        self._outbox = _OutboxTable()
        self._accounts = AccountTables()
        self._billing = BillingTables()
        self._generations = GenerationTables()
        self._webhooks = WebhookTables()
        self._flags = FlagTables()
        self._locks = Locks()

    def unit_of_work(self) -> MemoryUnitOfWork:
        return MemoryUnitOfWork(
            self._outbox,
            self._accounts,
            self._billing,
            self._generations,
            self._locks,
            self._webhooks,
            self._flags,
        )

    async def ping(self) -> None:
        return None

    def committed_outbox(self) -> list[OutboxMessage]:
        """Every committed outbox message, published or not, by position (for tests' assertions)."""
        return sorted(self._outbox.rows.values(), key=lambda message: message.position)

    def committed_users(self) -> list[User]:
        """Every committed user, oldest first (for tests' assertions)."""
        return sorted(self._accounts.users.rows.values(), key=lambda user: user.id)

    def committed_api_keys(self) -> list[ApiKey]:
        """Every committed API key, revoked or not, oldest first (for tests' assertions)."""
        return sorted(self._accounts.api_keys.rows.values(), key=lambda key: key.id)

    def committed_tokens(self) -> list[OneTimeToken]:
        """Every committed one-time token, used or not, by creation time (for tests' assertions)."""
        return sorted(self._accounts.tokens.rows.values(), key=lambda token: token.created_at)

    def committed_audit(self) -> list[AuditRecord]:
        """Every committed audit record, oldest first (for tests' assertions)."""
        return sorted(self._accounts.audit.rows.values(), key=lambda record: record.id)

    def committed_subscriptions(self) -> list[Subscription]:
        """Every committed subscription, by user id (for tests' assertions)."""
        return sorted(self._billing.subscriptions.rows.values(), key=lambda row: row.user_id)

    def committed_charges(self) -> list[Charge]:
        """Every committed charge, oldest first (for tests' assertions)."""
        return sorted(self._billing.charges.rows.values(), key=lambda charge: charge.id)

    def committed_usage(self) -> list[UsagePeriod]:
        """Every committed usage period, by user and period start (for tests' assertions)."""
        periods = self._billing.usage_periods.rows
        return [periods[key] for key in sorted(periods)]

    def committed_generations(self) -> list[Generation]:
        """Every committed generation, oldest first (for tests' assertions)."""
        return sorted(self._generations.generations.rows.values(), key=lambda generation: generation.id)

    def committed_reservations(self) -> list[QuotaReservation]:
        """Every committed quota reservation, ended or not, by id (for tests' assertions)."""
        return sorted(self._billing.reservations.rows.values(), key=lambda reservation: reservation.id)

    def committed_webhook_endpoints(self) -> list[WebhookEndpoint]:
        """Every committed webhook endpoint, oldest first (for tests' assertions)."""
        endpoints = (row for row in self._webhooks.endpoints.rows.values() if row is not None)
        return sorted(endpoints, key=lambda endpoint: endpoint.id)

    def committed_webhook_secrets(self) -> list[WebhookSecretVersion]:
        """Every committed webhook secret version, by creation time (for tests' assertions)."""
        versions = (row for row in self._webhooks.secrets.rows.values() if row is not None)
        return sorted(versions, key=lambda version: (version.created_at, version.id))

    def committed_webhook_deliveries(self) -> list[WebhookDelivery]:
        """Every committed webhook delivery, finished or not, oldest first (for tests' assertions)."""
        return sorted(self._webhooks.deliveries.rows.values(), key=lambda delivery: delivery.id)


class MemoryUnitOfWork:
    """Implements `core.ports.UnitOfWork` in memory; finished after `commit()` or `rollback()`."""

    def __init__(
        self,
        table: _OutboxTable,
        accounts: AccountTables,
        billing: BillingTables,
        generations: GenerationTables,
        locks: Locks,
        webhooks: WebhookTables,
        flags: FlagTables,
    ) -> None:
        self._table = table
        self._transaction = Transaction(locks)
        self._entered = False
        self.outbox = MemoryOutboxRepository(self, table)
        # One view of the users for every repository: foreign keys see users added in this unit of work.
        users = self._transaction.view(accounts.users)
        self._users = MemoryUserRepository(users)
        self._api_keys = MemoryApiKeyRepository(self._transaction.view(accounts.api_keys), users)
        self._tokens = MemoryTokenRepository(self._transaction.view(accounts.tokens), users)
        self._audit = MemoryAuditRepository(self._transaction.view(accounts.audit))
        self._subscriptions, self._charges, self._usage = billing_repositories(
            self._transaction, billing, users
        )
        self._generations, self._uploads, self._idempotency = generation_repositories(
            self._transaction, generations, users
        )
        self._webhook_endpoints, self._webhook_secrets, self._webhook_deliveries = webhook_repositories(
            self._transaction, webhooks, users
        )
        self._feature_flags = MemoryFeatureFlagRepository(self._transaction.view(flags.flags))

    @property
    def users(self) -> MemoryUserRepository:
        return self._users

    @property
    def api_keys(self) -> MemoryApiKeyRepository:
        return self._api_keys

    @property
    def tokens(self) -> MemoryTokenRepository:
        return self._tokens

    @property
    def audit(self) -> MemoryAuditRepository:
        return self._audit

    @property
    def subscriptions(self) -> MemorySubscriptionRepository:
        return self._subscriptions

    @property
    def charges(self) -> MemoryChargeRepository:
        return self._charges

    @property
    def usage(self) -> MemoryUsageRepository:
        return self._usage

    @property
    def generations(self) -> MemoryGenerationRepository:
        return self._generations

    @property
    def uploads(self) -> MemoryUploadRepository:
        return self._uploads

    @property
    def idempotency(self) -> MemoryIdempotencyRepository:
        return self._idempotency

    @property
    def webhook_endpoints(self) -> MemoryWebhookEndpointRepository:
        return self._webhook_endpoints

    @property
    def webhook_secrets(self) -> MemoryWebhookSecretRepository:
        return self._webhook_secrets

    @property
    def webhook_deliveries(self) -> MemoryWebhookDeliveryRepository:
        return self._webhook_deliveries

    @property
    def feature_flags(self) -> MemoryFeatureFlagRepository:
        return self._feature_flags

    def require_active(self) -> None:
        self._transaction.require_active()

    async def __aenter__(self) -> Self:
        if self._entered:
            raise RuntimeError("a unit of work can be entered only once")
        self._entered = self._transaction.active = True
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.rollback()

    async def commit(self) -> None:
        if not self._transaction.active:
            raise RuntimeError("nothing to commit: the unit of work is not in a transaction")
        self._transaction.active = False
        # Both before the first await: no other unit of work sees half of the commit.
        self.outbox.apply()
        self._transaction.apply()
        await self._release()

    async def rollback(self) -> None:
        if not self._transaction.active:
            return
        self._transaction.active = False
        self.outbox.discard()
        self._transaction.discard()
        await self._release()

    async def _release(self) -> None:
        await self._table.release(self.outbox)
        await self._transaction.release()


class MemoryOutboxRepository:
    """Implements `core.ports.OutboxRepository` over the shared table, buffering writes until commit."""

    def __init__(self, uow: MemoryUnitOfWork, table: _OutboxTable) -> None:
        self._uow = uow
        self._table = table
        self._added: dict[str, OutboxMessage] = {}
        self._published: dict[str, datetime] = {}

    async def add(self, message: OutboxMessage) -> None:
        self._uow.require_active()
        occurred_at = _require_aware(message.occurred_at, "occurred_at").astimezone(UTC)
        # Encoding and decoding copies the payload, and fails on what PostgreSQL's jsonb would refuse.
        payload = msgspec.json.decode(msgspec.json.encode(message.payload), type=dict[str, Any])
        # Like a unique index: wait for a concurrent insert of the same id to commit or roll back.
        await self._table.wait_until_free(self._table.inserting, message.id, self)
        if message.id in self._table.rows or message.id in self._added:
            raise DomainError(ErrorCode.CONFLICT, "Outbox message already exists", message_id=message.id)
        self._table.inserting[message.id] = self
        self._added[message.id] = msgspec.structs.replace(
            message,
            occurred_at=occurred_at,
            payload=payload,
            position=self._table.next_position(),
            published_at=None,
        )

    async def claim_unpublished(self, limit: int) -> list[OutboxMessage]:
        self._uow.require_active()
        if limit < 0:
            raise ValueError("limit must not be negative")
        candidates = sorted(
            (
                message
                for message in self._visible()
                if self._table.locks.get(message.id, self) is self  # SKIP LOCKED
            ),
            key=lambda message: message.position,
        )[:limit]
        for message in candidates:
            self._table.locks[message.id] = self
        return candidates

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None:
        self._uow.require_active()
        published_at = _require_aware(at, "at")
        for message_id in dict.fromkeys(ids):
            if message_id not in self._added:
                if message_id not in self._table.rows:
                    continue
                # An UPDATE waits for the row's lock, then re-checks the row as committed meanwhile.
                await self._table.wait_until_free(self._table.locks, message_id, self)
            if self._is_unpublished(message_id):
                self._published[message_id] = published_at
                self._table.locks[message_id] = self

    def apply(self) -> None:
        """Make this unit of work's writes the committed state (called by `commit()`)."""
        self._table.rows.update(self._added)
        for message_id, published_at in self._published.items():
            message = self._table.rows[message_id]
            self._table.rows[message_id] = msgspec.structs.replace(message, published_at=published_at)
        self.discard()

    def discard(self) -> None:
        self._added.clear()
        self._published.clear()

    def _visible(self) -> list[OutboxMessage]:
        """Unpublished messages as this unit of work sees them: committed rows plus its own writes."""
        rows = {**self._table.rows, **self._added}
        return [
            message
            for message_id, message in rows.items()
            if message.published_at is None and message_id not in self._published
        ]

    def _is_unpublished(self, message_id: str) -> bool:
        message = self._added.get(message_id) or self._table.rows.get(message_id)
        return message is not None and message.published_at is None and message_id not in self._published


def _require_aware(moment: datetime, name: str) -> datetime:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return moment
