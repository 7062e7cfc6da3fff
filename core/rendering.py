"""Rendering: what the ImageRenderer port takes and gives, and how a render fails.

Pure values and rules only (no numpy, no Pillow): the adapters in `adapters/rendering/` and the
fake in `adapters/memory/renderer.py` turn a `RenderRequest` into `RenderedImage`s.

Determinism is part of the contract: the same request (prompt, negative prompt, size, seed, style,
init image) always gives the same bytes, so a retried job stores exactly what the first try would
have. `render_fingerprint` is the one canonical digest of those inputs that every renderer seeds
from.
"""

from __future__ import annotations

import hashlib
from typing import Final

import msgspec

PNG: Final = "image/png"
DEFAULT_STEPS: Final = 8
MAX_STEPS: Final = 100
MAX_SIDE: Final = 4096  # pixels along one side; plans cap the area further
MAX_PIXELS: Final = 4096 * 4096  # the most any renderer is asked for; plans allow far less


class RenderRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One set of images to draw. `init_image` holds PNG, JPEG or WebP bytes (an upload's)."""

    prompt: str
    width: int
    height: int
    seed: int
    negative_prompt: str | None = None
    style: str | None = None
    steps: int = DEFAULT_STEPS
    init_image: bytes | None = None


class RenderedImage(msgspec.Struct, frozen=True, kw_only=True):
    """One finished image: `index` is its place among the request's `n` (0-based)."""

    index: int
    content_type: str
    width: int
    height: int
    data: bytes
    sha256: str  # hex digest of `data`

    @classmethod
    def of(
        cls, index: int, data: bytes, *, width: int, height: int, content_type: str = PNG
    ) -> RenderedImage:
        """An image whose digest is computed from its bytes (never trusted from elsewhere)."""
        return cls(
            index=index,
            content_type=content_type,
            width=width,
            height=height,
            data=data,
            sha256=hashlib.sha256(data).hexdigest(),
        )


class RenderCanceled(Exception):
    """The render stopped because `should_stop()` turned true; no image was kept."""


class RenderFailed(Exception):
    """The renderer could not draw the images.

    `code` is a stable snake_case reason (e.g. `renderer_unavailable`, `invalid_init_image`);
    `retryable` tells the generation job whether another try may succeed (a crashed worker or an
    unreachable server) or is pointless (the input itself is refused).
    """

    def __init__(self, code: str, message: str, *, retryable: bool) -> None:
        self.code = code
        self.message = message
        self.retryable = retryable
        super().__init__(f"{code}: {message}")

    def __reduce__(self) -> tuple[object, ...]:
        # Renders run in worker processes: the failure must survive pickling back to the caller.
        return (_rebuild_render_failed, (self.code, self.message, self.retryable))


def _rebuild_render_failed(code: str, message: str, retryable: bool) -> RenderFailed:
    return RenderFailed(code, message, retryable=retryable)


def check_render_request(request: RenderRequest, n: int, *, max_pixels: int = MAX_PIXELS) -> None:
    """Refuse what no renderer should attempt (ValueError): the caller validated the request before.

    The generation rules turn bad client input into `validation_failed`; reaching a renderer with
    an absurd size or count is a programming error, and a guard here stops it from exhausting memory.
    """
    if not 1 <= n <= 16:
        raise ValueError(f"n must be between 1 and 16, got {n}")
    if not (1 <= request.width <= MAX_SIDE and 1 <= request.height <= MAX_SIDE):
        raise ValueError(f"size {request.width}x{request.height} is outside 1..{MAX_SIDE} per side")
    if request.width * request.height > max_pixels:
        raise ValueError(f"size {request.width}x{request.height} is more than {max_pixels} pixels")
    if not 1 <= request.steps <= MAX_STEPS:
        raise ValueError(f"steps must be between 1 and {MAX_STEPS}, got {request.steps}")


def render_fingerprint(request: RenderRequest, index: int, *, renderer: str) -> bytes:
    """The SHA-256 of everything that decides image `index`'s pixels, for seeding a renderer's RNG.

    Fields are length-prefixed so no two different requests share an encoding; `steps` is left
    out on purpose (it decides how the work is split, not the picture), and so is `n` (image 2 of 4
    is image 2 of 3). `renderer` names the algorithm and its version, so a new algorithm never
    collides with an old one's seeds.
    """
    digest = hashlib.sha256()
    init_digest = hashlib.sha256(request.init_image).digest() if request.init_image is not None else b""
    fields: tuple[bytes, ...] = (
        renderer.encode(),
        request.prompt.encode(),
        (request.negative_prompt or "").encode(),
        b"\x01" if request.negative_prompt is not None else b"\x00",
        (request.style or "").encode(),
        b"\x01" if request.style is not None else b"\x00",
        str(request.width).encode(),
        str(request.height).encode(),
        str(request.seed).encode(),
        init_digest,
        str(index).encode(),
    )
    for field in fields:
        digest.update(len(field).to_bytes(8, "big"))
        digest.update(field)
    return digest.digest()


def progress_fraction(done: int, total: int) -> float:
    """Progress in [0, 1]; exactly 1.0 when every unit of work is done."""
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    return 1.0 if done >= total else max(0.0, done / total)
