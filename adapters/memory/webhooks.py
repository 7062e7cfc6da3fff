"""In-memory fakes of the webhook endpoint, secret and delivery repositories, held to the same
contract as the PostgreSQL ones (migration 0006).

Rows are Structs in `adapters.memory.tables` tables. The tables cannot delete, so a deleted row is a
`None` in its slot (the same as absent to every reader). The unique indexes are claims on their
values: an insert waits for a concurrent insert of the same value to end and then sees its outcome,
as PostgreSQL waits on a unique index. `claim_due` passes over rows another unit of work has locked
(`FOR UPDATE SKIP LOCKED`); every other write waits for them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Hashable, Sequence
from datetime import datetime
from typing import Any

import msgspec

from adapters.memory.row_values import canonical_or_none, check_limit, utc, utc_or_none
from adapters.memory.tables import Table, TableView, Transaction
from adapters.webhook_rows import check_delivery_row, check_endpoint_row
from core.accounts.users import User
from core.errors import DomainError, ErrorCode
from core.webhooks.deliveries import DeliveryStatus, WebhookDelivery, canceled
from core.webhooks.endpoints import EndpointStatus, WebhookEndpoint
from core.webhooks.signing_secrets import SecretOwner, WebhookSecretVersion, live_versions

_data_decoder = msgspec.json.Decoder(dict[str, Any])

OwnerKey = tuple[SecretOwner, str]  # (owner kind, owner id)


class WebhookTables:
    """The committed rows of the webhook tables of one `MemoryDatabase`."""

    def __init__(self) -> None:
        self.endpoints: Table[str, WebhookEndpoint | None] = Table("webhook_endpoints")
        self.secrets: Table[str, WebhookSecretVersion | None] = Table("webhook_secrets")
        self.deliveries: Table[str, WebhookDelivery] = Table("webhook_deliveries")


class MemoryWebhookEndpointRepository:
    """Implements `core.ports.WebhookEndpointRepository` in memory."""

    def __init__(
        self,
        endpoints: TableView[str, WebhookEndpoint | None],
        secrets: TableView[str, WebhookSecretVersion | None],
        users: TableView[str, User],
    ) -> None:
        self._endpoints = endpoints
        self._secrets = secrets
        self._users = users
        self._transaction = endpoints.transaction

    async def add(self, endpoint: WebhookEndpoint) -> None:
        self._transaction.require_active()
        stored = _stored_endpoint(endpoint)
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {endpoint.user_id} to own the webhook endpoint")
        lock = self._endpoints.row_lock(stored.id)
        await self._transaction.wait_until_free(lock)
        if self._endpoints.get(stored.id) is not None:
            raise DomainError(ErrorCode.CONFLICT, "Webhook endpoint already exists", endpoint_id=stored.id)
        self._transaction.take(lock)
        self._endpoints.put(stored.id, stored)

    async def get(self, endpoint_id: str) -> WebhookEndpoint | None:
        self._transaction.require_active()
        id_ = canonical_or_none(endpoint_id)
        return None if id_ is None else self._endpoints.get(id_)

    async def get_for_user(self, user_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        self._transaction.require_active()
        owner, id_ = canonical_or_none(user_id), canonical_or_none(endpoint_id)
        row = None if id_ is None else self._endpoints.get(id_)
        return row if row is not None and row.user_id == owner else None

    async def list_for_user(self, user_id: str) -> list[WebhookEndpoint]:
        self._transaction.require_active()
        owner = canonical_or_none(user_id)
        mine = [row for row in self._endpoints.rows() if row is not None and row.user_id == owner]
        return sorted(mine, key=lambda row: row.id, reverse=True)

    async def list_active_for_users(self, user_ids: Sequence[str]) -> dict[str, list[WebhookEndpoint]]:
        self._transaction.require_active()
        owners = {owner for owner in map(canonical_or_none, user_ids) if owner is not None}
        by_user: dict[str, list[WebhookEndpoint]] = {}
        active = (
            row
            for row in self._endpoints.rows()
            if row is not None and row.user_id in owners and row.status is EndpointStatus.ACTIVE
        )
        for row in sorted(active, key=lambda row: row.id):
            by_user.setdefault(row.user_id, []).append(row)
        return by_user

    async def update(self, endpoint: WebhookEndpoint) -> None:
        self._transaction.require_active()
        stored = _stored_endpoint(endpoint)
        await self._endpoints.update_where(
            stored.id,
            lambda row: row is not None,
            lambda row: msgspec.structs.replace(
                _present(row),
                url=stored.url,
                events=stored.events,
                status=stored.status,
                disabled_reason=stored.disabled_reason,
                updated_at=stored.updated_at,
            ),
        )

    async def delete(self, user_id: str, endpoint_id: str) -> bool:
        self._transaction.require_active()
        owner, id_ = canonical_or_none(user_id), canonical_or_none(endpoint_id)
        if owner is None or id_ is None:
            return False

        def mine() -> bool:
            row = self._endpoints.get(id_)
            return row is not None and row.user_id == owner

        def locks() -> tuple[Hashable, ...]:
            # The endpoint's row, its secret versions' rows and, while it has a current version, that
            # version's slot in the unique index (an insert of a current version waits for the end).
            versions = self._secret_versions(id_)
            current = any(version.expires_at is None for version in versions)
            return (
                self._endpoints.row_lock(id_),
                *(self._secrets.row_lock(version.id) for version in versions),
                *((_current_claim(self._secrets, (SecretOwner.ENDPOINT, id_)),) if current else ()),
            )

        if not mine():
            return False
        await _lock_all(self._transaction, locks)
        if not mine():  # as committed while we waited
            return False
        self._endpoints.put(id_, None)
        for version in self._secret_versions(id_):
            self._secrets.put(version.id, None)
        return True

    def _secret_versions(self, endpoint_id: str) -> list[WebhookSecretVersion]:
        return [
            row
            for row in self._secrets.rows()
            if row is not None and row.owner is SecretOwner.ENDPOINT and row.owner_id == endpoint_id
        ]


class MemoryWebhookSecretRepository:
    """Implements `core.ports.WebhookSecretRepository` in memory."""

    def __init__(
        self, secrets: TableView[str, WebhookSecretVersion | None], users: TableView[str, User]
    ) -> None:
        self._secrets = secrets
        self._users = users
        self._transaction = secrets.transaction

    async def add(self, version: WebhookSecretVersion) -> bool:
        self._transaction.require_active()
        stored = msgspec.structs.replace(
            version,
            id=str(uuid.UUID(version.id)),
            owner=SecretOwner(version.owner),
            owner_id=str(uuid.UUID(version.owner_id)),
            user_id=str(uuid.UUID(version.user_id)),
            created_at=utc(version.created_at, "created_at"),
            expires_at=utc_or_none(version.expires_at, "expires_at"),
        )
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {version.user_id} to own the webhook secret")
        owner = (stored.owner, stored.owner_id)
        locks: tuple[Hashable, ...] = (self._secrets.row_lock(stored.id),)
        if stored.expires_at is None:
            locks += (_current_claim(self._secrets, owner),)
        await self._transaction.wait_until_free(*locks)
        if stored.expires_at is None and self._current(owner) is not None:
            return False  # ON CONFLICT … DO NOTHING on the one-current index
        if self._secrets.get(stored.id) is not None:
            raise DomainError(ErrorCode.CONFLICT, "Webhook secret version already exists", id=stored.id)
        self._transaction.take(*locks)
        self._secrets.put(stored.id, stored)
        return True

    async def current_for_update(self, owner: SecretOwner, owner_id: str) -> WebhookSecretVersion | None:
        self._transaction.require_active()
        id_ = canonical_or_none(owner_id)
        if id_ is None:
            return None
        key = (SecretOwner(owner), id_)
        while True:
            current = self._current(key)
            if current is None:
                return None
            lock = self._secrets.row_lock(current.id)
            await self._transaction.wait_until_free(lock)
            again = self._secrets.get(current.id)
            if again is not None and again.expires_at is None:
                self._transaction.take(lock)
                return again
            # Retired or deleted while we waited: the owner's current version is another one now.

    async def update(self, version: WebhookSecretVersion) -> None:
        self._transaction.require_active()
        id_ = canonical_or_none(version.id)
        expires_at = utc_or_none(version.expires_at, "expires_at")
        row = None if id_ is None else self._secrets.get(id_)
        if id_ is None or row is None:
            return
        owner = (row.owner, row.owner_id)
        # The row and, when it is or becomes current, its slot in the one-current unique index.
        locks: tuple[Hashable, ...] = (self._secrets.row_lock(id_),)
        if row.expires_at is None or expires_at is None:
            locks += (_current_claim(self._secrets, owner),)
        await self._transaction.wait_until_free(*locks)
        row = self._secrets.get(id_)  # as committed meanwhile
        if row is None:
            return
        current = self._current(owner)
        if expires_at is None and current is not None and current.id != id_:
            raise ValueError("the owner has a current webhook secret version already")
        self._transaction.take(*locks)
        self._secrets.put(id_, msgspec.structs.replace(row, expires_at=expires_at))

    async def live(self, owner: SecretOwner, owner_id: str, now: datetime) -> list[WebhookSecretVersion]:
        self._transaction.require_active()
        at = utc(now, "now")
        id_ = canonical_or_none(owner_id)
        if id_ is None:
            return []
        key = (SecretOwner(owner), id_)
        return live_versions(self._owned(key), at)

    async def delete_expired(self, before: datetime) -> int:
        self._transaction.require_active()
        at = utc(before, "before")
        committed = self._secrets.table.rows
        # Committed tombstones are the same as absent rows: dropping them changes nothing visible.
        for slot in [slot for slot, row in committed.items() if row is None]:
            del committed[slot]

        def expired(row: WebhookSecretVersion | None) -> bool:
            # `<=`: a version whose end is `before` no longer signs at `before` (`live` leaves it out).
            return row is not None and row.expires_at is not None and row.expires_at <= at

        deleted = 0
        for row in [row for row in self._secrets.rows() if expired(row)]:
            assert row is not None
            lock = self._secrets.row_lock(row.id)
            await self._transaction.wait_until_free(lock)  # a DELETE waits for a locked row
            if not expired(self._secrets.get(row.id)):  # as committed meanwhile
                continue
            self._transaction.take(lock)
            self._secrets.put(row.id, None)
            deleted += 1
        return deleted

    def _owned(self, owner: OwnerKey) -> list[WebhookSecretVersion]:
        return [row for row in self._secrets.rows() if row is not None and (row.owner, row.owner_id) == owner]

    def _current(self, owner: OwnerKey) -> WebhookSecretVersion | None:
        return next((row for row in self._owned(owner) if row.expires_at is None), None)


class MemoryWebhookDeliveryRepository:
    """Implements `core.ports.WebhookDeliveryRepository` in memory."""

    def __init__(self, deliveries: TableView[str, WebhookDelivery], users: TableView[str, User]) -> None:
        self._deliveries = deliveries
        self._users = users
        self._transaction = deliveries.transaction

    async def add(self, delivery: WebhookDelivery) -> bool:
        self._transaction.require_active()
        stored = _stored_delivery(delivery)
        # Encoding and decoding copies the data, and fails on what PostgreSQL's jsonb would refuse.
        stored = msgspec.structs.replace(stored, data=_data_decoder.decode(msgspec.json.encode(stored.data)))
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {delivery.user_id} to own the webhook delivery")
        target = _target(stored)
        locks = (self._deliveries.row_lock(stored.id), self._deliveries.unique_claim("target", target))
        await self._transaction.wait_until_free(*locks)
        same_id = self._deliveries.get(stored.id)
        if same_id is not None:
            if _target(same_id) != target:  # an id taken by another delivery: the caller's bug
                raise DomainError(
                    ErrorCode.CONFLICT, "Webhook delivery already exists", delivery_id=stored.id
                )
            return False
        if any(_target(row) == target for row in self._deliveries.rows()):
            return False  # the same event for the same target: added before
        self._transaction.take(*locks)
        self._deliveries.put(stored.id, stored)
        return True

    async def add_many(self, deliveries: Sequence[WebhookDelivery]) -> int:
        return sum([await self.add(delivery) for delivery in deliveries])

    async def get_for_user(self, user_id: str, delivery_id: str) -> WebhookDelivery | None:
        self._transaction.require_active()
        owner, id_ = canonical_or_none(user_id), canonical_or_none(delivery_id)
        row = None if id_ is None else self._deliveries.get(id_)
        return row if row is not None and row.user_id == owner else None

    async def get_for_update(self, delivery_id: str) -> WebhookDelivery | None:
        self._transaction.require_active()
        id_ = canonical_or_none(delivery_id)
        if id_ is None or self._deliveries.get(id_) is None:
            return None
        lock = self._deliveries.row_lock(id_)
        await self._transaction.wait_until_free(lock)
        self._transaction.take(lock)
        return self._deliveries.get(id_)

    async def list_for_endpoint(
        self, user_id: str, endpoint_id: str, *, after: str | None, limit: int
    ) -> list[WebhookDelivery]:
        self._transaction.require_active()
        check_limit(limit)
        owner, endpoint = canonical_or_none(user_id), canonical_or_none(endpoint_id)
        before_id = None if after is None else canonical_or_none(after)
        if owner is None or endpoint is None or (after is not None and before_id is None):
            return []
        page = [
            row
            for row in self._deliveries.rows()
            if row.user_id == owner
            and row.endpoint_id == endpoint
            and (before_id is None or row.id < before_id)
        ]
        return sorted(page, key=lambda row: row.id, reverse=True)[:limit]

    async def claim_due(self, now: datetime, limit: int, lease_until: datetime) -> list[WebhookDelivery]:
        self._transaction.require_active()
        check_limit(limit)
        at = utc(now, "now")
        lease = utc(lease_until, "lease_until")
        due = sorted(
            (row for row in self._deliveries.rows() if row.is_due(at)),
            key=lambda row: (row.next_attempt_at or at, row.id),
        )
        claimed: list[WebhookDelivery] = []
        for row in due:
            if len(claimed) == limit:
                break
            try:  # SKIP LOCKED: a row another unit of work holds is left to the next claim
                self._transaction.take(self._deliveries.row_lock(row.id))
            except RuntimeError:
                continue
            leased = msgspec.structs.replace(row, locked_until=lease)
            self._deliveries.put(row.id, leased)
            claimed.append(leased)
        return claimed

    async def start_attempt(
        self, delivery_id: str, attempt: int, dispatched_until: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        self._transaction.require_active()
        dispatch = utc(dispatched_until, "dispatched_until")
        lease = utc(lease_until, "lease_until")
        id_ = canonical_or_none(delivery_id)
        if id_ is None:
            return None

        def taken_by_this_dispatch(row: WebhookDelivery) -> bool:
            # `attempt` counts from 1: the attempt about to be made is number `attempts + 1`.
            return (
                row.status is DeliveryStatus.PENDING
                and row.attempts == attempt - 1
                and row.locked_until == dispatch
            )

        return await self._deliveries.update_where(
            id_, taken_by_this_dispatch, lambda row: msgspec.structs.replace(row, locked_until=lease)
        )

    async def update(self, delivery: WebhookDelivery) -> None:
        self._transaction.require_active()
        stored = _stored_delivery(delivery)
        await self._deliveries.update_where(
            stored.id,
            lambda _: True,
            lambda row: msgspec.structs.replace(
                row,
                status=stored.status,
                attempts=stored.attempts,
                max_attempts=stored.max_attempts,
                next_attempt_at=stored.next_attempt_at,
                last_status_code=stored.last_status_code,
                last_error=stored.last_error,
                last_attempt_at=stored.last_attempt_at,
                delivered_at=stored.delivered_at,
                locked_until=stored.locked_until,
                updated_at=stored.updated_at,
            ),
        )

    async def cancel_pending_for_endpoint(self, endpoint_id: str, reason: str, now: datetime) -> int:
        self._transaction.require_active()
        at = utc(now, "now")
        id_ = canonical_or_none(endpoint_id)
        if id_ is None:
            return 0

        def pending_here(row: WebhookDelivery) -> bool:
            return row.endpoint_id == id_ and row.status is DeliveryStatus.PENDING

        count = 0
        for row in [row for row in self._deliveries.rows() if pending_here(row)]:
            changed = await self._deliveries.update_where(
                row.id, pending_here, lambda current: canceled(current, reason, at)
            )
            count += changed is not None
        return count


def webhook_repositories(
    transaction: Transaction, tables: WebhookTables, users: TableView[str, User]
) -> tuple[MemoryWebhookEndpointRepository, MemoryWebhookSecretRepository, MemoryWebhookDeliveryRepository]:
    """The three repositories of one unit of work; `users` is that unit of work's view of the users
    (the foreign keys). The endpoint and secret repositories share one view of the secrets, so a
    deleted endpoint's versions are gone for both."""
    secrets = transaction.view(tables.secrets)
    return (
        MemoryWebhookEndpointRepository(transaction.view(tables.endpoints), secrets, users),
        MemoryWebhookSecretRepository(secrets, users),
        MemoryWebhookDeliveryRepository(transaction.view(tables.deliveries), users),
    )


