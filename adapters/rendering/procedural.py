"""The built-in renderer: deterministic procedural art, drawn with numpy in worker processes.

No model, no GPU: the prompt, seed, size, style and init image are hashed (`core.rendering.
render_fingerprint`) and the hash decides a palette and a stack of `LAYERS` soft shapes (a base
gradient, blobs, wave bands, ripples, value noise, light sweeps), composited over each other. Later
layers are finer and fainter, so each step adds detail to what the previous ones drew. The same
inputs give the same PNG bytes on a given installation (numpy and Pillow versions fixed by uv.lock).

Why worker processes: drawing is CPU work, and a job worker's event loop must keep sending
heartbeats and running other jobs meanwhile. Each step of each image is one task for a
`ProcessPoolExecutor`; the canvas travels between steps, so `should_stop` is honoured between any
two steps and a dead worker costs one step, not the render. The split into steps changes how the
work is cut, never the picture: layers are spread over the steps, whatever their number.
"""

from __future__ import annotations

import asyncio
import colorsys
import io
import math
import multiprocessing
import os
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import Executor, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from typing import Any, Final, TypeVar

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageOps

from adapters.images.inspection import decode_rgb
from core.errors import DomainError
from core.images import ImageLimits
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

ALGORITHM: Final = "pictor-procedural/1"  # part of every fingerprint: change it when the art changes
LAYERS: Final = 18  # layer 0 is the base; the others are spread over the steps
DEFAULT_PNG_COMPRESS_LEVEL: Final = 1  # 0 stores the pixels uncompressed; 1-9 (Huffman-only) cost alike
INIT_IMAGE_LIMITS: Final = ImageLimits(max_bytes=32 * 1024 * 1024, max_pixels=MAX_PIXELS)

Canvas = npt.NDArray[np.float32]  # 3 x height x width (planar: blends run on long contiguous rows), in [0, 1]
T = TypeVar("T")
_Z_HUFFMAN_ONLY: Final = 2  # zlib's strategy constant, passed through Pillow's PNG encoder

# Colour schemes as hue offsets from a base hue (fractions of the colour wheel).
_SCHEMES: Final = (
    (0.0, 0.05, 0.1, -0.05, 0.5),  # analogous, with one complement
    (0.0, 0.5, 0.08, 0.58, 0.25),  # complementary pairs
    (0.0, 1 / 3, 2 / 3, 0.1, 0.43),  # triadic
    (0.0, 0.42, 0.58, 0.03, 0.5),  # split complementary
)
# Saturation and value ranges of each named style; other styles (and none) are "balanced".
_STYLES: Final = {
    "balanced": ((0.45, 0.85), (0.55, 0.95)),
    "vivid": ((0.8, 1.0), (0.8, 1.0)),
    "pastel": ((0.18, 0.4), (0.88, 1.0)),
    "noir": ((0.0, 0.0), (0.05, 0.95)),
    "night": ((0.5, 0.9), (0.12, 0.5)),
    "sunset": ((0.6, 0.95), (0.6, 1.0)),
}


@dataclass(frozen=True, slots=True)
class ImagePlan:
    """What a worker process needs to draw one image: small, so it pickles cheaply every step."""

    fingerprint: bytes
    width: int
    height: int
    style: str | None
    steps: int
    has_init_image: bool  # layers are drawn fainter over an init image, so it shows through
    png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL


def plan_image(
    request: RenderRequest, index: int, *, png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL
) -> ImagePlan:
    return ImagePlan(
        fingerprint=render_fingerprint(request, index, renderer=ALGORITHM),
        width=request.width,
        height=request.height,
        style=request.style,
        steps=request.steps,
        has_init_image=request.init_image is not None,
        png_compress_level=png_compress_level,
    )


