"""Single-use, expiring tokens sent by email (verification, password reset); stored hashed."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

import msgspec


class TokenPurpose(StrEnum):
    VERIFY_EMAIL = "verify_email"
    RESET_PASSWORD = "reset_password"


TOKEN_LIFETIMES: dict[TokenPurpose, timedelta] = {
    TokenPurpose.VERIFY_EMAIL: timedelta(days=2),
    TokenPurpose.RESET_PASSWORD: timedelta(hours=1),
}


class OneTimeToken(msgspec.Struct, frozen=True, kw_only=True):
    token_hash: str
    purpose: TokenPurpose
    user_id: str
    created_at: datetime
    expires_at: datetime
    used_at: datetime | None = None

    def usable_at(self, now: datetime) -> bool:
        return self.used_at is None and now < self.expires_at
