"""The ImageRenderer contract, run against the built-in procedural renderer (a real process pool),
the in-memory fake and the OpenAI-compatible HTTP renderer (against a deterministic stub server):
valid PNGs of the requested size, deterministic bytes, n indexed images, progress after each step
ending at 1.0, cancellation between steps, and an event loop that keeps running while images are
drawn. The step-wise properties are run only against the renderers that work in steps
(`stepwise_renderer`): an HTTP render is one exchange, reporting 0.0 when sent and 1.0 when done.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import itertools
import os
import pickle
import signal
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
from PIL import Image

from adapters.memory.renderer import MemoryImageRenderer
from adapters.memory.secrets import MemorySecrets
from adapters.rendering.http_renderer import OpenAIImageRenderer
from adapters.rendering.procedural import ProceduralRenderer
from core.ports import ImageRenderer
from core.rendering import RenderCanceled, RenderFailed, RenderRequest
from core.secrets import RENDERER_API_KEY
from tests.support.openai_image_stub import StubImageServer

REQUEST = RenderRequest(prompt="a lighthouse at dusk, oil on canvas", width=96, height=64, seed=7, steps=4)


@pytest.fixture(scope="module")
def procedural() -> Iterator[ProceduralRenderer]:
    # One pool for the module: starting worker processes is the slow part.
    renderer = ProceduralRenderer(workers=2)
    yield renderer
    asyncio.run(renderer.aclose())


@pytest.fixture
async def openai_http() -> AsyncIterator[OpenAIImageRenderer]:
    server = StubImageServer().start()
    subject = OpenAIImageRenderer(
        server.url, model="stub", secrets=MemorySecrets({RENDERER_API_KEY: ["sk-contract"]})
    )
    yield subject
    await subject.aclose()
    server.stop()


@pytest.fixture(params=["procedural", "memory-fake", "openai-http"])
def renderer(request: pytest.FixtureRequest) -> ImageRenderer:
    if request.param in ("procedural", "openai-http"):
        subject: ImageRenderer = request.getfixturevalue(request.param.replace("-", "_"))
        return subject
    return MemoryImageRenderer()


@pytest.fixture(params=["procedural", "memory-fake"])
def stepwise_renderer(request: pytest.FixtureRequest) -> ImageRenderer:
    """The renderers that draw in `request.steps` steps, reporting progress after each."""
    if request.param == "procedural":
        subject: ImageRenderer = request.getfixturevalue("procedural")
        return subject
    return MemoryImageRenderer()


def decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png_bytes(size: tuple[int, int] = (40, 30), colour: tuple[int, int, int] = (200, 40, 90)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, colour).save(out, format="PNG")
    return out.getvalue()


async def test_renders_a_valid_png_of_the_requested_size(renderer: ImageRenderer):
    [image] = await renderer.render(REQUEST, n=1)

    assert image.index == 0
    assert image.content_type == "image/png"
    assert (image.width, image.height) == (96, 64)
    decoded = decode(image.data)
    assert decoded.format == "PNG"
    assert decoded.size == (96, 64)
    assert decoded.mode == "RGB"


async def test_the_digest_is_the_sha256_of_the_bytes(renderer: ImageRenderer):
    images = await renderer.render(REQUEST, n=2)

    for image in images:
        assert image.sha256 == hashlib.sha256(image.data).hexdigest()


async def test_the_same_request_gives_the_same_bytes(renderer: ImageRenderer):
    first = await renderer.render(REQUEST, n=2)
    second = await renderer.render(msgspec.structs.replace(REQUEST), n=2)

    assert [image.data for image in first] == [image.data for image in second]


async def test_the_number_of_steps_changes_the_work_not_the_picture(renderer: ImageRenderer):
    [few] = await renderer.render(msgspec.structs.replace(REQUEST, steps=1), n=1)
    [many] = await renderer.render(msgspec.structs.replace(REQUEST, steps=7), n=1)

    assert few.data == many.data


@pytest.mark.parametrize(
    "change",
    [{"seed": 8}, {"prompt": "a lighthouse at dawn"}, {"style": "noir"}, {"negative_prompt": "fog"}],
    ids=["seed", "prompt", "style", "negative_prompt"],
)
async def test_a_different_input_gives_a_different_image(renderer: ImageRenderer, change: dict[str, object]):
    [base] = await renderer.render(REQUEST, n=1)
    [other] = await renderer.render(msgspec.structs.replace(REQUEST, **change), n=1)

    assert other.data != base.data


async def test_n_images_come_indexed_in_order_and_differ(renderer: ImageRenderer):
    images = await renderer.render(REQUEST, n=3)

    assert [image.index for image in images] == [0, 1, 2]
    assert len({image.data for image in images}) == 3
    assert all(decode(image.data).size == (96, 64) for image in images)


async def test_image_k_does_not_depend_on_how_many_were_asked_for(renderer: ImageRenderer):
    two = await renderer.render(REQUEST, n=2)
    three = await renderer.render(REQUEST, n=3)

    assert [image.data for image in two] == [image.data for image in three[:2]]


async def test_progress_after_each_step_never_decreases_and_ends_at_one(stepwise_renderer: ImageRenderer):
    renderer = stepwise_renderer
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    await renderer.render(msgspec.structs.replace(REQUEST, steps=5), n=2, on_progress=on_progress)

    assert len(seen) == 5
    assert all(0.0 <= fraction <= 1.0 for fraction in seen)
    assert seen == sorted(seen)
    assert seen[0] < 1.0
    assert seen[-1] == 1.0


async def test_should_stop_stops_at_the_next_step(stepwise_renderer: ImageRenderer):
    renderer = stepwise_renderer
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    with pytest.raises(RenderCanceled):
        await renderer.render(
            msgspec.structs.replace(REQUEST, steps=6),
            n=2,
            on_progress=on_progress,
            should_stop=lambda: len(seen) >= 2,
        )

    assert len(seen) == 2  # two steps done, none after should_stop turned true


async def test_should_stop_before_the_first_step_draws_nothing(renderer: ImageRenderer):
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    with pytest.raises(RenderCanceled):
        await renderer.render(REQUEST, n=1, on_progress=on_progress, should_stop=lambda: True)
    assert seen == []


async def test_the_event_loop_keeps_running_while_images_are_drawn(stepwise_renderer: ImageRenderer):
    renderer = stepwise_renderer
    ticks = 0
    ticks_at_progress: list[int] = []

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async def on_progress(fraction: float) -> None:
        ticks_at_progress.append(ticks)

    task = asyncio.create_task(ticker())
    try:
        await asyncio.sleep(0)
        start = ticks
        await renderer.render(msgspec.structs.replace(REQUEST, steps=3), n=1, on_progress=on_progress)
    finally:
        task.cancel()

    # Other tasks ran during every step: the drawing never held the loop.
    assert ticks_at_progress[0] > start
    assert all(b > a for a, b in itertools.pairwise(ticks_at_progress))


async def test_an_init_image_changes_the_picture_deterministically(renderer: ImageRenderer):
    with_init = msgspec.structs.replace(REQUEST, init_image=png_bytes())

    [plain] = await renderer.render(REQUEST, n=1)
    [first] = await renderer.render(with_init, n=1)
    [again] = await renderer.render(msgspec.structs.replace(with_init), n=1)
    [other_init] = await renderer.render(
        msgspec.structs.replace(REQUEST, init_image=png_bytes(colour=(10, 200, 30))), n=1
    )

    assert first.data == again.data
    assert first.data != plain.data
    assert other_init.data != first.data
    assert decode(first.data).size == (96, 64)


async def test_an_init_image_that_is_no_image_fails_for_good(renderer: ImageRenderer):
    bad = msgspec.structs.replace(REQUEST, init_image=b"GIF89a not what we accept")

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(bad, n=1)

    assert caught.value.code == "invalid_init_image"
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    ("width", "height", "n"),
    [(0, 64, 1), (64, -1, 1), (100_000, 100_000, 1), (64, 64, 0), (64, 64, 1000)],
)
async def test_absurd_requests_are_refused_before_any_work(
    renderer: ImageRenderer, width: int, height: int, n: int
):
    with pytest.raises(ValueError):
        await renderer.render(msgspec.structs.replace(REQUEST, width=width, height=height), n=n)


async def test_ping_answers_when_the_renderer_can_render(renderer: ImageRenderer):
    await renderer.ping()


# --- The procedural renderer's process pool ---


async def test_a_dead_worker_fails_the_render_retryably_and_the_next_one_gets_a_fresh_pool():
    renderer = ProceduralRenderer(workers=1)
    try:
        await renderer.render(REQUEST, n=1)
        pool = renderer._pool
        assert pool is not None
        for pid in list(pool._processes):  # the executor's own table of its worker processes
            os.kill(pid, signal.SIGKILL)

        with pytest.raises(RenderFailed) as caught:
            await renderer.render(REQUEST, n=1)
        assert caught.value.retryable is True
        assert caught.value.code == "renderer_unavailable"

        [image] = await renderer.render(REQUEST, n=1)
        assert decode(image.data).size == (96, 64)
    finally:
        await renderer.aclose()


async def test_a_closed_renderer_refuses_to_render():
    renderer = ProceduralRenderer(workers=1)
    await renderer.ping()
    await renderer.aclose()

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=1)
    assert caught.value.code == "renderer_closed"


def test_render_failures_survive_pickling_between_processes():
    failure = pickle.loads(pickle.dumps(RenderFailed("invalid_init_image", "not an image", retryable=False)))

    assert (failure.code, failure.message, failure.retryable) == ("invalid_init_image", "not an image", False)


# --- The fake's test hooks ---


async def test_the_fake_fails_the_next_renders_when_told():
    renderer = MemoryImageRenderer()
    renderer.fail_next(2)

    for _ in range(2):
        with pytest.raises(RenderFailed) as caught:
            await renderer.render(REQUEST, n=1)
        assert caught.value.retryable is True
    assert renderer.failures_pending == 0
    assert len(await renderer.render(REQUEST, n=1)) == 1
    assert len(renderer.requests) == 3


async def test_the_fake_can_fail_for_good_and_be_down():
    renderer = MemoryImageRenderer()
    renderer.fail_next(code="content_refused", retryable=False)

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=1)
    assert (caught.value.code, caught.value.retryable) == ("content_refused", False)

    renderer.unavailable = True
    with pytest.raises(RenderFailed):
        await renderer.ping()
