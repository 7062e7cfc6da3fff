"""The generation aggregate and its lifecycle.

    queued ──start──▶ running ──succeed──▶ succeeded
      │                 │  ╰──fail──────▶ failed
      ╰──cancel/fail────┴──cancel──────▶ canceled

Every transition is a pure function: a generation, the facts and `now` go in, the new generation
comes out; an illegal one raises `DomainError(invalid_state)`. Terminal states are final. `start`
on a running generation is a retry (a worker died, the reconciler re-enqueued it): it counts one
more attempt. Progress only moves forward, so a retried render that reports from 0 again never
makes a watching client see it go back.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Final

import msgspec

from core.errors import DomainError, ErrorCode

MAX_ERROR_MESSAGE_LENGTH: Final = 1000


class GenerationStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL


_TERMINAL: Final = frozenset({GenerationStatus.SUCCEEDED, GenerationStatus.FAILED, GenerationStatus.CANCELED})
ACTIVE_STATUSES: Final = (GenerationStatus.QUEUED, GenerationStatus.RUNNING)


class GeneratedImage(msgspec.Struct, frozen=True, kw_only=True):
    """One stored image of a generation (the bytes live in the BlobStore under `blob_key`)."""

    index: int  # 0 .. n-1
    blob_key: str
    content_type: str
    width: int
    height: int
    bytes: int
    sha256: str  # hex digest of the stored bytes


class Generation(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # also the id of its quota reservation and of its job
    user_id: str
    status: GenerationStatus
    prompt: str
    negative_prompt: str | None = None
    size: str  # "WxH", as the client asked
    width: int
    height: int
    n: int
    seed: int
    style: str | None = None
    init_image_id: str | None = None  # an upload of the same user
    webhook_url: str | None = None
    priority: bool = False  # the plan's queue at acceptance: `generation-priority` when True
    retention_days: int = 30  # the plan's image retention at acceptance
    progress: float = 0.0  # 0..1, never goes back
    error_code: str | None = None
    error_message: str | None = None
    attempts: int = 0  # how many times a worker started it
    created_at: datetime
    updated_at: datetime  # the last transition or progress: the reconciler's "stuck since"
    started_at: datetime | None = None
    finished_at: datetime | None = None
    images: tuple[GeneratedImage, ...] = ()
    images_expire_at: datetime | None = None  # set on success: finished_at + retention_days
    images_expired_at: datetime | None = None  # when retention deleted the images' bytes

    @property
    def is_finished(self) -> bool:
        return self.status.is_terminal


def start(generation: Generation, now: datetime) -> Generation:
    """A worker begins (or, after a lost worker, resumes) rendering it."""
    _require(generation, "start", GenerationStatus.QUEUED, GenerationStatus.RUNNING)
    return msgspec.structs.replace(
        generation,
        status=GenerationStatus.RUNNING,
        attempts=generation.attempts + 1,
        started_at=generation.started_at or now,
        updated_at=now,
    )


def progress(generation: Generation, fraction: float, now: datetime) -> Generation:
    """Record rendering progress in [0, 1]; a lower value than the current one changes nothing
    visible (a retried render starts over)."""
    if not 0.0 <= fraction <= 1.0:  # also refuses NaN
        raise ValueError(f"progress must be within [0, 1], not {fraction!r}")
    _require(generation, "report progress on", GenerationStatus.RUNNING)
    return msgspec.structs.replace(generation, progress=max(generation.progress, fraction), updated_at=now)


def succeed(generation: Generation, images: Sequence[GeneratedImage], now: datetime) -> Generation:
    """Every image is stored: the generation is done, and its images are kept for its retention."""
    _require(generation, "complete", GenerationStatus.RUNNING)
    ordered = tuple(sorted(images, key=lambda image: image.index))
    if [image.index for image in ordered] != list(range(generation.n)):
        raise ValueError(
            f"a generation of {generation.n} image(s) needs exactly indices 0..{generation.n - 1}"
        )
    return msgspec.structs.replace(
        generation,
        status=GenerationStatus.SUCCEEDED,
        progress=1.0,
        images=ordered,
        finished_at=now,
        updated_at=now,
        images_expire_at=now + timedelta(days=generation.retention_days),
    )


def fail(generation: Generation, code: str, message: str, now: datetime) -> Generation:
    """The render could not be done (retries exhausted, or a permanent error)."""
    _require(generation, "fail", GenerationStatus.QUEUED, GenerationStatus.RUNNING)
    if not code:
        raise ValueError("a failure needs an error code")
    return msgspec.structs.replace(
        generation,
        status=GenerationStatus.FAILED,
        error_code=code,
        error_message=message[:MAX_ERROR_MESSAGE_LENGTH],
        finished_at=now,
        updated_at=now,
    )


def cancel(generation: Generation, now: datetime) -> Generation:
    """The owner gave up on it; a running render stops at its next step."""
    _require(generation, "cancel", GenerationStatus.QUEUED, GenerationStatus.RUNNING)
    return msgspec.structs.replace(
        generation, status=GenerationStatus.CANCELED, finished_at=now, updated_at=now
    )


def expire_images(generation: Generation, now: datetime) -> Generation:
    """Retention deleted the images' bytes: the generation keeps its record and says so."""
    _require(generation, "expire the images of", GenerationStatus.SUCCEEDED)
    if generation.images_expired_at is not None:
        raise DomainError(
            ErrorCode.INVALID_STATE, "The images have expired already", generation_id=generation.id
        )
    return msgspec.structs.replace(generation, images_expired_at=now, updated_at=now)


def _require(generation: Generation, action: str, *allowed: GenerationStatus) -> None:
    if generation.status not in allowed:
        raise DomainError(
            ErrorCode.INVALID_STATE,
            f"Cannot {action} a generation that is {generation.status.value}",
            generation_id=generation.id,
            status=generation.status.value,
        )