def draw_step(plan: ImagePlan, canvas: Canvas | None, step: int, init_image: bytes | None) -> Canvas | bytes:
    """One step of one image (runs in a worker process): the refined canvas, or the PNG after the last.

    Step 0 starts the canvas (from `init_image` when there is one); the last step encodes it.
    """
    if step == 0 or canvas is None:
        canvas = _start_canvas(plan, init_image)
    opacity = 0.5 if plan.has_init_image else 1.0
    grid = _grid(plan.width, plan.height)
    for layer in _layers_of_step(step, plan.steps):
        _apply_layer(canvas, grid, plan, layer, opacity)
    if step < plan.steps - 1:
        return canvas
    return encode_png(_finish(canvas, grid), compress_level=plan.png_compress_level)


def render_png(
    request: RenderRequest, index: int = 0, *, png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL
) -> bytes:
    """Image `index` drawn start to end in this process (benchmarks and tests; the renderer uses the pool).

    Not thread-safe: drawing reuses per-size scratch buffers, one set per process.
    """
    check_render_request(request, index + 1)
    plan = plan_image(request, index, png_compress_level=png_compress_level)
    canvas: Canvas | bytes | None = None
    for step in range(plan.steps):
        assert not isinstance(canvas, bytes)
        canvas = draw_step(plan, canvas, step, request.init_image if step == 0 else None)
    assert isinstance(canvas, bytes)
    return canvas


def encode_png(pixels: npt.NDArray[np.uint8], *, compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL) -> bytes:
    """RGB pixels as PNG bytes, without any metadata chunk (so the bytes depend on the pixels only)."""
    out = io.BytesIO()
    # Huffman-only deflate after PNG's row filters: faster than level 1 and smaller on this art.
    Image.fromarray(pixels, "RGB").save(
        out, format="PNG", compress_level=compress_level, compress_type=_Z_HUFFMAN_ONLY
    )
    return out.getvalue()


class ProceduralRenderer:
    """Implements `core.ports.ImageRenderer` with procedural art in a pool of worker processes.

    The renderer owns its pool: it starts lazily on the first render (or `ping`), and `aclose()`
    shuts it down. Workers are started with `forkserver` (never a plain `fork` of a process that
    runs threads and an event loop). If a worker dies, the render fails with a retryable
    `RenderFailed` and the next render gets a fresh pool.
    """

    def __init__(
        self,
        *,
        workers: int | None = None,
        max_pixels: int = MAX_PIXELS,
        png_compress_level: int = DEFAULT_PNG_COMPRESS_LEVEL,
        start_method: str = "forkserver",
    ) -> None:
        self.workers = workers if workers is not None else min(4, os.cpu_count() or 1)
        if self.workers < 1:
            raise ValueError(f"workers must be at least 1, got {self.workers}")
        if not 0 <= png_compress_level <= 9:
            raise ValueError(f"png_compress_level must be 0..9, got {png_compress_level}")
        self._max_pixels = max_pixels
        self._png_compress_level = png_compress_level
        self._start_method = start_method
        self._pool: ProcessPoolExecutor | None = None
        self._closed = False

    async def render(
        self,
        request: RenderRequest,
        *,
        n: int,
        on_progress: Callable[[float], Awaitable[None]] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RenderedImage]:
        check_render_request(request, n, max_pixels=self._max_pixels)
        plans = [plan_image(request, i, png_compress_level=self._png_compress_level) for i in range(n)]
        # Steps advance together over the n images (each image's step runs in its own worker).
        canvases: Sequence[Canvas | bytes | None] = [None] * n
        for step in range(request.steps):
            if should_stop is not None and should_stop():
                raise RenderCanceled(f"stopped before step {step + 1} of {request.steps}")
            init = request.init_image if step == 0 else None
            canvases = await asyncio.gather(
                *(
                    self._in_worker(draw_step, plan, _canvas_or_none(canvas), step, init)
                    for plan, canvas in zip(plans, canvases, strict=True)
                )
            )
            if on_progress is not None:
                await on_progress(progress_fraction(step + 1, request.steps))
        return [
            RenderedImage.of(i, _png(data), width=request.width, height=request.height, content_type=PNG)
            for i, data in enumerate(canvases)
        ]

    async def ping(self) -> None:
        """Raise `RenderFailed` unless a worker process answers."""
        await self._in_worker(os.getpid)

    async def aclose(self) -> None:
        """Stop the worker processes (waiting for running steps; queued ones are dropped)."""
        self._closed = True
        pool, self._pool = self._pool, None
        if pool is not None:
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)

    async def _in_worker(self, function: Callable[..., T], *args: Any) -> T:
        pool = self._executor()
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, function, *args)
        except BrokenProcessPool as error:
            if self._pool is pool:  # the first to notice replaces it; the dead pool frees nothing
                self._pool = None
                pool.shutdown(wait=False, cancel_futures=True)
            raise RenderFailed(
                "renderer_unavailable", "a render worker process died", retryable=True
            ) from error

    def _executor(self) -> Executor:
        if self._closed:
            raise RenderFailed("renderer_closed", "the renderer is shut down", retryable=True)
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context(self._start_method)
            )
        return self._pool


