"""In-memory fakes of the account repositories, held to the same contract as the PostgreSQL ones.

They mirror the tables of migration 0002: ids are UUIDs (stored in canonical lower-case form,
ordered as PostgreSQL orders `uuid`), the normalized email and the API key hash are unique, API keys
and tokens need an existing user, timestamps are stored in UTC, and row locks make concurrent
updates of one row (consuming a token, revoking a key) take turns as they do on PostgreSQL.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import msgspec

from adapters.memory.row_values import canonical_or_none, check_limit, utc, utc_or_none
from adapters.memory.tables import Table, TableView
from core.accounts.api_keys import ApiKey
from core.accounts.audit import AuditRecord
from core.accounts.tokens import OneTimeToken, TokenPurpose
from core.accounts.users import User, UserStatus
from core.errors import DomainError, ErrorCode


class AccountTables:
    """The committed rows of the account tables of one `MemoryDatabase`."""

    def __init__(self) -> None:
        self.users: Table[str, User] = Table("users")
        self.api_keys: Table[str, ApiKey] = Table("api_keys")
        self.tokens: Table[str, OneTimeToken] = Table("one_time_tokens")
        self.audit: Table[str, AuditRecord] = Table("audit_log")


class MemoryUserRepository:
    """Implements `core.ports.UserRepository` in memory."""

    def __init__(self, users: TableView[str, User]) -> None:
        self._users = users
        self._transaction = users.transaction

    async def add(self, user: User) -> None:
        self._transaction.require_active()
        id_ = str(uuid.UUID(user.id))
        stored = msgspec.structs.replace(
            user,
            id=id_,
            created_at=utc(user.created_at, "created_at"),
            updated_at=utc(user.updated_at, "updated_at"),
        )
        # Like the unique indexes: wait for a concurrent insert of the same id or email to end.
        locks = (self._users.row_lock(id_), self._users.unique_claim("email", user.email_normalized))
        await self._transaction.wait_until_free(*locks)
        if self._email_owner(user.email_normalized) is not None:
            raise DomainError(ErrorCode.EMAIL_TAKEN, "An account with this email already exists")
        if self._users.get(id_) is not None:
            raise DomainError(ErrorCode.CONFLICT, "User already exists", user_id=user.id)
        self._transaction.take(*locks)
        self._users.put(id_, stored)

    async def get(self, user_id: str) -> User | None:
        self._transaction.require_active()
        id_ = canonical_or_none(user_id)
        return None if id_ is None else self._users.get(id_)

    async def get_for_update(self, user_id: str) -> User | None:
        self._transaction.require_active()
        id_ = canonical_or_none(user_id)
        if id_ is None:
            return None
        lock = self._users.row_lock(id_)
        await self._transaction.wait_until_free(lock)
        self._transaction.take(lock)
        return self._users.get(id_)

    async def get_by_email(self, email_normalized: str) -> User | None:
        self._transaction.require_active()
        id_ = self._email_owner(email_normalized)
        return None if id_ is None else self._users.get(id_)

    async def update(self, user: User) -> None:
        self._transaction.require_active()
        updated_at = utc(user.updated_at, "updated_at")
        id_ = canonical_or_none(user.id)
        current = None if id_ is None else self._users.get(id_)
        if id_ is None or current is None:
            return
        # The row, its old email (an insert of that email waits to see whether it is freed) and
        # the new one (a concurrent claim of it waits for this unit of work).
        locks = (
            self._users.row_lock(id_),
            self._users.unique_claim("email", current.email_normalized),
            self._users.unique_claim("email", user.email_normalized),
        )
        await self._transaction.wait_until_free(*locks)
        current = self._users.get(id_)
        if current is None:
            return
        if self._email_owner(user.email_normalized) not in (None, id_):
            raise DomainError(ErrorCode.EMAIL_TAKEN, "An account with this email already exists")
        self._transaction.take(*locks)
        self._users.put(
            id_,
            msgspec.structs.replace(user, id=id_, created_at=current.created_at, updated_at=updated_at),
        )

    async def list(
        self,
        *,
        email: str | None = None,
        status: UserStatus | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[User]:
        self._transaction.require_active()
        check_limit(limit)
        last = None if after is None else _cursor_id(after)
        found = [
            user
            for user in self._users.rows()
            if (not email or email in user.email_normalized)
            and (status is None or user.status == status)
            and (last is None or user.id < last)
        ]
        return sorted(found, key=lambda user: user.id, reverse=True)[:limit]

    def _email_owner(self, email_normalized: str) -> str | None:
        for user in self._users.rows():
            if user.email_normalized == email_normalized:
                return user.id
        return None


class MemoryApiKeyRepository:
    """Implements `core.ports.ApiKeyRepository` in memory."""

    def __init__(self, keys: TableView[str, ApiKey], users: TableView[str, User]) -> None:
        self._keys = keys
        self._users = users
        self._transaction = keys.transaction

    async def add(self, key: ApiKey) -> None:
        self._transaction.require_active()
        id_, user_id = str(uuid.UUID(key.id)), str(uuid.UUID(key.user_id))
        stored = msgspec.structs.replace(
            key,
            id=id_,
            user_id=user_id,
            scopes=list(key.scopes),
            allowed_ips=list(key.allowed_ips),
            created_at=utc(key.created_at, "created_at"),
            expires_at=utc_or_none(key.expires_at, "expires_at"),
            last_used_at=utc_or_none(key.last_used_at, "last_used_at"),
            revoked_at=utc_or_none(key.revoked_at, "revoked_at"),
        )
        if self._users.get(user_id) is None:
            raise ValueError(f"no user {key.user_id} to own the key")
        locks = (self._keys.row_lock(id_), self._keys.unique_claim("key_hash", key.key_hash))
        await self._transaction.wait_until_free(*locks)
        if self._keys.get(id_) is not None or self._find_hash(key.key_hash) is not None:
            raise DomainError(ErrorCode.CONFLICT, "API key already exists", key_id=key.id)
        self._transaction.take(*locks)
        self._keys.put(id_, stored)

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        self._transaction.require_active()
        return self._find_hash(key_hash)

    async def list_for_user(self, user_id: str) -> list[ApiKey]:
        self._transaction.require_active()
        owner = canonical_or_none(user_id)
        live = [key for key in self._keys.rows() if key.user_id == owner and key.revoked_at is None]
        return sorted(live, key=lambda key: key.id, reverse=True)

    async def revoke(self, user_id: str, key_id: str, at: datetime) -> bool:
        self._transaction.require_active()
        revoked_at = utc(at, "at")
        owner, id_ = canonical_or_none(user_id), canonical_or_none(key_id)
        if owner is None or id_ is None:
            return False
        revoked = await self._keys.update_where(
            id_,
            lambda key: key.user_id == owner and key.revoked_at is None,
            lambda key: msgspec.structs.replace(key, revoked_at=revoked_at),
        )
        return revoked is not None

    async def touch(self, key_id: str, at: datetime) -> None:
        self._transaction.require_active()
        used_at = utc(at, "at")
        id_ = canonical_or_none(key_id)
        if id_ is None:
            return
        await self._keys.update_where(
            id_,
            lambda key: key.last_used_at is None or key.last_used_at < used_at,
            lambda key: msgspec.structs.replace(key, last_used_at=used_at),
        )

    def _find_hash(self, key_hash: str) -> ApiKey | None:
        return next((key for key in self._keys.rows() if key.key_hash == key_hash), None)


class MemoryTokenRepository:
    """Implements `core.ports.TokenRepository` in memory."""

    def __init__(self, tokens: TableView[str, OneTimeToken], users: TableView[str, User]) -> None:
        self._tokens = tokens
        self._users = users
        self._transaction = tokens.transaction

    async def add(self, token: OneTimeToken) -> None:
        self._transaction.require_active()
        user_id = str(uuid.UUID(token.user_id))
        stored = msgspec.structs.replace(
            token,
            user_id=user_id,
            created_at=utc(token.created_at, "created_at"),
            expires_at=utc(token.expires_at, "expires_at"),
            used_at=utc_or_none(token.used_at, "used_at"),
        )
        if self._users.get(user_id) is None:
            raise ValueError(f"no user {token.user_id} to own the token")
        lock = self._tokens.row_lock(token.token_hash)
        await self._transaction.wait_until_free(lock)
        if self._tokens.get(token.token_hash) is not None:
            raise DomainError(ErrorCode.CONFLICT, "Token already exists")
        self._transaction.take(lock)
        self._tokens.put(token.token_hash, stored)

    async def consume(self, token_hash: str, purpose: TokenPurpose, now: datetime) -> OneTimeToken | None:
        self._transaction.require_active()
        at = utc(now, "now")
        return await self._tokens.update_where(
            token_hash,
            lambda token: token.purpose == purpose and token.usable_at(at),
            lambda token: msgspec.structs.replace(token, used_at=at),
        )

    async def revoke_for_user(self, user_id: str, purpose: TokenPurpose, at: datetime) -> int:
        self._transaction.require_active()
        used_at = utc(at, "at")
        owner = canonical_or_none(user_id)

        def outstanding(token: OneTimeToken) -> bool:
            return token.user_id == owner and token.purpose == purpose and token.used_at is None

        revoked = 0
        for token in [token for token in self._tokens.rows() if outstanding(token)]:
            changed = await self._tokens.update_where(
                token.token_hash, outstanding, lambda row: msgspec.structs.replace(row, used_at=used_at)
            )
            revoked += changed is not None
        return revoked


class MemoryAuditRepository:
    """Implements `core.ports.AuditRepository` in memory; records are never changed once added."""

    def __init__(self, records: TableView[str, AuditRecord]) -> None:
        self._records = records
        self._transaction = records.transaction

    async def add(self, record: AuditRecord) -> None:
        self._transaction.require_active()
        id_ = str(uuid.UUID(record.id))
        # Encoding and decoding copies the details, and fails on what jsonb would refuse.
        details = msgspec.json.decode(msgspec.json.encode(record.details), type=dict[str, Any])
        stored = msgspec.structs.replace(
            record, id=id_, occurred_at=utc(record.occurred_at, "occurred_at"), details=details
        )
        lock = self._records.row_lock(id_)
        await self._transaction.wait_until_free(lock)
        if self._records.get(id_) is not None:
            raise DomainError(ErrorCode.CONFLICT, "Audit record already exists", record_id=record.id)
        self._transaction.take(lock)
        self._records.put(id_, stored)

    async def list(
        self,
        *,
        action: str | None = None,
        actor_id: str | None = None,
        target_id: str | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[AuditRecord]:
        self._transaction.require_active()
        check_limit(limit)
        last = None if after is None else _cursor_id(after)
        found = [
            record
            for record in self._records.rows()
            if (action is None or record.action == action)
            and (actor_id is None or record.actor_id == actor_id)
            and (target_id is None or record.target_id == target_id)
            and (last is None or record.id < last)
        ]
        return sorted(found, key=lambda record: record.id, reverse=True)[:limit]


def _cursor_id(after: str) -> str:
    id_ = canonical_or_none(after)
    if id_ is None:
        raise DomainError(ErrorCode.INVALID_CURSOR, "The cursor is not one this API made")
    return id_
