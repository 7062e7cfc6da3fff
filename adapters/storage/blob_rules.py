"""Rules every BlobStore adapter applies identically, so the stores stay interchangeable.

`core.storage.validate_blob_key` is the base rule. On top of it come the limits of the stores we
run on, so that a key or metadata accepted by one store is accepted, and kept exactly, by all:

- keys: at most 1024 UTF-8 bytes (S3) and 255 per segment (file systems); no control characters;
  no segment ending in `#<digits>` (obstore's LocalStore stages uploads under such names and
  refuses them); nothing under the reserved `.meta/` prefix (sidecars, see `obstore_store`).
- metadata: S3 sends it as HTTP headers, which lower-case the names, trim the values and cannot
  carry non-ASCII (obstore then fails to read the object back); and a few names are standard
  attributes (`cache-control`…) rather than user metadata. So names are lower-case tokens and
  values printable ASCII without surrounding spaces, 2 KiB in all (S3's limit).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from core.errors import DomainError, ErrorCode
from core.storage import validate_blob_key

RESERVED_PREFIX = ".meta/"
DEFAULT_CONTENT_TYPE = "application/octet-stream"
MAX_KEY_BYTES = 1024
MAX_SEGMENT_BYTES = 255
MAX_METADATA_BYTES = 2048
MAX_CONTENT_TYPE_LENGTH = 255

# Names obstore maps to standard object attributes instead of user metadata (case-insensitively).
STANDARD_ATTRIBUTES = frozenset(
    {
        "cache-control",
        "content-disposition",
        "content-encoding",
        "content-language",
        "content-type",
        "storage-class",
    }
)

_METADATA_NAME = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,126}[a-z0-9])?")
_STAGED_UPLOAD_SEGMENT = re.compile(r"#[0-9]+\Z")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


def _bad_key(key: str, why: str) -> DomainError:
    return DomainError(ErrorCode.BAD_REQUEST, f"Invalid storage key: {key!r} ({why})")


def check_key(key: str) -> str:
    """`key` if every store can hold it unchanged; else DomainError(bad_request)."""
    validate_blob_key(key)
    try:
        encoded = key.encode()
    except UnicodeEncodeError:
        raise _bad_key(key, "not valid Unicode") from None
    if len(encoded) > MAX_KEY_BYTES:
        raise _bad_key(key, f"longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise _bad_key(key, "control character")
    if key == RESERVED_PREFIX.rstrip("/") or key.startswith(RESERVED_PREFIX):
        raise _bad_key(key, f"{RESERVED_PREFIX!r} is reserved")
    for segment in key.split("/"):
        if len(segment.encode()) > MAX_SEGMENT_BYTES:
            raise _bad_key(key, f"a segment is longer than {MAX_SEGMENT_BYTES} bytes")
        if _STAGED_UPLOAD_SEGMENT.search(segment):
            raise _bad_key(key, "a segment ends in '#' and digits")
    return key


def check_prefix(prefix: str) -> str:
    """A list prefix: empty, or the start of some valid key (so `../` and `/x` are refused)."""
    if prefix:
        # Any valid key that starts with `prefix` proves it harmless; "x" completes a trailing "/".
        check_key(prefix + "x")
    return prefix


def check_content_type(content_type: str) -> str:
    """A non-empty printable-ASCII media type without surrounding spaces."""
    if (
        not content_type
        or len(content_type) > MAX_CONTENT_TYPE_LENGTH
        or not _PRINTABLE_ASCII.fullmatch(content_type)
        or content_type != content_type.strip()
    ):
        raise DomainError(ErrorCode.BAD_REQUEST, f"Invalid content type: {content_type!r}")
    return content_type


def check_metadata(metadata: Mapping[str, str] | None) -> dict[str, str]:
    """A copy of `metadata` if every store keeps it exactly; else DomainError(bad_request)."""
    checked: dict[str, str] = {}
    total = 0
    for name, value in (metadata or {}).items():
        if not isinstance(name, str) or not _METADATA_NAME.fullmatch(name):
            raise DomainError(
                ErrorCode.BAD_REQUEST,
                f"Invalid metadata name {name!r}: use lower-case letters, digits and '-'",
            )
        if name in STANDARD_ATTRIBUTES:
            raise DomainError(ErrorCode.BAD_REQUEST, f"Metadata name {name!r} is reserved")
        if not isinstance(value, str) or not _PRINTABLE_ASCII.fullmatch(value) or value != value.strip():
            raise DomainError(
                ErrorCode.BAD_REQUEST,
                f"Invalid metadata value for {name!r}: printable ASCII without surrounding spaces",
            )
        total += len(name) + len(value)
        checked[name] = value
    if total > MAX_METADATA_BYTES:
        raise DomainError(ErrorCode.BAD_REQUEST, f"Metadata is larger than {MAX_METADATA_BYTES} bytes")
    return checked