def _canvas_or_none(canvas: Canvas | bytes | None) -> Canvas | None:
    assert not isinstance(canvas, bytes), "a finished image cannot take another step"
    return canvas


def _png(data: Canvas | bytes | None) -> bytes:
    assert isinstance(data, bytes), "the last step returns PNG bytes"
    return data


# --- Drawing (runs in the worker processes) ---


class _Grid:
    """Pixel-centre coordinates (y in [-1, 1] top to bottom, x scaled by the aspect ratio) and
    scratch buffers.

    Coordinates are kept as a row and a column, broadcast on use. Every full-size intermediate is
    written into the scratch buffers (`out=`): fresh 256 KiB temporaries would each cost an mmap
    and its page faults, which took more time than the arithmetic itself.
    """

    def __init__(self, width: int, height: int) -> None:
        aspect = width / height
        self.x = np.linspace(-aspect, aspect, width, dtype=np.float32)[None, :]
        self.y = np.linspace(-1.0, 1.0, height, dtype=np.float32)[:, None]
        self.aspect = aspect
        self.width = width
        self.height = height
        self.alpha = np.empty((height, width), dtype=np.float32)
        self.scratch = np.empty((height, width), dtype=np.float32)
        self.planes = np.empty((3, height, width), dtype=np.float32)


_GRIDS: dict[tuple[int, int], _Grid] = {}


def _grid(width: int, height: int) -> _Grid:
    # A worker keeps the buffers of the sizes it draws (few: sizes come from an allowed list).
    grid = _GRIDS.get((width, height))
    if grid is None:
        if len(_GRIDS) >= 4:
            _GRIDS.clear()
        grid = _GRIDS[width, height] = _Grid(width, height)
    return grid


def _rng(plan: ImagePlan, stream: int) -> np.random.Generator:
    """An RNG of its own for each layer, so a layer draws the same whichever step runs it."""
    entropy = int.from_bytes(plan.fingerprint, "big")
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(entropy, spawn_key=(stream,))))


def _layers_of_step(step: int, steps: int) -> range:
    # Layer 0 (the base) is drawn by _start_canvas; 1..LAYERS-1 are spread evenly over the steps.
    first = 1 + step * (LAYERS - 1) // steps
    last = 1 + (step + 1) * (LAYERS - 1) // steps
    return range(first, last)


def _palette(plan: ImagePlan) -> npt.NDArray[np.float32]:
    rng = _rng(plan, 10_000)
    (s_low, s_high), (v_low, v_high) = _STYLES.get(plan.style or "balanced", _STYLES["balanced"])
    base = 0.02 + 0.1 * rng.random() if plan.style == "sunset" else rng.random()
    scheme = _SCHEMES[int(rng.integers(len(_SCHEMES)))]
    colours = []
    for offset in scheme:
        hue = (base + offset * (0.12 if plan.style == "sunset" else 1.0)) % 1.0
        saturation = s_low + (s_high - s_low) * rng.random()
        value = v_low + (v_high - v_low) * rng.random()
        colours.append(colorsys.hsv_to_rgb(hue, saturation, value))
    return np.asarray(colours, dtype=np.float32)


