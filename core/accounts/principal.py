"""Who is calling: a user, through a session or an API key, with what they may do."""

from __future__ import annotations

from enum import StrEnum

import msgspec

from core.accounts.api_keys import ALL_SCOPES
from core.accounts.users import Role, User
from core.errors import DomainError, ErrorCode


class CredentialKind(StrEnum):
    SESSION = "session"
    API_KEY = "api_key"


class Principal(msgspec.Struct, frozen=True, kw_only=True):
    user: User  # as resolved for this request (possibly from the principal cache)
    scopes: frozenset[str]
    credential: CredentialKind
    credential_id: str  # the session's or the key's id

    @property
    def user_id(self) -> str:
        return self.user.id

    @property
    def email(self) -> str:
        return self.user.email

    @property
    def role(self) -> Role:
        return self.user.role

    @property
    def plan(self) -> str:
        return self.user.plan

    @property
    def is_admin(self) -> bool:
        return self.role is Role.ADMIN

    def require_scope(self, scope: str) -> None:
        if scope not in self.scopes:
            raise DomainError(ErrorCode.INSUFFICIENT_SCOPE, f"This credential lacks the '{scope}' scope")

    def require_session(self) -> None:
        """Some acts (changing the account, minting keys) are for people, not for API keys."""
        if self.credential is not CredentialKind.SESSION:
            raise DomainError(ErrorCode.FORBIDDEN, "Log in to do this; API keys cannot")

    def require_admin(self) -> None:
        if not self.is_admin:
            raise DomainError(ErrorCode.FORBIDDEN, "Administrators only")


SESSION_SCOPES = frozenset(str(s) for s in ALL_SCOPES)  # a person's session may do what they may
