"""Blob storage values shared by the BlobStore port and its adapters."""

from __future__ import annotations

from datetime import datetime

import msgspec

from core.errors import DomainError, ErrorCode


class BlobInfo(msgspec.Struct, frozen=True, kw_only=True):
    key: str
    size: int
    content_type: str
    last_modified: datetime
    etag: str | None = None
    metadata: dict[str, str] = {}


class Blob(msgspec.Struct, frozen=True, kw_only=True):
    info: BlobInfo
    data: bytes


class SignedUrl(msgspec.Struct, frozen=True, kw_only=True):
    url: str
    expires_at: datetime


def validate_blob_key(key: str) -> str:
    """Keys are relative, slash-separated paths: no empty, dot or dot-dot segments, no backslashes.

    The same rule for every store, so a key that works on S3 also works on the local disk
    (and can never escape the storage root there).
    """
    segments = key.split("/")
    if (
        not key
        or len(key) > 1024
        or "\\" in key
        or "\x00" in key
        or any(s in ("", ".", "..") for s in segments)
    ):
        raise DomainError(ErrorCode.BAD_REQUEST, f"Invalid storage key: {key!r}")
    return key
