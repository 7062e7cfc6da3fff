"""Signed, expiring download links for stores that cannot presign (local files, memory).

Pure rules: the caller passes the key versions and `now`. A link carries the key version that
signed it, so links signed before a rotation keep working while the old version is still served.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime

from core.errors import DomainError, ErrorCode
from core.secrets import SecretVersion

# Unix seconds fit in 19 digits until the year 2^63; longer strings are garbage (and int() of a
# very long string is slow or refused), so they are rejected before parsing.
_MAX_EXPIRES_DIGITS = 19


def _mac(secret: SecretVersion, path: str, expires: int) -> str:
    message = f"{path}\n{expires}".encode()
    digest = hmac.new(secret.value.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _parse_expires(expires: str) -> int | None:
    """The expiry as signed, or None unless it is the canonical decimal `sign_link` writes.

    Only the canonical form is accepted, so `0170…` or `١٧٠…` (other Unicode digits) cannot
    pass as a second spelling of a signed expiry.
    """
    if not (0 < len(expires) <= _MAX_EXPIRES_DIGITS and expires.isascii() and expires.isdigit()):
        return None
    if expires != "0" and expires.startswith("0"):
        return None
    return int(expires)


def sign_link(path: str, *, expires: int, secret: SecretVersion) -> dict[str, str]:
    """Query parameters that make `path` downloadable until `expires` (Unix seconds)."""
    return {"expires": str(expires), "kid": secret.version, "sig": _mac(secret, path, expires)}


def verify_link(
    path: str,
    *,
    expires: str | None,
    kid: str | None,
    sig: str | None,
    secrets: Sequence[SecretVersion],
    now: datetime,
) -> None:
    """Raise `invalid_signature` for a tampered or unknown link, `link_expired` for an old one.

    The signature is checked before the expiry, so a forged expiry never reveals anything.
    Any query values, however malformed, end in one of those two errors or in success.
    """
    expires_at = _parse_expires(expires) if expires else None
    # compare_digest refuses non-ASCII text; a signature we wrote is always ASCII anyway.
    if expires_at is None or not sig or not sig.isascii():
        raise DomainError(ErrorCode.INVALID_SIGNATURE, "The link's signature is missing or malformed")
    candidates = [s for s in secrets if s.version == kid] or list(secrets)
    if not any(hmac.compare_digest(_mac(s, path, expires_at), sig) for s in candidates):
        raise DomainError(ErrorCode.INVALID_SIGNATURE, "The link's signature does not match")
    if now.timestamp() >= expires_at:
        raise DomainError(ErrorCode.LINK_EXPIRED, "The link has expired")
