"""The account repositories on PostgreSQL (migration 0002): users, API keys, one-time tokens, audit log.

Each repository works on its unit of work's connection, inside its transaction. Rows map to the core
Structs explicitly; timestamps come back in UTC. Ids are UUIDv7 in `uuid` columns: an id that is not
a UUID finds nothing (rather than failing the transaction), and a keyset `after` that is not one is
an `invalid_cursor`.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, LiteralString

import msgspec
from psycopg import errors, sql

from adapters.postgres.row_values import aware, aware_or_none, check_limit, utc_or_none
from core.accounts.api_keys import ApiKey
from core.accounts.audit import AuditAction, AuditRecord
from core.accounts.tokens import OneTimeToken, TokenPurpose
from core.accounts.users import Role, User, UserStatus
from core.errors import DomainError, ErrorCode
from core.identifiers import is_id

if TYPE_CHECKING:
    from adapters.postgres.database import PostgresUnitOfWork

EMAIL_UNIQUE_CONSTRAINT = "users_email_normalized_key"

_details_decoder = msgspec.json.Decoder(dict[str, Any])

_USER_COLUMNS = (
    "id, email, email_normalized, display_name, role, status, email_verified, password_hash, plan,"
    " created_at, updated_at"
)
_API_KEY_COLUMNS = (
    "id, user_id, name, prefix, key_hash, scopes, allowed_ips, created_at, expires_at, last_used_at,"
    " revoked_at"
)
_TOKEN_COLUMNS = "token_hash, purpose, user_id, created_at, expires_at, used_at"
_AUDIT_COLUMNS = "id, occurred_at, action, actor_id, target_type, target_id, ip, correlation_id, details"
# jsonb read as text and decoded by msgspec, as the outbox does.
_AUDIT_SELECT = "id, occurred_at, action, actor_id, target_type, target_id, ip, correlation_id, details::text"


class PostgresUserRepository:
    """Implements `core.ports.UserRepository` on the `users` table."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, user: User) -> None:
        # ON CONFLICT keeps the transaction usable: a taken email is a client error, not a failed
        # unit of work. The follow-up query (only on a conflict) tells the email from a reused id.
        cursor = await self._uow.connection.execute(
            f"""
            INSERT INTO users ({_USER_COLUMNS})
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
            ON CONFLICT DO NOTHING
            """,
            (
                uuid.UUID(user.id),
                user.email,
                user.email_normalized,
                user.display_name,
                user.role.value,
                user.status.value,
                user.email_verified,
                user.password_hash,
                user.plan,
                aware(user.created_at, "created_at"),
                aware(user.updated_at, "updated_at"),
            ),
        )
        if cursor.rowcount == 1:
            return
        if await self.get_by_email(user.email_normalized) is not None:
            raise DomainError(ErrorCode.EMAIL_TAKEN, "An account with this email already exists")
        raise DomainError(ErrorCode.CONFLICT, "User already exists", user_id=user.id)

    async def get(self, user_id: str) -> User | None:
        id_ = _uuid_or_none(user_id)
        if id_ is None:
            return None
        return await self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s", (id_,))

    async def get_for_update(self, user_id: str) -> User | None:
        id_ = _uuid_or_none(user_id)
        if id_ is None:
            return None
        return await self._one(f"SELECT {_USER_COLUMNS} FROM users WHERE id = %s FOR UPDATE", (id_,))

    async def get_by_email(self, email_normalized: str) -> User | None:
        return await self._one(
            f"SELECT {_USER_COLUMNS} FROM users WHERE email_normalized = %s", (email_normalized,)
        )

    async def update(self, user: User) -> None:
        id_ = _uuid_or_none(user.id)
        if id_ is None:
            return
        conn = self._uow.connection
        # A savepoint, so that a taken email leaves the unit of work usable: unlike INSERT, UPDATE
        # has no ON CONFLICT, and a concurrent change to the same email can only be caught.
        try:
            async with conn.transaction():
                await conn.execute(
                    """
                    UPDATE users
                    SET email = %s, email_normalized = %s, display_name = %s, role = %s, status = %s,
                        email_verified = %s, password_hash = %s, plan = %s, updated_at = %s
                    WHERE id = %s
                    """,
                    (
                        user.email,
                        user.email_normalized,
                        user.display_name,
                        user.role.value,
                        user.status.value,
                        user.email_verified,
                        user.password_hash,
                        user.plan,
                        aware(user.updated_at, "updated_at"),
                        id_,
                    ),
                )
        except errors.UniqueViolation as error:
            if error.diag.constraint_name != EMAIL_UNIQUE_CONSTRAINT:
                raise
            raise DomainError(ErrorCode.EMAIL_TAKEN, "An account with this email already exists") from None

    async def list(
        self,
        *,
        email: str | None = None,
        status: UserStatus | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[User]:
        check_limit(limit)
        conditions: list[LiteralString] = []
        params: list[Any] = []
        if email:
            conditions.append("email_normalized LIKE %s")
            params.append(f"%{_escape_like(email)}%")
        if status is not None:
            conditions.append("status = %s")
            params.append(status.value)
        if after is not None:
            conditions.append("id < %s")
            params.append(_cursor_id(after))
        query = sql.SQL("SELECT {columns} FROM users {where} ORDER BY id DESC LIMIT %s").format(
            columns=sql.SQL(_USER_COLUMNS), where=_where(conditions)
        )
        cursor = await self._uow.connection.execute(query, (*params, limit))
        return [_user(row) for row in await cursor.fetchall()]

    async def _one(self, query: LiteralString, params: Sequence[Any]) -> User | None:
        cursor = await self._uow.connection.execute(query, params)
        row = await cursor.fetchone()
        return None if row is None else _user(row)


class PostgresApiKeyRepository:
    """Implements `core.ports.ApiKeyRepository` on the `api_keys` table."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, key: ApiKey) -> None:
        try:
            cursor = await self._uow.connection.execute(
                f"""
                INSERT INTO api_keys ({_API_KEY_COLUMNS})
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING
                """,
                (
                    uuid.UUID(key.id),
                    uuid.UUID(key.user_id),
                    key.name,
                    key.prefix,
                    key.key_hash,
                    list(key.scopes),
                    list(key.allowed_ips),
                    aware(key.created_at, "created_at"),
                    aware_or_none(key.expires_at, "expires_at"),
                    aware_or_none(key.last_used_at, "last_used_at"),
                    aware_or_none(key.revoked_at, "revoked_at"),
                ),
            )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {key.user_id} to own the key") from error
        if cursor.rowcount == 0:
            raise DomainError(ErrorCode.CONFLICT, "API key already exists", key_id=key.id)

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        cursor = await self._uow.connection.execute(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE key_hash = %s", (key_hash,)
        )
        row = await cursor.fetchone()
        return None if row is None else _api_key(row)

    async def list_for_user(self, user_id: str) -> list[ApiKey]:
        owner = _uuid_or_none(user_id)
        if owner is None:
            return []
        cursor = await self._uow.connection.execute(
            f"""
            SELECT {_API_KEY_COLUMNS} FROM api_keys
            WHERE user_id = %s AND revoked_at IS NULL
            ORDER BY id DESC
            """,
            (owner,),
        )
        return [_api_key(row) for row in await cursor.fetchall()]

    async def revoke(self, user_id: str, key_id: str, at: datetime) -> bool:
        revoked_at = aware(at, "at")
        owner, id_ = _uuid_or_none(user_id), _uuid_or_none(key_id)
        if owner is None or id_ is None:
            return False
        cursor = await self._uow.connection.execute(
            "UPDATE api_keys SET revoked_at = %s WHERE id = %s AND user_id = %s AND revoked_at IS NULL",
            (revoked_at, id_, owner),
        )
        return cursor.rowcount == 1

    async def touch(self, key_id: str, at: datetime) -> None:
        used_at = aware(at, "at")
        id_ = _uuid_or_none(key_id)
        if id_ is None:
            return
        # Never moves back: of two overlapping touches, the later time stays.
        await self._uow.connection.execute(
            """
            UPDATE api_keys SET last_used_at = %s
            WHERE id = %s AND (last_used_at IS NULL OR last_used_at < %s)
            """,
            (used_at, id_, used_at),
        )


class PostgresTokenRepository:
    """Implements `core.ports.TokenRepository` on the `one_time_tokens` table."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, token: OneTimeToken) -> None:
        try:
            cursor = await self._uow.connection.execute(
                f"""
                INSERT INTO one_time_tokens ({_TOKEN_COLUMNS})
                VALUES (%s, %s, %s, %s, %s, %s)
                ON CONFLICT DO NOTHING
                """,
                (
                    token.token_hash,
                    token.purpose.value,
                    uuid.UUID(token.user_id),
                    aware(token.created_at, "created_at"),
                    aware(token.expires_at, "expires_at"),
                    aware_or_none(token.used_at, "used_at"),
                ),
            )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {token.user_id} to own the token") from error
        if cursor.rowcount == 0:
            raise DomainError(ErrorCode.CONFLICT, "Token already exists")

    async def consume(self, token_hash: str, purpose: TokenPurpose, now: datetime) -> OneTimeToken | None:
        at = aware(now, "now")
        # One statement: a concurrent consumer waits on the row lock, then re-checks `used_at IS
        # NULL` against the committed row and finds nothing.
        cursor = await self._uow.connection.execute(
            f"""
            UPDATE one_time_tokens SET used_at = %s
            WHERE token_hash = %s AND purpose = %s AND used_at IS NULL AND expires_at > %s
            RETURNING {_TOKEN_COLUMNS}
            """,
            (at, token_hash, purpose.value, at),
        )
        row = await cursor.fetchone()
        return None if row is None else _token(row)

    async def revoke_for_user(self, user_id: str, purpose: TokenPurpose, at: datetime) -> int:
        used_at = aware(at, "at")
        owner = _uuid_or_none(user_id)
        if owner is None:
            return 0
        cursor = await self._uow.connection.execute(
            """
            UPDATE one_time_tokens SET used_at = %s
            WHERE user_id = %s AND purpose = %s AND used_at IS NULL
            """,
            (used_at, owner, purpose.value),
        )
        return cursor.rowcount


class PostgresAuditRepository:
    """Implements `core.ports.AuditRepository` on the append-only `audit_log` table."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, record: AuditRecord) -> None:
        cursor = await self._uow.connection.execute(
            f"""
            INSERT INTO audit_log ({_AUDIT_COLUMNS})
            VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::jsonb)
            ON CONFLICT DO NOTHING
            """,
            (
                uuid.UUID(record.id),
                aware(record.occurred_at, "occurred_at"),
                record.action.value,
                record.actor_id,
                record.target_type,
                record.target_id,
                record.ip,
                record.correlation_id,
                msgspec.json.encode(record.details).decode(),
            ),
        )
        if cursor.rowcount == 0:
            raise DomainError(ErrorCode.CONFLICT, "Audit record already exists", record_id=record.id)

    async def list(
        self,
        *,
        action: str | None = None,
        actor_id: str | None = None,
        target_id: str | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[AuditRecord]:
        check_limit(limit)
        conditions: list[LiteralString] = []
        params: list[Any] = []
        if action is not None:
            conditions.append("action = %s")
            params.append(action)
        if actor_id is not None:
            conditions.append("actor_id = %s")
            params.append(actor_id)
        if target_id is not None:
            conditions.append("target_id = %s")
            params.append(target_id)
        if after is not None:
            conditions.append("id < %s")
            params.append(_cursor_id(after))
        query = sql.SQL("SELECT {columns} FROM audit_log {where} ORDER BY id DESC LIMIT %s").format(
            columns=sql.SQL(_AUDIT_SELECT), where=_where(conditions)
        )
        cursor = await self._uow.connection.execute(query, (*params, limit))
        return [_audit_record(row) for row in await cursor.fetchall()]


def _user(row: Sequence[Any]) -> User:
    (
        id_,
        email,
        email_normalized,
        display_name,
        role,
        status,
        email_verified,
        password_hash,
        plan,
        created_at,
        updated_at,
    ) = row
    return User(
        id=str(id_),
        email=email,
        email_normalized=email_normalized,
        display_name=display_name,
        role=Role(role),
        status=UserStatus(status),
        email_verified=email_verified,
        password_hash=password_hash,
        plan=plan,
        created_at=created_at.astimezone(UTC),
        updated_at=updated_at.astimezone(UTC),
    )


def _api_key(row: Sequence[Any]) -> ApiKey:
    (
        id_,
        user_id,
        name,
        prefix,
        key_hash,
        scopes,
        allowed_ips,
        created_at,
        expires_at,
        last_used_at,
        revoked_at,
    ) = row
    return ApiKey(
        id=str(id_),
        user_id=str(user_id),
        name=name,
        prefix=prefix,
        key_hash=key_hash,
        scopes=list(scopes),
        allowed_ips=list(allowed_ips),
        created_at=created_at.astimezone(UTC),
        expires_at=utc_or_none(expires_at),
        last_used_at=utc_or_none(last_used_at),
        revoked_at=utc_or_none(revoked_at),
    )


def _token(row: Sequence[Any]) -> OneTimeToken:
    token_hash, purpose, user_id, created_at, expires_at, used_at = row
    return OneTimeToken(
        token_hash=token_hash,
        purpose=TokenPurpose(purpose),
        user_id=str(user_id),
        created_at=created_at.astimezone(UTC),
        expires_at=expires_at.astimezone(UTC),
        used_at=utc_or_none(used_at),
    )


def _audit_record(row: Sequence[Any]) -> AuditRecord:
    id_, occurred_at, action, actor_id, target_type, target_id, ip, correlation_id, details = row
    return AuditRecord(
        id=str(id_),
        occurred_at=occurred_at.astimezone(UTC),
        action=AuditAction(action),
        actor_id=actor_id,
        target_type=target_type,
        target_id=target_id,
        ip=ip,
        correlation_id=correlation_id,
        details=_details_decoder.decode(details),
    )


def _where(conditions: Sequence[LiteralString]) -> sql.Composable:
    if not conditions:
        return sql.SQL("")
    return sql.SQL("WHERE ") + sql.SQL(" AND ").join(sql.SQL(condition) for condition in conditions)


def _escape_like(text: str) -> str:
    """`text` matched literally by LIKE (whose default escape character is the backslash)."""
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _uuid_or_none(text: str) -> uuid.UUID | None:
    return uuid.UUID(text) if is_id(text) else None


def _cursor_id(after: str) -> uuid.UUID:
    id_ = _uuid_or_none(after)
    if id_ is None:
        raise DomainError(ErrorCode.INVALID_CURSOR, "The cursor is not one this API made")
    return id_
