"""Rules for images that users send us (uploads, init images): which formats, how big.

Pure: bytes and numbers in, a decision or a `DomainError` out. The format is recognised by the
file's first bytes (its magic number), never by its name or declared content type, which a client
may set to anything. Decoding is the adapter's business (`adapters/images/inspection.py`), and it
applies these rules on the image header before decoding a single pixel.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Final

import msgspec

from core.errors import DomainError, ErrorCode, FieldError

UPLOAD_FIELD: Final = "file"
DEFAULT_MAX_BYTES: Final = 10 * 1024 * 1024
DEFAULT_MAX_PIXELS: Final = 4096 * 4096
SNIFF_BYTES: Final = 12  # enough to tell the accepted formats apart


class ImageType(StrEnum):
    """The formats we accept, by their content type."""

    PNG = "image/png"
    JPEG = "image/jpeg"
    WEBP = "image/webp"


class ImageLimits(msgspec.Struct, frozen=True, kw_only=True):
    max_bytes: int = DEFAULT_MAX_BYTES
    max_pixels: int = DEFAULT_MAX_PIXELS


class ImageFacts(msgspec.Struct, frozen=True, kw_only=True):
    """What an accepted image is: its real format, dimensions and size in bytes."""

    content_type: ImageType
    width: int
    height: int
    bytes: int


_PNG_MAGIC: Final = b"\x89PNG\r\n\x1a\n"
_JPEG_MAGIC: Final = b"\xff\xd8\xff"


def sniff_image_type(head: bytes) -> ImageType | None:
    """The format the leading bytes announce, or None when they announce none we accept."""
    if head.startswith(_PNG_MAGIC):
        return ImageType.PNG
    if head.startswith(_JPEG_MAGIC):
        return ImageType.JPEG
    if len(head) >= 12 and head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return ImageType.WEBP
    return None


def check_byte_size(size: int, limits: ImageLimits, *, field: str = UPLOAD_FIELD) -> None:
    """An empty file is invalid; one over the byte limit is too large."""
    if size == 0:
        raise DomainError(
            ErrorCode.VALIDATION_FAILED,
            "The file is empty",
            errors=[FieldError(field, "The file is empty", "empty_file")],
        )
    if size > limits.max_bytes:
        raise DomainError(
            ErrorCode.PAYLOAD_TOO_LARGE,
            f"The file is {size} bytes; at most {limits.max_bytes} are accepted",
            errors=[FieldError(field, f"At most {limits.max_bytes} bytes", "too_many_bytes")],
            max_bytes=limits.max_bytes,
        )


def require_image_type(head: bytes, *, field: str = UPLOAD_FIELD) -> ImageType:
    """The sniffed format, or `unsupported_media_type` naming the accepted ones."""
    image_type = sniff_image_type(head[:SNIFF_BYTES])
    if image_type is None:
        accepted = ", ".join(t.value for t in ImageType)
        raise DomainError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            f"The file is not an image we accept ({accepted}); the format is read from its content",
            errors=[FieldError(field, f"Accepted formats: {accepted}", "unsupported_format")],
            accepted=[t.value for t in ImageType],
        )
    return image_type


def check_dimensions(width: int, height: int, limits: ImageLimits, *, field: str = UPLOAD_FIELD) -> None:
    """Dimensions read from the header, checked before decoding (a tiny file can claim a huge
    picture: a decompression bomb)."""
    if width < 1 or height < 1:
        raise DomainError(
            ErrorCode.VALIDATION_FAILED,
            f"The image has no pixels ({width}x{height})",
            errors=[FieldError(field, "The image has no pixels", "empty_image")],
        )
    if width * height > limits.max_pixels:
        raise too_many_pixels(f"{width}x{height}", limits, field=field)


def too_many_pixels(claimed: str, limits: ImageLimits, *, field: str = UPLOAD_FIELD) -> DomainError:
    """The error for an image whose header claims more pixels than the limit (`claimed` says how many)."""
    return DomainError(
        ErrorCode.PAYLOAD_TOO_LARGE,
        f"The image is {claimed} pixels; at most {limits.max_pixels} pixels are accepted",
        errors=[FieldError(field, f"At most {limits.max_pixels} pixels", "too_many_pixels")],
        max_pixels=limits.max_pixels,
    )


def unreadable_image(reason: str, *, field: str = UPLOAD_FIELD) -> DomainError:
    """The error for a file that announces an accepted format but cannot be decoded."""
    return DomainError(
        ErrorCode.VALIDATION_FAILED,
        f"The image cannot be read: {reason}",
        errors=[FieldError(field, "The image is truncated or corrupt", "corrupt_image")],
    )
