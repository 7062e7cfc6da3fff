"""Request and response bodies of the accounts API (API.md), as msgspec Structs.

Input Structs list only what a caller may set; anything else in a body is ignored.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import msgspec
from litestar.params import QueryParameter

from core.accounts.api_keys import ApiKey
from core.accounts.audit import AuditRecord
from core.accounts.sessions import Session
from core.accounts.users import User
from core.pagination import MAX_LIMIT


class RegisterBody(msgspec.Struct, kw_only=True):
    email: str
    password: str
    display_name: str | None = None


class LoginBody(msgspec.Struct, kw_only=True):
    email: str
    password: str


class TokenBody(msgspec.Struct, kw_only=True):
    token: str


class ForgotPasswordBody(msgspec.Struct, kw_only=True):
    email: str


class ResetPasswordBody(msgspec.Struct, kw_only=True):
    token: str
    password: str


class UpdateMeBody(msgspec.Struct, kw_only=True):
    display_name: str | None = None
    password: str | None = None
    current_password: str | None = None


class CreateApiKeyBody(msgspec.Struct, kw_only=True):
    name: str
    scopes: list[str] | None = None
    allowed_ips: list[str] | None = None
    expires_at: datetime | None = None


class UserOut(msgspec.Struct, kw_only=True):
    id: str
    email: str
    display_name: str | None
    role: str
    email_verified: bool
    created_at: datetime
    status: str
    plan: str

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls(
            id=user.id,
            email=user.email,
            display_name=user.display_name,
            role=user.role.value,
            email_verified=user.email_verified,
            created_at=user.created_at,
            status=user.status.value,
            plan=user.plan,
        )


class SessionSummary(msgspec.Struct, kw_only=True):
    id: str
    created_at: datetime
    expires_at: datetime


class LoginOut(msgspec.Struct, kw_only=True):
    token: str
    session: SessionSummary
    user: UserOut


class SessionOut(msgspec.Struct, kw_only=True):
    id: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime
    ip: str | None
    user_agent: str | None
    current: bool

    @classmethod
    def of(cls, session: Session, current_id: str | None) -> SessionOut:
        return cls(
            id=session.id,
            created_at=session.created_at,
            last_seen_at=session.last_seen_at,
            expires_at=session.effective_expires_at(),
            ip=session.ip,
            user_agent=session.user_agent,
            current=session.id == current_id,
        )


class ApiKeyOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    prefix: str
    scopes: list[str]
    allowed_ips: list[str]
    created_at: datetime
    last_used_at: datetime | None
    expires_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id,
            name=key.name,
            prefix=key.prefix,
            scopes=key.scopes,
            allowed_ips=key.allowed_ips,
            created_at=key.created_at,
            last_used_at=key.last_used_at,
            expires_at=key.expires_at,
        )


class CreatedApiKeyOut(msgspec.Struct, kw_only=True):
    id: str
    name: str
    key: str  # the only time the full key is shown
    prefix: str
    scopes: list[str]
    allowed_ips: list[str]
    created_at: datetime
    expires_at: datetime | None


class AuditRecordOut(msgspec.Struct, kw_only=True):
    id: str
    occurred_at: datetime
    action: str
    actor_id: str | None
    target_type: str | None
    target_id: str | None
    ip: str | None
    correlation_id: str | None
    details: dict[str, object]

    @classmethod
    def of(cls, record: AuditRecord) -> AuditRecordOut:
        return cls(
            id=record.id,
            occurred_at=record.occurred_at,
            action=record.action.value,
            actor_id=record.actor_id,
            target_type=record.target_type,
            target_id=record.target_id,
            ip=record.ip,
            correlation_id=record.correlation_id,
            details=record.details,
        )


class UserListOut(msgspec.Struct, kw_only=True):
    data: list[UserOut]
    next_cursor: str | None


class SessionListOut(msgspec.Struct, kw_only=True):
    data: list[SessionOut]


class ApiKeyListOut(msgspec.Struct, kw_only=True):
    data: list[ApiKeyOut]


class AuditListOut(msgspec.Struct, kw_only=True):
    data: list[AuditRecordOut]
    next_cursor: str | None


PageLimit = Annotated[
    int | None,
    QueryParameter(ge=1, le=MAX_LIMIT, description=f"Page size, 1 to {MAX_LIMIT} (default 50)."),
]
"""The `limit` query parameter of every keyset-paged listing, with its bounds in the schema."""
