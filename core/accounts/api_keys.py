"""API keys: `pk_live_` + 32 base62 characters + a 6-character checksum.

The checksum (CRC32 of the rest, in base62) lets a leaked key be recognised offline and a mistyped
one be refused without a database lookup. Only the key's SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import zlib
from datetime import datetime
from enum import StrEnum

import msgspec

KEY_PREFIX = "pk_live_"
RANDOM_LENGTH = 32
CHECKSUM_LENGTH = 6
KEY_LENGTH = len(KEY_PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + 4  # what lists show: enough to tell keys apart
BASE62 = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_BASE62_SET = frozenset(BASE62)


class Scope(StrEnum):
    GENERATIONS_READ = "generations:read"
    GENERATIONS_WRITE = "generations:write"
    WEBHOOKS_MANAGE = "webhooks:manage"
    ACCOUNT_READ = "account:read"


ALL_SCOPES: tuple[Scope, ...] = tuple(Scope)


class ApiKey(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    name: str
    prefix: str
    key_hash: str
    scopes: list[str]
    allowed_ips: list[str]  # CIDR blocks; empty means anywhere
    created_at: datetime
    expires_at: datetime | None = None
    last_used_at: datetime | None = None
    revoked_at: datetime | None = None


def to_base62(number: int, width: int) -> str:
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(BASE62[remainder])
    return "".join(reversed(digits)).rjust(width, "0")[-width:]


def random_part_from(entropy: bytes) -> str:
    """32 base62 characters from at least 24 random bytes (190 bits)."""
    if len(entropy) < 24:
        raise ValueError("need at least 24 random bytes")
    return to_base62(int.from_bytes(entropy), RANDOM_LENGTH)


def checksum(body: str) -> str:
    return to_base62(zlib.crc32(body.encode()), CHECKSUM_LENGTH)


def format_api_key(random_part: str) -> str:
    body = KEY_PREFIX + random_part
    return body + checksum(body)


def looks_like_api_key(token: str) -> bool:
    """Shape and checksum only: True does not mean the key exists."""
    if len(token) != KEY_LENGTH or not token.startswith(KEY_PREFIX):
        return False
    rest = token[len(KEY_PREFIX) :]
    if not _BASE62_SET.issuperset(rest):
        return False
    body, check = token[:-CHECKSUM_LENGTH], token[-CHECKSUM_LENGTH:]
    return checksum(body) == check


def hash_secret(token: str) -> str:
    """SHA-256 hex of a high-entropy secret (API key, session token, one-time token).

    A fast hash is right here: these secrets have 190+ bits of entropy, unlike passwords.
    """
    return hashlib.sha256(token.encode()).hexdigest()