def _start_canvas(plan: ImagePlan, init_image: bytes | None) -> Canvas:
    grid = _grid(plan.width, plan.height)
    palette = _palette(plan)
    rng = _rng(plan, 0)
    angle = rng.random() * math.tau
    ramp = (grid.x * (math.cos(angle) / grid.aspect) + grid.y * math.sin(angle)) * 0.5 + 0.5
    ramp = np.clip(ramp, 0.0, 1.0)
    top, bottom = palette[0][:, None, None], palette[1][:, None, None] * np.float32(0.6)
    canvas: Canvas = (bottom + (top - bottom) * ramp).astype(np.float32)
    if init_image is not None:
        canvas = 0.25 * canvas + 0.75 * _init_pixels(init_image, plan)
    return canvas


def _init_pixels(init_image: bytes, plan: ImagePlan) -> Canvas:
    try:
        picture = decode_rgb(init_image, INIT_IMAGE_LIMITS, field="init_image")
    except DomainError as error:
        # DomainError does not pickle across processes; RenderFailed does, and retrying is pointless.
        raise RenderFailed("invalid_init_image", error.detail, retryable=False) from None
    fitted = ImageOps.fit(picture, (plan.width, plan.height), Image.Resampling.BICUBIC)
    return np.moveaxis(np.asarray(fitted, dtype=np.float32), 2, 0) / np.float32(255.0)


def _apply_layer(canvas: Canvas, grid: _Grid, plan: ImagePlan, layer: int, opacity: float) -> None:
    """Blend one soft shape into `canvas` in place: finer and fainter as `layer` grows."""
    rng = _rng(plan, layer)
    palette = _palette_cached(plan)
    detail = 1.0 + 3.0 * layer / LAYERS  # later layers: higher frequencies, smaller shapes
    strength = opacity * (0.75 - 0.45 * layer / LAYERS) * (0.5 + 0.5 * rng.random())
    colour = palette[int(rng.integers(len(palette)))] * np.float32(0.7 + 0.5 * rng.random())
    kind = int(rng.integers(5))
    x, y, alpha, scratch = grid.x, grid.y, grid.alpha, grid.scratch
    if kind == 0:  # a soft blob
        cx, cy = (rng.random() * 2 - 1) * grid.aspect, rng.random() * 2 - 1
        radius = (0.25 + 0.6 * rng.random()) / detail
        np.add(np.square(x - cx), np.square(y - cy), out=alpha)
        alpha *= np.float32(-1.0 / (radius * radius))
        np.exp(alpha, out=alpha)
    elif kind == 1:  # a wavy band
        kx, ky = (float(k) * 2.5 * detail for k in rng.normal(size=2))
        wobble, wobble_freq, phase = rng.random() * 1.5, 1 + rng.random() * 4 * detail, rng.random() * 6.3
        column = ky * y + wobble * np.sin(wobble_freq * y + phase) + phase
        np.add(kx * x, column, out=alpha)
        np.sin(alpha, out=alpha)
        _to_unit(alpha)
        _power(alpha, int(1 + rng.integers(6)), scratch)
    elif kind == 2:  # ripples around a point
        cx, cy = (rng.random() * 2 - 1) * grid.aspect, rng.random() * 2 - 1
        frequency = (4 + 10 * rng.random()) * detail
        falloff = 1 + rng.random() * 2
        np.add(np.square(x - cx), np.square(y - cy), out=scratch)
        np.sqrt(scratch, out=scratch)  # the distance to the centre
        np.multiply(scratch, np.float32(frequency), out=alpha)
        np.cos(alpha, out=alpha)
        _to_unit(alpha)
        _power(alpha, 3, grid.planes[0])
        scratch *= np.float32(-falloff)
        np.exp(scratch, out=scratch)
        alpha *= scratch
    elif kind == 3:  # value noise: clouds
        _value_noise(rng, grid, cells=int(2 + 4 * detail + rng.integers(4)), out=alpha)
        np.square(alpha, out=alpha)
    else:  # a sweep of light
        angle = rng.random() * math.tau
        np.add(x * np.float32(math.cos(angle) / grid.aspect), y * np.float32(math.sin(angle)), out=alpha)
        alpha += np.float32(rng.random() - 0.5)
        np.clip(alpha, 0.0, 1.0, out=alpha)
        np.square(alpha, out=alpha)
        colour = np.float32(0.6) + np.float32(0.4) * colour
    # canvas += strength * alpha * (colour - canvas), one plane-sized buffer, no temporaries
    alpha *= np.float32(strength)
    planes = grid.planes
    np.subtract(colour.astype(np.float32)[:, None, None], canvas, out=planes)
    planes *= alpha
    canvas += planes


