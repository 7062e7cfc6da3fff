"""An in-memory ImageRenderer: tiny flat PNGs at once, with hooks to make renders fail or linger.

It keeps the port's promises (deterministic bytes, n indexed images of the requested size,
progress after each step ending at 1.0, `should_stop` honoured between steps) without numpy or a
process pool, so use-case and job tests run in milliseconds. The PNG is written by hand with zlib:
one colour from the request's fingerprint, so different seeds give different bytes.
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from collections.abc import Awaitable, Callable
from typing import Final

from core.images import sniff_image_type
from core.rendering import (
    MAX_PIXELS,
    PNG,
    RenderCanceled,
    RenderedImage,
    RenderFailed,
    RenderRequest,
    check_render_request,
    progress_fraction,
    render_fingerprint,
)

ALGORITHM: Final = "pictor-memory-fake/1"
_PNG_SIGNATURE: Final = b"\x89PNG\r\n\x1a\n"


class MemoryImageRenderer:
    """Implements `core.ports.ImageRenderer` for tests.

    Test hooks: `fail_next(count)` makes the next `count` renders raise `RenderFailed` (retryable
    unless told otherwise) before their first step; `step_delay_seconds` makes each step sleep, so
    a test can cancel or kill a render in the middle; `requests` records every render asked for;
    `unavailable` makes `ping` (and renders) fail, as a down server would.
    """

    def __init__(self, *, step_delay_seconds: float = 0.0, max_pixels: int = MAX_PIXELS) -> None:
        self.step_delay_seconds = step_delay_seconds
        self.requests: list[tuple[RenderRequest, int]] = []
        self.unavailable = False
        self._max_pixels = max_pixels
        self._failures: list[RenderFailed] = []

    def fail_next(
        self,
        count: int = 1,
        *,
        code: str = "renderer_unavailable",
        message: str = "the renderer failed (test hook)",
        retryable: bool = True,
    ) -> None:
        """Make the next `count` renders fail with `RenderFailed(code, message, retryable)`."""
        self._failures.extend(RenderFailed(code, message, retryable=retryable) for _ in range(count))

    @property
    def failures_pending(self) -> int:
        return len(self._failures)

    async def render(
        self,
        request: RenderRequest,
        *,
        n: int,
        on_progress: Callable[[float], Awaitable[None]] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RenderedImage]:
        check_render_request(request, n, max_pixels=self._max_pixels)
        self.requests.append((request, n))
        if self.unavailable:
            raise RenderFailed("renderer_unavailable", "the renderer is down (test hook)", retryable=True)
        if self._failures:
            raise self._failures.pop(0)
        if request.init_image is not None and sniff_image_type(request.init_image) is None:
            raise RenderFailed(
                "invalid_init_image", "the init image is not PNG, JPEG or WebP", retryable=False
            )
        for step in range(request.steps):
            if should_stop is not None and should_stop():
                raise RenderCanceled(f"stopped before step {step + 1} of {request.steps}")
            # Always yield to the loop, as a real renderer does while its workers draw.
            await asyncio.sleep(self.step_delay_seconds)
            if on_progress is not None:
                await on_progress(progress_fraction(step + 1, request.steps))
        return [
            RenderedImage.of(
                i,
                flat_png(request.width, request.height, _colour(request, i)),
                width=request.width,
                height=request.height,
                content_type=PNG,
            )
            for i in range(n)
        ]

    async def ping(self) -> None:
        if self.unavailable:
            raise RenderFailed("renderer_unavailable", "the renderer is down (test hook)", retryable=True)


def _colour(request: RenderRequest, index: int) -> tuple[int, int, int]:
    digest = render_fingerprint(request, index, renderer=ALGORITHM)
    return digest[0], digest[1], digest[2]


def flat_png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid RGB PNG of one colour: identical rows, which zlib shrinks to almost nothing."""
    row = b"\x00" + bytes(rgb) * width  # filter type 0 (None), then the pixels
    pixels = zlib.compress(row * height, 6)
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)  # 8-bit RGB, no interlace
    return _PNG_SIGNATURE + _chunk(b"IHDR", header) + _chunk(b"IDAT", pixels) + _chunk(b"IEND", b"")


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
