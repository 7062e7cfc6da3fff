"""The password policy (NIST SP 800-63B): length, a blocklist, nothing about composition.

Pure: the blocklist comes in as a set (the adapter that ships the data file loads it), so a lookup
costs the same whatever the password.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Container

from core.errors import DomainError, ErrorCode, FieldError

DEFAULT_MIN_LENGTH = 12
MAX_LENGTH = 128
# NFKC composes at most a few code points into one, so anything this long stays too long once
# normalized: refuse it before spending time normalizing megabytes.
_RAW_LENGTH_CEILING = 4 * MAX_LENGTH
# Shorter local parts ("jo", "a") would forbid too many good passwords for too little gain.
_MIN_LOCAL_PART = 3


def normalize_password(password: str) -> str:
    """NFKC, so the same password typed on different keyboards hashes the same."""
    return unicodedata.normalize("NFKC", password)


def _local_parts(email: str) -> set[str]:
    """The email's local part, and without its `+tag` if it has one, folded like passwords are."""
    local = normalize_password(email.split("@", 1)[0]).casefold()
    parts = {local, local.split("+", 1)[0]}
    return {part for part in parts if len(part) >= _MIN_LOCAL_PART}


def password_problem(
    password: str, *, email: str, blocklist: Container[str], min_length: int = DEFAULT_MIN_LENGTH
) -> str | None:
    """Why `password` is not acceptable for the account `email`, or None when it is.

    Lengths count characters (code points) of the NFKC form; the blocklist is matched
    case-insensitively (its entries are case-folded, and so is the password).
    """
    too_long = f"Use at most {MAX_LENGTH} characters"
    if len(password) > _RAW_LENGTH_CEILING:
        return too_long
    normalized = normalize_password(password)
    length = len(normalized)
    if length < min_length:
        return f"Use at least {min_length} characters"
    if length > MAX_LENGTH:
        return too_long
    folded = normalized.casefold()
    if folded in blocklist:
        return "This password is too common or has appeared in a data breach"
    if any(part in folded for part in _local_parts(email)):
        return "Do not use your email address in your password"
    if len(set(folded)) < 3:
        return "Use more than two different characters"
    return None


def check_password(
    password: str, *, email: str, blocklist: Container[str], min_length: int = DEFAULT_MIN_LENGTH
) -> str:
    """The normalized password, or `weak_password` with the reason."""
    problem = password_problem(password, email=email, blocklist=blocklist, min_length=min_length)
    if problem is not None:
        raise DomainError(
            ErrorCode.WEAK_PASSWORD,
            problem,
            errors=[FieldError("password", problem, "weak_password")],
        )
    return normalize_password(password)