async def _lock_all(transaction: Transaction, names: Callable[[], tuple[Hashable, ...]]) -> None:
    """Wait for and take every lock `names()` lists, listing them again after a wait: rows committed
    meanwhile may add some. Each new round needs another unit of work to have committed."""
    while True:
        wanted = names()
        await transaction.wait_until_free(*wanted)
        if names() == wanted:  # no await since the wait returned: still free, still complete
            transaction.take(*wanted)
            return


def _current_claim(secrets: TableView[str, WebhookSecretVersion | None], owner: OwnerKey) -> Hashable:
    """The slot of an owner's current version in the one-current unique index."""
    return secrets.unique_claim("current", owner)


def _target(delivery: WebhookDelivery) -> tuple[str, str, str]:
    """The value a delivery takes in the unique indexes: its event and endpoint, or event and URL."""
    if delivery.endpoint_id is not None:
        return ("endpoint", delivery.event_id, delivery.endpoint_id)
    return ("url", delivery.event_id, delivery.url)


def _stored_endpoint(endpoint: WebhookEndpoint) -> WebhookEndpoint:
    """The endpoint as the table would hold it, or ValueError where its CHECKs would refuse it."""
    check_endpoint_row(endpoint)
    return msgspec.structs.replace(
        endpoint,
        id=str(uuid.UUID(endpoint.id)),
        user_id=str(uuid.UUID(endpoint.user_id)),
        events=tuple(endpoint.events),
        status=EndpointStatus(endpoint.status),
        created_at=utc(endpoint.created_at, "created_at"),
        updated_at=utc(endpoint.updated_at, "updated_at"),
    )


def _stored_delivery(delivery: WebhookDelivery) -> WebhookDelivery:
    """The delivery as the table would hold it, or ValueError where its CHECKs would refuse it."""
    d = delivery
    check_delivery_row(d)
    return msgspec.structs.replace(
        d,
        id=str(uuid.UUID(d.id)),
        user_id=str(uuid.UUID(d.user_id)),
        endpoint_id=None if d.endpoint_id is None else str(uuid.UUID(d.endpoint_id)),
        status=DeliveryStatus(d.status),
        event_occurred_at=utc(d.event_occurred_at, "event_occurred_at"),
        next_attempt_at=utc_or_none(d.next_attempt_at, "next_attempt_at"),
        last_attempt_at=utc_or_none(d.last_attempt_at, "last_attempt_at"),
        delivered_at=utc_or_none(d.delivered_at, "delivered_at"),
        locked_until=utc_or_none(d.locked_until, "locked_until"),
        created_at=utc(d.created_at, "created_at"),
        updated_at=utc(d.updated_at, "updated_at"),
    )


def _present(row: WebhookEndpoint | None) -> WebhookEndpoint:
    if row is None:  # `update_where` only changes rows that exist
        raise RuntimeError("a deleted webhook endpoint cannot change")
    return row
