"""Idempotency keys: a repeated POST with the same key and body replays the first response.

Records are per principal's user and key, for 24 hours. `fingerprint` names the request (method,
path, canonical JSON body), so the same key sent with another body is recognised as a mistake
rather than replayed. `decide` is the whole rule; the repository's `claim` makes "first one wins"
atomic across processes.
"""

from __future__ import annotations

import hashlib
import re
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Final

import msgspec

from core.errors import DomainError, ErrorCode, FieldError

RETENTION: Final = timedelta(hours=24)
MAX_KEY_LENGTH: Final = 255
HEADER: Final = "Idempotency-Key"
REPLAYED_HEADER: Final = "Idempotent-Replayed"
_KEY: Final = re.compile(rf"[\x20-\x7e]{{1,{MAX_KEY_LENGTH}}}")


class IdempotencyStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class IdempotencyRecord(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    key: str
    fingerprint: str  # hex SHA-256 of the request (see `fingerprint`)
    status: IdempotencyStatus
    created_at: datetime
    expires_at: datetime
    response_status: int | None = None  # set when completed
    response_body: bytes | None = None
    response_headers: tuple[tuple[str, str], ...] = ()  # the headers a replay repeats

    def is_expired(self, now: datetime) -> bool:
        return now >= self.expires_at


class Decision(StrEnum):
    PROCEED = "proceed"  # nobody holds the key (or its record expired): do the work
    REPLAY = "replay"  # answer with the stored response, do nothing


def validate_key(key: str) -> str:
    """The key as given when it is 1..255 printable ASCII characters; `validation_failed` else."""
    if not _KEY.fullmatch(key):
        raise DomainError(
            ErrorCode.VALIDATION_FAILED,
            "The request is invalid; see errors",
            errors=[
                FieldError(
                    HEADER, f"1 to {MAX_KEY_LENGTH} printable ASCII characters", "invalid_idempotency_key"
                )
            ],
        )
    return key


def canonical_json(body: Any) -> bytes:
    """The body's JSON with sorted keys and no whitespace: equal values give equal bytes."""
    return msgspec.json.encode(body, order="sorted")


def fingerprint(method: str, path: str, body: Any) -> str:
    """SHA-256 (hex) of the method, the path and the canonical JSON of the decoded body."""
    digest = hashlib.sha256()
    for part in (method.upper().encode(), path.encode(), canonical_json(body)):
        digest.update(len(part).to_bytes(8, "big"))  # length-prefixed: no two splits collide
        digest.update(part)
    return digest.hexdigest()


def new_record(user_id: str, key: str, request_fingerprint: str, now: datetime) -> IdempotencyRecord:
    """The in-progress record a request claims before doing its work."""
    return IdempotencyRecord(
        user_id=user_id,
        key=validate_key(key),
        fingerprint=request_fingerprint,
        status=IdempotencyStatus.IN_PROGRESS,
        created_at=now,
        expires_at=now + RETENTION,
    )


def decide(existing: IdempotencyRecord | None, request_fingerprint: str, now: datetime) -> Decision:
    """What to do with a request, given the record its key has (None: none).

    A different request under the key is `idempotency_key_reused` (422) whatever the first one's
    state: the client has a bug, and waiting would not fix it. The same request while the first is
    running is `idempotency_in_progress` (409); once it completed, its response is replayed.
    """
    if existing is None or existing.is_expired(now):
        return Decision.PROCEED
    if existing.fingerprint != request_fingerprint:
        raise DomainError(
            ErrorCode.IDEMPOTENCY_KEY_REUSED,
            "This Idempotency-Key was used with a different request; use a new key",
        )
    if existing.status is IdempotencyStatus.IN_PROGRESS:
        raise DomainError(
            ErrorCode.IDEMPOTENCY_IN_PROGRESS,
            "A request with this Idempotency-Key is still being processed; retry later",
            headers={"Retry-After": "1"},
        )
    return Decision.REPLAY


def complete(
    record: IdempotencyRecord,
    *,
    response_status: int,
    response_body: bytes,
    response_headers: tuple[tuple[str, str], ...] = (),
) -> IdempotencyRecord:
    """The record once its request has been answered, ready to replay."""
    if record.status is not IdempotencyStatus.IN_PROGRESS:
        raise DomainError(ErrorCode.INVALID_STATE, "The idempotency record is completed already")
    return msgspec.structs.replace(
        record,
        status=IdempotencyStatus.COMPLETED,
        response_status=response_status,
        response_body=response_body,
        response_headers=response_headers,
    )
