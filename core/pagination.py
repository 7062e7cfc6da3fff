"""Opaque keyset cursors: the client sees a token, the repository sees the last id it returned."""

from __future__ import annotations

import base64
import binascii

from core.errors import DomainError, ErrorCode
from core.identifiers import is_id

DEFAULT_LIMIT = 50
MAX_LIMIT = 200


def encode_cursor(last_id: str) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).rstrip(b"=").decode()


def decode_cursor(cursor: str | None) -> str | None:
    """The id to continue after, or None for the first page; `invalid_cursor` when tampered."""
    if cursor is None or cursor == "":
        return None
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise DomainError(ErrorCode.INVALID_CURSOR, "The cursor is not one this API made") from None
    version, _, last_id = text.partition(":")
    if version != "v1" or not is_id(last_id):
        raise DomainError(ErrorCode.INVALID_CURSOR, "The cursor is not one this API made")
    return last_id


def clamp_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise DomainError(ErrorCode.BAD_REQUEST, f"limit must be between 1 and {MAX_LIMIT}")
    return limit