def _to_unit(values: npt.NDArray[np.float32]) -> None:
    """[-1, 1] to [0, 1], in place."""
    values *= np.float32(0.5)
    values += np.float32(0.5)


def _power(values: npt.NDArray[np.float32], exponent: int, scratch: npt.NDArray[np.float32]) -> None:
    """`values **= exponent` by multiplications: numpy's general power is several times slower."""
    if exponent > 1:
        np.copyto(scratch, values)
        for _ in range(exponent - 1):
            values *= scratch


_PALETTES: dict[bytes, npt.NDArray[np.float32]] = {}


def _palette_cached(plan: ImagePlan) -> npt.NDArray[np.float32]:
    # A worker draws several layers of the same image in a row; the palette is the same for all.
    palette = _PALETTES.get(plan.fingerprint)
    if palette is None:
        if len(_PALETTES) > 256:
            _PALETTES.clear()
        palette = _PALETTES[plan.fingerprint] = _palette(plan)
    return palette


def _value_noise(rng: np.random.Generator, grid: _Grid, *, cells: int, out: npt.NDArray[np.float32]) -> None:
    """Smooth noise in [0, 1] into `out`: random values on a coarse lattice, smoothstep-interpolated."""
    cells_x = max(2, round(cells * grid.aspect))
    lattice = rng.random((cells + 1, cells_x + 1), dtype=np.float32)
    r0, ry = _lattice_weights(grid.height, cells)
    c0, cx = _lattice_weights(grid.width, cells_x)
    # Interpolate along x on the few lattice rows, then between rows for every pixel row.
    rows = lattice[:, c0] * (1 - cx) + lattice[:, c0 + 1] * cx
    np.take(rows, r0, axis=0, out=out)
    np.take(rows, r0 + 1, axis=0, out=grid.scratch)
    grid.scratch -= out
    grid.scratch *= ry[:, None]
    out += grid.scratch


def _lattice_weights(size: int, cells: int) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    position = np.linspace(0.0, cells, size, endpoint=False, dtype=np.float32)
    index = np.minimum(position.astype(np.intp), cells - 1)
    t = position - index
    return index, (t * t * (3 - 2 * t)).astype(np.float32)


def _finish(canvas: Canvas, grid: _Grid) -> npt.NDArray[np.uint8]:
    """A soft vignette, then 8-bit pixels (height x width x 3)."""
    vignette = np.add(np.square(grid.x / np.float32(grid.aspect)), np.square(grid.y), out=grid.alpha)
    vignette *= np.float32(-0.15 * 255.0)
    vignette += np.float32(255.0)
    shaded = np.multiply(canvas, vignette, out=grid.planes)
    shaded += np.float32(0.5)
    np.clip(shaded, 0, 255, out=shaded)
    pixels = np.empty((grid.height, grid.width, 3), dtype=np.uint8)
    np.copyto(np.moveaxis(pixels, 2, 0), shaded, casting="unsafe")
    return pixels
