"""Checking and cleaning images that users send, with Pillow, by the rules of `core.images`.

The order matters, each step guarding the next:
1. the byte size (before anything is parsed);
2. the format, from the magic bytes (never the file name or the declared type);
3. the dimensions, from the header alone: `Image.open` is lazy and reads no pixel data, so a
   decompression bomb (a few kilobytes claiming 50000x50000 pixels) is refused before decoding.
   Pillow's own guard (`DecompressionBombError`, past twice `Image.MAX_IMAGE_PIXELS`) can fire
   inside `open`; it is read as the same refusal. We never change that process-wide setting: our
   limit is applied on top of it and is far smaller;
4. a full decode, which catches truncated and corrupt files.

Everything here is CPU work on bytes: callers on an event loop run it in a thread or process.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from PIL import Image, ImageOps, UnidentifiedImageError

from core.images import (
    UPLOAD_FIELD,
    ImageFacts,
    ImageLimits,
    ImageType,
    check_byte_size,
    check_dimensions,
    require_image_type,
    too_many_pixels,
    unreadable_image,
)

# The Pillow plugin that must have parsed each accepted type: a file whose magic says PNG but that
# Pillow reads as something else is refused, not trusted.
_PILLOW_FORMATS: Final = {ImageType.PNG: "PNG", ImageType.JPEG: "JPEG", ImageType.WEBP: "WEBP"}
# How a cleaned image is written back: lossless stays lossless; JPEG and WebP at high quality.
_SAVE_OPTIONS: Final[dict[ImageType, dict[str, object]]] = {
    ImageType.PNG: {"format": "PNG", "compress_level": 6},
    ImageType.JPEG: {"format": "JPEG", "quality": 92},
    ImageType.WEBP: {"format": "WEBP", "quality": 90, "method": 4},
}


def inspect_image(data: bytes, limits: ImageLimits, *, field: str = UPLOAD_FIELD) -> ImageFacts:
    """The real format and size of an accepted image; `DomainError` for anything else.

    unsupported_media_type: not PNG, JPEG or WebP by content. payload_too_large: over the byte or
    pixel limit (pixels judged from the header, before decoding). validation_failed: empty,
    truncated or corrupt.
    """
    with _decoded(data, limits, field=field) as image:
        return ImageFacts(
            content_type=_type_of(image), width=image.width, height=image.height, bytes=len(data)
        )


def strip_metadata(
    data: bytes, limits: ImageLimits, *, field: str = UPLOAD_FIELD
) -> tuple[bytes, ImageType, int, int]:
    """The image re-encoded in its own format without EXIF, XMP, ICC or text chunks.

    The EXIF orientation is applied to the pixels first, so the picture looks the same without
    the tag. Only the first frame of an animated PNG or WebP is kept. Returns the new bytes, the
    content type and the (possibly rotated) width and height.
    """
    with _decoded(data, limits, field=field) as image:
        image_type = _type_of(image)
        upright = ImageOps.exif_transpose(image)
        clean = _plain_pixels(upright, image_type)
        clean.info.clear()  # Pillow's PNG writer falls back to info["icc_profile"]
        out = io.BytesIO()
        clean.save(out, **_SAVE_OPTIONS[image_type])  # type: ignore[arg-type]
        return out.getvalue(), image_type, clean.width, clean.height


@contextmanager
def _decoded(data: bytes, limits: ImageLimits, *, field: str) -> Iterator[Image.Image]:
    """The image, fully decoded after every check, closed afterwards."""
    check_byte_size(len(data), limits, field=field)
    expected = require_image_type(data, field=field)
    try:
        with warnings.catch_warnings():
            # Between MAX_IMAGE_PIXELS and twice that, Pillow only warns; our own limit decides.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Only the sniffed format's plugin may parse it: the magic bytes decided the type.
            image = Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[expected]])
    except Image.DecompressionBombError as error:
        # Pillow refused a header claiming far more pixels than it would ever decode.
        raise too_many_pixels(
            "more than Pillow's decompression bomb limit of", limits, field=field
        ) from error
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as error:
        raise unreadable_image(str(error) or type(error).__name__, field=field) from error
    with image:
        check_dimensions(image.width, image.height, limits, field=field)
        try:
            image.load()  # the full decode, now bounded by the pixel limit just checked
        except (OSError, SyntaxError, ValueError, EOFError) as error:
            raise unreadable_image(str(error) or type(error).__name__, field=field) from error
        yield image


def _type_of(image: Image.Image) -> ImageType:
    return next(t for t, name in _PILLOW_FORMATS.items() if name == image.format)


def _plain_pixels(image: Image.Image, image_type: ImageType) -> Image.Image:
    """The image in a mode its format can store, with transparency kept where the format has it."""
    has_alpha = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
    if image_type is ImageType.JPEG:
        return image.copy() if image.mode in ("RGB", "L") else image.convert("RGB")
    if image.mode in ("RGB", "RGBA", "L", "LA") and "transparency" not in image.info:
        return image.copy()
    return image.convert("RGBA" if has_alpha else "RGB")


def decode_rgb(data: bytes, limits: ImageLimits, *, field: str = UPLOAD_FIELD) -> Image.Image:
    """The image as upright RGB pixels (orientation applied, alpha dropped), after every check."""
    with _decoded(data, limits, field=field) as image:
        return ImageOps.exif_transpose(image).convert("RGB")
