"""The webhook endpoint, secret and delivery repositories on PostgreSQL (migration 0006).

Each repository works on its unit of work's connection, inside its transaction; rows map to the core
Structs explicitly and timestamps come back in UTC. Rows the tables would refuse are refused in
Python first (ValueError), so updates need no savepoint; inserts take one, so a missing user or a
duplicate id leaves the unit of work usable.

Deliveries: `add` is one `INSERT … ON CONFLICT DO NOTHING` whose unique indexes make a re-published
event add nothing; `claim_due` leases due rows in one `UPDATE … WHERE id IN (SELECT … FOR UPDATE
SKIP LOCKED)`, so concurrent dispatchers take disjoint rows without waiting for each other.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import msgspec
from psycopg import errors

from adapters.postgres.row_values import aware, aware_or_none, check_limit, utc_or_none
from adapters.webhook_rows import check_delivery_row, check_endpoint_row
from core.errors import DomainError, ErrorCode
from core.identifiers import is_id
from core.webhooks.deliveries import MAX_ERROR_LENGTH, DeliveryStatus, WebhookDelivery
from core.webhooks.endpoints import EndpointStatus, WebhookEndpoint
from core.webhooks.signing_secrets import SecretOwner, WebhookSecretVersion

if TYPE_CHECKING:
    from adapters.postgres.database import PostgresUnitOfWork

_ENDPOINT_COLUMNS = "id, user_id, url, events, status, disabled_reason, created_at, updated_at"
_SECRET_COLUMNS = "id, owner, owner_id, user_id, key_version, salt, created_at, expires_at"
_DELIVERY_COLUMNS = (
    "id, user_id, endpoint_id, url, event_id, event_type, event_occurred_at, data::text, status, attempts,"
    " max_attempts, next_attempt_at, last_status_code, last_error, last_attempt_at, delivered_at,"
    " locked_until, created_at, updated_at"
)
_data_decoder = msgspec.json.Decoder(dict[str, Any])


class PostgresWebhookEndpointRepository:
    """Implements `core.ports.WebhookEndpointRepository` on `webhook_endpoints`."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, endpoint: WebhookEndpoint) -> None:
        e = endpoint
        _check_endpoint(e)
        conn = self._uow.connection
        try:
            async with conn.transaction():  # a savepoint: a refused row leaves the unit of work usable
                cursor = await conn.execute(
                    f"""
                    INSERT INTO webhook_endpoints ({_ENDPOINT_COLUMNS})
                    VALUES (%s, %s, %s, %s::text[], %s, %s, %s, %s)
                    ON CONFLICT (id) DO NOTHING
                    """,
                    (
                        uuid.UUID(e.id),
                        uuid.UUID(e.user_id),
                        e.url,
                        list(e.events),
                        EndpointStatus(e.status).value,
                        e.disabled_reason,
                        e.created_at,
                        e.updated_at,
                    ),
                )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {e.user_id} to own the webhook endpoint") from error
        except errors.CheckViolation as error:
            raise ValueError(f"the webhook endpoint breaks a rule of its table: {error}") from error
        if cursor.rowcount == 0:
            raise DomainError(ErrorCode.CONFLICT, "Webhook endpoint already exists", endpoint_id=e.id)

    async def get(self, endpoint_id: str) -> WebhookEndpoint | None:
        id_ = _uuid_or_none(endpoint_id)
        if id_ is None:
            return None
        found = await self._select("WHERE id = %s", (id_,))
        return found[0] if found else None

    async def get_for_user(self, user_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        owner, id_ = _uuid_or_none(user_id), _uuid_or_none(endpoint_id)
        if owner is None or id_ is None:
            return None
        found = await self._select("WHERE id = %s AND user_id = %s", (id_, owner))
        return found[0] if found else None

    async def list_for_user(self, user_id: str) -> list[WebhookEndpoint]:
        owner = _uuid_or_none(user_id)
        if owner is None:
            return []
        return await self._select("WHERE user_id = %s ORDER BY id DESC", (owner,))

    async def list_active_for_users(self, user_ids: Sequence[str]) -> dict[str, list[WebhookEndpoint]]:
        owners = [owner for owner in map(_uuid_or_none, user_ids) if owner is not None]
        if not owners:
            return {}
        # The user index finds each user's few endpoints; the status is checked on those rows.
        endpoints = await self._select("WHERE user_id = ANY(%s) AND status = 'active' ORDER BY id", (owners,))
        by_user: dict[str, list[WebhookEndpoint]] = {}
        for endpoint in endpoints:
            by_user.setdefault(endpoint.user_id, []).append(endpoint)
        return by_user

    async def update(self, endpoint: WebhookEndpoint) -> None:
        e = endpoint
        _check_endpoint(e)
        id_ = _uuid_or_none(e.id)
        if id_ is None:
            return
        await self._uow.connection.execute(
            """
            UPDATE webhook_endpoints
            SET url = %s, events = %s::text[], status = %s, disabled_reason = %s, updated_at = %s
            WHERE id = %s
            """,
            (e.url, list(e.events), EndpointStatus(e.status).value, e.disabled_reason, e.updated_at, id_),
        )

    async def delete(self, user_id: str, endpoint_id: str) -> bool:
        owner, id_ = _uuid_or_none(user_id), _uuid_or_none(endpoint_id)
        if owner is None or id_ is None:
            return False
        # One statement: the endpoint and its secret versions go together. Deliveries stay.
        cursor = await self._uow.connection.execute(
            """
            WITH gone AS (
                DELETE FROM webhook_endpoints WHERE id = %s AND user_id = %s RETURNING id
            ), secrets AS (
                DELETE FROM webhook_secrets
                WHERE owner = 'endpoint' AND owner_id IN (SELECT id FROM gone)
            )
            SELECT count(*) FROM gone
            """,
            (id_, owner),
        )
        row = await cursor.fetchone()
        return row is not None and row[0] == 1

    async def _select(self, where: str, params: Sequence[Any]) -> list[WebhookEndpoint]:
        cursor = await self._uow.connection.execute(
            f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints {where}", params
        )
        return [_endpoint(row) for row in await cursor.fetchall()]


class PostgresWebhookSecretRepository:
    """Implements `core.ports.WebhookSecretRepository` on `webhook_secrets`."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, version: WebhookSecretVersion) -> bool:
        v = version
        aware(v.created_at, "created_at")
        aware_or_none(v.expires_at, "expires_at")
        conn = self._uow.connection
        try:
            async with conn.transaction():
                # The partial unique index is the arbiter: a concurrent first use waits for the other
                # to end, then inserts nothing if that one committed a current version.
                cursor = await conn.execute(
                    f"""
                    INSERT INTO webhook_secrets ({_SECRET_COLUMNS})
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (owner, owner_id) WHERE expires_at IS NULL DO NOTHING
                    """,
                    (
                        uuid.UUID(v.id),
                        SecretOwner(v.owner).value,
                        uuid.UUID(v.owner_id),
                        uuid.UUID(v.user_id),
                        v.key_version,
                        v.salt,
                        v.created_at,
                        v.expires_at,
                    ),
                )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {v.user_id} to own the webhook secret") from error
        except errors.UniqueViolation as error:  # only the primary key is left to conflict
            raise DomainError(ErrorCode.CONFLICT, "Webhook secret version already exists", id=v.id) from error
        return cursor.rowcount == 1

    async def current_for_update(self, owner: SecretOwner, owner_id: str) -> WebhookSecretVersion | None:
        id_ = _uuid_or_none(owner_id)
        if id_ is None:
            return None
        params = (SecretOwner(owner).value, id_)
        conn = self._uow.connection
        while True:
            cursor = await conn.execute(
                f"SELECT {_SECRET_COLUMNS} FROM webhook_secrets"
                " WHERE owner = %s AND owner_id = %s AND expires_at IS NULL FOR UPDATE",
                params,
            )
            row = await cursor.fetchone()
            if row is not None:
                return _secret(row)
            # Nothing: either there is no current version, or the one this statement waited for was
            # retired by a rotation that committed meanwhile, and the version that replaced it is
            # newer than the statement's snapshot. A new statement sees it; take turns on that one.
            cursor = await conn.execute(
                "SELECT EXISTS (SELECT 1 FROM webhook_secrets"
                " WHERE owner = %s AND owner_id = %s AND expires_at IS NULL)",
                params,
            )
            exists = await cursor.fetchone()
            if exists is None or not exists[0]:
                return None

    async def update(self, version: WebhookSecretVersion) -> None:
        id_ = _uuid_or_none(version.id)
        if id_ is None:
            return
        conn = self._uow.connection
        try:
            async with conn.transaction():
                await conn.execute(
                    "UPDATE webhook_secrets SET expires_at = %s WHERE id = %s",
                    (aware_or_none(version.expires_at, "expires_at"), id_),
                )
        except errors.UniqueViolation as error:
            raise ValueError("the owner has a current webhook secret version already") from error

    async def live(self, owner: SecretOwner, owner_id: str, now: datetime) -> list[WebhookSecretVersion]:
        id_ = _uuid_or_none(owner_id)
        if id_ is None:
            return []
        cursor = await self._uow.connection.execute(
            f"""
            SELECT {_SECRET_COLUMNS} FROM webhook_secrets
            WHERE owner = %s AND owner_id = %s AND (expires_at IS NULL OR expires_at > %s)
            ORDER BY created_at DESC, id DESC
            """,
            (SecretOwner(owner).value, id_, aware(now, "now")),
        )
        return [_secret(row) for row in await cursor.fetchall()]

    async def delete_expired(self, before: datetime) -> int:
        # `<=`: a version whose end is `before` no longer signs at `before` (`live` leaves it out).
        cursor = await self._uow.connection.execute(
            "DELETE FROM webhook_secrets WHERE expires_at <= %s", (aware(before, "before"),)
        )
        return cursor.rowcount


class PostgresWebhookDeliveryRepository:
    """Implements `core.ports.WebhookDeliveryRepository` on `webhook_deliveries`."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, delivery: WebhookDelivery) -> bool:
        d = delivery
        _check_delivery(d)
        endpoint_id = None if d.endpoint_id is None else uuid.UUID(d.endpoint_id)
        conn = self._uow.connection
        try:
            async with conn.transaction():
                # No conflict target: either unique index (event and endpoint, or event and URL) and
                # the primary key all mean "nothing inserted"; a concurrent insert of the same event
                # and target is waited for, then counts as a conflict if it committed.
                cursor = await conn.execute(
                    """
                    INSERT INTO webhook_deliveries (
                        id, user_id, endpoint_id, url, event_id, event_type, event_occurred_at, data,
                        status, attempts, max_attempts, next_attempt_at, last_status_code, last_error,
                        last_attempt_at, delivered_at, locked_until, created_at, updated_at
                    )
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT DO NOTHING
                    """,
                    _delivery_row(d),
                )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {d.user_id} to own the webhook delivery") from error
        except errors.CheckViolation as error:
            raise ValueError(f"the webhook delivery breaks a rule of its table: {error}") from error
        if cursor.rowcount == 1:
            return True
        # Nothing inserted. The same event and target is the idempotent case; an id taken by another
        # delivery is a bug in the caller's ids and says so.
        cursor = await conn.execute(
            "SELECT event_id, endpoint_id, url FROM webhook_deliveries WHERE id = %s", (uuid.UUID(d.id),)
        )
        same_id = await cursor.fetchone()
        if same_id is not None and not _same_target(same_id, d.event_id, endpoint_id, d.url):
            raise DomainError(ErrorCode.CONFLICT, "Webhook delivery already exists", delivery_id=d.id)
        return False

    async def add_many(self, deliveries: Sequence[WebhookDelivery]) -> int:
        for d in deliveries:
            _check_delivery(d)
        if not deliveries:
            return 0
        # One pipelined statement per row, no savepoint: ON CONFLICT covers both unique indexes and
        # the fan-out's ids are fresh, so nothing here can fail but a missing user (a caller's bug).
        async with self._uow.connection.cursor() as cursor:
            await cursor.executemany(
                """
                INSERT INTO webhook_deliveries (
                    id, user_id, endpoint_id, url, event_id, event_type, event_occurred_at, data,
                    status, attempts, max_attempts, next_attempt_at, last_status_code, last_error,
                    last_attempt_at, delivered_at, locked_until, created_at, updated_at
                )
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING
                """,
                [_delivery_row(d) for d in deliveries],
            )
            return max(cursor.rowcount, 0)

    async def get_for_user(self, user_id: str, delivery_id: str) -> WebhookDelivery | None:
        owner, id_ = _uuid_or_none(user_id), _uuid_or_none(delivery_id)
        if owner is None or id_ is None:
            return None
        found = await self._select("WHERE id = %s AND user_id = %s", (id_, owner))
        return found[0] if found else None

    async def get_for_update(self, delivery_id: str) -> WebhookDelivery | None:
        id_ = _uuid_or_none(delivery_id)
        if id_ is None:
            return None
        found = await self._select("WHERE id = %s FOR UPDATE", (id_,))
        return found[0] if found else None

    async def list_for_endpoint(
        self, user_id: str, endpoint_id: str, *, after: str | None, limit: int
    ) -> list[WebhookDelivery]:
        check_limit(limit)
        owner, endpoint = _uuid_or_none(user_id), _uuid_or_none(endpoint_id)
        after_id = None if after is None else _uuid_or_none(after)
        if owner is None or endpoint is None or (after is not None and after_id is None):
            return []
        # Served by (endpoint_id, id DESC); the owner check reads only the rows of the page.
        if after_id is None:
            return await self._select(
                "WHERE endpoint_id = %s AND user_id = %s ORDER BY id DESC LIMIT %s", (endpoint, owner, limit)
            )
        return await self._select(
            "WHERE endpoint_id = %s AND user_id = %s AND id < %s ORDER BY id DESC LIMIT %s",
            (endpoint, owner, after_id, limit),
        )

    async def claim_due(self, now: datetime, limit: int, lease_until: datetime) -> list[WebhookDelivery]:
        check_limit(limit)
        at = aware(now, "now")
        # The subquery repeats the partial index's predicate and order, so it reads the due rows
        # only; SKIP LOCKED passes over rows another dispatcher is claiming right now.
        cursor = await self._uow.connection.execute(
            f"""
            UPDATE webhook_deliveries SET locked_until = %s
            WHERE id IN (
                SELECT id FROM webhook_deliveries
                WHERE status = 'pending' AND next_attempt_at <= %s
                  AND (locked_until IS NULL OR locked_until <= %s)
                ORDER BY next_attempt_at, id
                LIMIT %s
                FOR UPDATE SKIP LOCKED
            )
            RETURNING {_DELIVERY_COLUMNS}
            """,
            (aware(lease_until, "lease_until"), at, at, limit),
        )
        claimed = [_delivery(row) for row in await cursor.fetchall()]
        # RETURNING keeps no order; the port promises earliest due first.
        return sorted(claimed, key=lambda row: (row.next_attempt_at or at, row.id))

    async def start_attempt(
        self, delivery_id: str, attempt: int, dispatched_until: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        id_ = _uuid_or_none(delivery_id)
        dispatch = aware(dispatched_until, "dispatched_until")
        lease = aware(lease_until, "lease_until")
        if id_ is None:
            return None
        # A compare-and-set in one statement: a concurrent job waits for the row and then finds the
        # lease (or the attempt count) changed. `attempt` counts from 1, so the attempt about to be
        # made is number `attempts + 1`.
        cursor = await self._uow.connection.execute(
            f"""
            UPDATE webhook_deliveries SET locked_until = %s
            WHERE id = %s AND status = 'pending' AND attempts = %s AND locked_until = %s
            RETURNING {_DELIVERY_COLUMNS}
            """,
            (lease, id_, attempt - 1, dispatch),
        )
        row = await cursor.fetchone()
        return None if row is None else _delivery(row)

    async def update(self, delivery: WebhookDelivery) -> None:
        d = delivery
        _check_delivery(d)
        id_ = _uuid_or_none(d.id)
        if id_ is None:
            return
        await self._uow.connection.execute(
            """
            UPDATE webhook_deliveries
            SET status = %s, attempts = %s, max_attempts = %s, next_attempt_at = %s,
                last_status_code = %s, last_error = %s, last_attempt_at = %s, delivered_at = %s,
                locked_until = %s, updated_at = %s
            WHERE id = %s
            """,
            (
                DeliveryStatus(d.status).value,
                d.attempts,
                d.max_attempts,
                d.next_attempt_at,
                d.last_status_code,
                d.last_error,
                d.last_attempt_at,
                d.delivered_at,
                d.locked_until,
                d.updated_at,
                id_,
            ),
        )

    async def cancel_pending_for_endpoint(self, endpoint_id: str, reason: str, now: datetime) -> int:
        id_ = _uuid_or_none(endpoint_id)
        at = aware(now, "now")
        if id_ is None:
            return 0
        # What `core.webhooks.deliveries.canceled` does to each row, in one statement.
        cursor = await self._uow.connection.execute(
            """
            UPDATE webhook_deliveries
            SET status = 'canceled', last_error = %s, next_attempt_at = NULL, locked_until = NULL,
                updated_at = %s
            WHERE endpoint_id = %s AND status = 'pending'
            """,
            (reason[:MAX_ERROR_LENGTH], at, id_),
        )
        return cursor.rowcount

    async def _select(self, where: str, params: Sequence[Any]) -> list[WebhookDelivery]:
        cursor = await self._uow.connection.execute(
            f"SELECT {_DELIVERY_COLUMNS} FROM webhook_deliveries {where}", params
        )
        return [_delivery(row) for row in await cursor.fetchall()]


def _endpoint(row: Sequence[Any]) -> WebhookEndpoint:
    id_, user_id, url, events, status, disabled_reason, created_at, updated_at = row
    return WebhookEndpoint(
        id=str(id_),
        user_id=str(user_id),
        url=url,
        events=tuple(events),
        status=EndpointStatus(status),
        disabled_reason=disabled_reason,
        created_at=created_at.astimezone(UTC),
        updated_at=updated_at.astimezone(UTC),
    )


def _secret(row: Sequence[Any]) -> WebhookSecretVersion:
    id_, owner, owner_id, user_id, key_version, salt, created_at, expires_at = row
    return WebhookSecretVersion(
        id=str(id_),
        owner=SecretOwner(owner),
        owner_id=str(owner_id),
        user_id=str(user_id),
        key_version=key_version,
        salt=salt,
        created_at=created_at.astimezone(UTC),
        expires_at=utc_or_none(expires_at),
    )


def _delivery(row: Sequence[Any]) -> WebhookDelivery:
    (
        id_,
        user_id,
        endpoint_id,
        url,
        event_id,
        event_type,
        event_occurred_at,
        data,
        status,
        attempts,
        max_attempts,
        next_attempt_at,
        last_status_code,
        last_error,
        last_attempt_at,
        delivered_at,
        locked_until,
        created_at,
        updated_at,
    ) = row
    return WebhookDelivery(
        id=str(id_),
        user_id=str(user_id),
        endpoint_id=None if endpoint_id is None else str(endpoint_id),
        url=url,
        event_id=event_id,
        event_type=event_type,
        event_occurred_at=event_occurred_at.astimezone(UTC),
        data=_data_decoder.decode(data),
        status=DeliveryStatus(status),
        attempts=attempts,
        max_attempts=max_attempts,
        next_attempt_at=utc_or_none(next_attempt_at),
        last_status_code=last_status_code,
        last_error=last_error,
        last_attempt_at=utc_or_none(last_attempt_at),
        delivered_at=utc_or_none(delivered_at),
        locked_until=utc_or_none(locked_until),
        created_at=created_at.astimezone(UTC),
        updated_at=updated_at.astimezone(UTC),
    )


def _same_target(row: Sequence[Any], event_id: str, endpoint_id: uuid.UUID | None, url: str) -> bool:
    """Whether a stored (event_id, endpoint_id, url) is the delivery's event and target."""
    stored_event, stored_endpoint, stored_url = row
    if stored_event != event_id or stored_endpoint != endpoint_id:
        return False
    return endpoint_id is not None or stored_url == url


def _check_endpoint(endpoint: WebhookEndpoint) -> None:
    """The CHECKs of `webhook_endpoints`, before any SQL runs."""
    check_endpoint_row(endpoint)
    aware(endpoint.created_at, "created_at")
    aware(endpoint.updated_at, "updated_at")


def _check_delivery(delivery: WebhookDelivery) -> None:
    """The CHECKs of `webhook_deliveries`, before any SQL runs."""
    d = delivery
    check_delivery_row(d)
    if d.endpoint_id is not None and not is_id(d.endpoint_id):
        raise ValueError("endpoint_id must be an id")
    for name in ("event_occurred_at", "created_at", "updated_at"):
        aware(getattr(d, name), name)
    for name in ("next_attempt_at", "last_attempt_at", "delivered_at", "locked_until"):
        aware_or_none(getattr(d, name), name)


def _uuid_or_none(text: str) -> uuid.UUID | None:
    return uuid.UUID(text) if is_id(text) else None


def _delivery_row(d: WebhookDelivery) -> tuple[Any, ...]:
    """The INSERT parameters of a delivery, in the column order of `add`."""
    return (
        uuid.UUID(d.id),
        uuid.UUID(d.user_id),
        None if d.endpoint_id is None else uuid.UUID(d.endpoint_id),
        d.url,
        d.event_id,
        d.event_type,
        d.event_occurred_at,
        msgspec.json.encode(d.data).decode(),
        DeliveryStatus(d.status).value,
        d.attempts,
        d.max_attempts,
        d.next_attempt_at,
        d.last_status_code,
        d.last_error,
        d.last_attempt_at,
        d.delivered_at,
        d.locked_until,
        d.created_at,
        d.updated_at,
    )
