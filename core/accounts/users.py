"""Users and the rules about their identity."""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime
from enum import StrEnum

import msgspec

from core.errors import DomainError, ErrorCode, FieldError


class Role(StrEnum):
    USER = "user"
    ADMIN = "admin"


class UserStatus(StrEnum):
    ACTIVE = "active"
    SUSPENDED = "suspended"


class User(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    email: str  # as the user wrote it (trimmed)
    email_normalized: str  # the unique, case-insensitive form (see normalize_email)
    display_name: str | None
    role: Role
    status: UserStatus
    email_verified: bool
    password_hash: str
    plan: str
    created_at: datetime
    updated_at: datetime

    @property
    def is_active(self) -> bool:
        return self.status is UserStatus.ACTIVE


# Deliberately simple: one @, a non-empty local part, a dotted domain, no spaces. Deliverability
# is proven by the verification email, not by a regular expression.
_EMAIL = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
MAX_EMAIL_LENGTH = 254
MAX_DISPLAY_NAME_LENGTH = 100


def normalize_email(raw: str) -> str:
    """The form in which emails are unique: trimmed, NFKC-normalized, lower-cased.

    Raises `validation_failed` (field `email`) when it does not look like an address.
    """
    email = unicodedata.normalize("NFKC", raw.strip()).lower()
    if len(email) > MAX_EMAIL_LENGTH or not _EMAIL.fullmatch(email) or has_control_characters(email):
        raise DomainError(
            ErrorCode.VALIDATION_FAILED,
            "The request is invalid; see errors",
            errors=[FieldError("email", "Not a valid email address", "invalid_email")],
        )
    return email


def has_control_characters(text: str) -> bool:
    """NUL, other controls, surrogates, unassigned code points: never valid in names or addresses."""
    return any(unicodedata.category(c)[0] == "C" for c in text)


def clean_display_name(raw: str | None) -> str | None:
    """Trimmed, control characters removed; empty means none."""
    if raw is None:
        return None
    name = "".join(c for c in unicodedata.normalize("NFKC", raw) if unicodedata.category(c)[0] != "C").strip()
    if len(name) > MAX_DISPLAY_NAME_LENGTH:
        raise DomainError(
            ErrorCode.VALIDATION_FAILED,
            "The request is invalid; see errors",
            errors=[FieldError("display_name", f"At most {MAX_DISPLAY_NAME_LENGTH} characters", "too_long")],
        )
    return name or None
