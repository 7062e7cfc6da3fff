"""The built-in renderer's cost for one 256x256 image, beside a baseline measured in the same run.

CPU group (timer: this process's CPU time): the baseline allocates a flat 256x256 canvas with
numpy and encodes it as PNG with the renderer's own encoder settings, the least any renderer of a
PNG pays; then the procedural renderer draws and encodes one image start to end in this process,
with its default 8 steps and in 1 step (the canvas handed between steps is the only difference),
and the memory fake writes its flat PNG. Read the render over the baseline.

Wall group: one image through `ProceduralRenderer` (a worker process, the canvas pickled to it and
back every step) against the same drawing in process, so the ratio is what going off the event
loop costs. Measured here (2 shared cores): render ≈ 15-17 ms CPU against a 3 ms baseline; through
the worker ≈ 3.5x the in-process wall time, nearly all of it the float32 canvas (768 KiB at this
size) pickled through the pool's pipe twice per step. Benchmarks measure; none asserts a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import msgspec
import numpy as np
import pytest

from adapters.memory.renderer import flat_png
from adapters.rendering.procedural import ProceduralRenderer, encode_png, render_png
from core.rendering import RenderRequest

REQUEST = RenderRequest(prompt="a lighthouse at dusk, oil on canvas", width=256, height=256, seed=42)


@pytest.fixture(scope="module")
def pool_renderer(bench_loop: asyncio.AbstractEventLoop) -> Iterator[ProceduralRenderer]:
    renderer = ProceduralRenderer(workers=1)
    bench_loop.run_until_complete(renderer.ping())  # start the worker before measuring
    yield renderer
    bench_loop.run_until_complete(renderer.aclose())


def _is_png(data: bytes) -> bool:
    return data.startswith(b"\x89PNG\r\n\x1a\n")


@pytest.mark.benchmark(group="render 256x256: CPU", timer=time.process_time)
def test_baseline_flat_canvas_encoded_as_png(benchmark: Any) -> None:
    def flat() -> bytes:
        return encode_png(np.zeros((256, 256, 3), dtype=np.uint8))

    assert _is_png(benchmark(flat))


@pytest.mark.benchmark(group="render 256x256: CPU", timer=time.process_time)
def test_procedural_render_in_process(benchmark: Any) -> None:
    data = benchmark(lambda: render_png(REQUEST))
    benchmark.extra_info["png_bytes"] = len(data)
    assert _is_png(data)


@pytest.mark.benchmark(group="render 256x256: CPU", timer=time.process_time)
def test_procedural_render_in_process_one_step(benchmark: Any) -> None:
    one_step = msgspec.structs.replace(REQUEST, steps=1)
    data = benchmark(lambda: render_png(one_step))
    assert data == render_png(REQUEST)  # same picture, whatever the steps


@pytest.mark.benchmark(group="render 256x256: CPU", timer=time.process_time)
def test_memory_fake_flat_png(benchmark: Any) -> None:
    assert _is_png(benchmark(lambda: flat_png(256, 256, (10, 20, 30))))


@pytest.mark.benchmark(group="render 256x256: wall")
def test_baseline_wall_render_in_process(benchmark: Any) -> None:
    assert _is_png(benchmark(lambda: render_png(REQUEST)))


@pytest.mark.benchmark(group="render 256x256: wall")
def test_procedural_renderer_through_its_worker_process(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, pool_renderer: ProceduralRenderer
) -> None:
    def render() -> bytes:
        [image] = bench_loop.run_until_complete(pool_renderer.render(REQUEST, n=1))
        return image.data

    benchmark.extra_info["steps"] = REQUEST.steps
    assert benchmark(render) == render_png(REQUEST)
