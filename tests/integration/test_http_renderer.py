"""The OpenAI-compatible HTTP renderer against a stub image server on 127.0.0.1 (a real socket,
real HTTP/1.1): what it sends, how it reads both answer formats, how each failure maps to a
retryable or final `RenderFailed`, cancellation, ping, and that the API key stays out of logs.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import socket
from collections.abc import AsyncIterator, Iterator

import msgspec
import pytest
from PIL import Image

from adapters.memory.secrets import MemorySecrets
from adapters.rendering.http_renderer import OpenAIImageRenderer, api_root, compose_prompt
from adapters.rendering.procedural import ProceduralRenderer
from core.rendering import RenderCanceled, RenderFailed, RenderRequest
from core.secrets import RENDERER_API_KEY
from entrypoints.settings import Settings
from entrypoints.worker import renderer_for
from tests.support.openai_image_stub import StubImageServer, stub_png

API_KEY = "sk-test-0123456789-very-secret"
MODEL = "stub-image-1"
REQUEST = RenderRequest(prompt="a lighthouse at dusk", width=64, height=48, seed=42, steps=4)


@pytest.fixture
def stub() -> Iterator[StubImageServer]:
    server = StubImageServer().start()
    yield server
    server.stop()


def make_renderer(
    url: str, *, key: str | None = API_KEY, timeout_seconds: float = 30.0, stop_poll_seconds: float = 0.01
) -> OpenAIImageRenderer:
    return OpenAIImageRenderer(
        url,
        model=MODEL,
        secrets=MemorySecrets({RENDERER_API_KEY: [key]} if key else {}),
        timeout_seconds=timeout_seconds,
        stop_poll_seconds=stop_poll_seconds,
    )


@pytest.fixture
async def renderer(stub: StubImageServer) -> AsyncIterator[OpenAIImageRenderer]:
    subject = make_renderer(stub.url)
    yield subject
    await subject.aclose()


def expected_png(request: RenderRequest, index: int, *, init: bytes | None = None) -> bytes:
    return stub_png(
        model=MODEL,
        prompt=compose_prompt(request),
        size=f"{request.width}x{request.height}",
        seed=request.seed,
        index=index,
        init=init,
    )


def encoded(image_format: str, size: tuple[int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 120, 200)).save(out, format=image_format)
    return out.getvalue()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- Success ---


async def test_renders_n_images_of_the_requested_size_from_the_server(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    images = await renderer.render(REQUEST, n=3)

    assert [image.index for image in images] == [0, 1, 2]
    for image in images:
        assert image.data == expected_png(REQUEST, image.index)
        assert image.sha256 == hashlib.sha256(image.data).hexdigest()
        assert (image.content_type, image.width, image.height) == ("image/png", 64, 48)
        assert Image.open(io.BytesIO(image.data)).size == (64, 48)
    [post] = stub.posts
    assert post.path == "/v1/images/generations"
    assert post.json == {
        "model": MODEL,
        "prompt": "a lighthouse at dusk",
        "n": 3,
        "size": "64x48",
        "response_format": "b64_json",
        "seed": 42,
    }
    assert post.headers["authorization"] == f"Bearer {API_KEY}"


async def test_style_and_negative_prompt_are_appended_to_the_prompt(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    request = msgspec.structs.replace(REQUEST, style="noir", negative_prompt="fog, boats")

    await renderer.render(request, n=1)

    [post] = stub.posts
    assert post.json is not None
    assert post.json["prompt"] == "a lighthouse at dusk\n\nStyle: noir.\n\nAvoid: fog, boats."


@pytest.mark.parametrize("suffix", ["", "/", "/v1", "/v1/"])
async def test_the_base_url_may_name_v1_or_not(stub: StubImageServer, suffix: str):
    renderer = make_renderer(stub.url + suffix)
    try:
        await renderer.render(REQUEST, n=1)
    finally:
        await renderer.aclose()

    assert [post.path for post in stub.posts] == ["/v1/images/generations"]


def test_only_http_urls_are_accepted():
    assert api_root("https://images.example/v1/") == "https://images.example"
    with pytest.raises(ValueError):
        api_root("ftp://images.example")


async def test_without_a_key_no_authorization_header_is_sent(stub: StubImageServer):
    renderer = make_renderer(stub.url, key=None)
    try:
        await renderer.render(REQUEST, n=1)
        await renderer.ping()
    finally:
        await renderer.aclose()

    assert all("authorization" not in request.headers for request in stub.requests)


async def test_the_key_is_read_from_the_secrets_port_on_each_request(stub: StubImageServer):
    secrets = MemorySecrets({RENDERER_API_KEY: ["sk-old"]})
    renderer = OpenAIImageRenderer(stub.url, model=MODEL, secrets=secrets)
    try:
        await renderer.render(REQUEST, n=1)
        secrets.rotate(RENDERER_API_KEY, "sk-new")
        await renderer.render(REQUEST, n=1)
    finally:
        await renderer.aclose()

    assert [post.headers["authorization"] for post in stub.posts] == ["Bearer sk-old", "Bearer sk-new"]


async def test_progress_is_zero_when_sent_and_one_when_done(renderer: OpenAIImageRenderer):
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    await renderer.render(REQUEST, n=2, on_progress=on_progress)

    assert seen == [0.0, 1.0]


async def test_url_answers_are_downloaded_with_the_key_from_the_same_server(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    stub.answer_with = "url"

    images = await renderer.render(REQUEST, n=2)

    assert [image.data for image in images] == [expected_png(REQUEST, 0), expected_png(REQUEST, 1)]
    downloads = [request for request in stub.requests if request.method == "GET"]
    assert len(downloads) == 2
    assert all(request.headers["authorization"] == f"Bearer {API_KEY}" for request in downloads)


async def test_the_key_is_never_sent_to_another_origin(stub: StubImageServer, renderer: OpenAIImageRenderer):
    stub.answer_with = "url"
    stub.url_host = "localhost"  # the same stub, under another origin

    [image] = await renderer.render(REQUEST, n=1)

    assert image.data == expected_png(REQUEST, 0)
    [download] = [request for request in stub.requests if request.method == "GET"]
    assert "authorization" not in download.headers


async def test_data_urls_and_jpeg_answers_keep_their_type_and_real_size(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    jpeg, webp = encoded("JPEG", (32, 16)), encoded("WEBP", (20, 10))
    stub.reply_next(
        200,
        {
            "created": 1,
            "data": [
                {"b64_json": base64.b64encode(jpeg).decode()},
                {"url": "data:image/webp;base64," + base64.b64encode(webp).decode()},
            ],
        },
    )

    first, second = await renderer.render(REQUEST, n=2)

    assert (first.content_type, first.width, first.height, first.data) == ("image/jpeg", 32, 16, jpeg)
    assert (second.content_type, second.width, second.height, second.data) == ("image/webp", 20, 10, webp)


async def test_an_init_image_is_sent_to_the_edits_endpoint(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    init = encoded("PNG", (40, 30))
    request = msgspec.structs.replace(REQUEST, init_image=init)

    [image] = await renderer.render(request, n=1)

    assert image.data == expected_png(request, 0, init=init)
    [post] = stub.posts
    assert post.path == "/v1/images/edits"
    assert post.files == {"image": init}
    assert post.form == {
        "model": MODEL,
        "prompt": "a lighthouse at dusk",
        "n": "1",
        "size": "64x48",
        "response_format": "b64_json",
        "seed": "42",
    }
    assert post.headers["authorization"] == f"Bearer {API_KEY}"


# --- Failures ---


@pytest.mark.parametrize(
    ("status", "code"),
    [(429, "renderer_rate_limited"), (500, "renderer_unavailable"), (503, "renderer_unavailable")],
)
async def test_rate_limits_and_server_errors_are_retryable_and_name_retry_after(
    stub: StubImageServer, renderer: OpenAIImageRenderer, status: int, code: str
):
    stub.reply_next(status, {"error": {"message": "busy, come back later"}}, {"Retry-After": "7"})

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=1)

    assert (caught.value.code, caught.value.retryable) == (code, True)
    assert "busy, come back later" in caught.value.message
    assert "retry after 7" in caught.value.message
    # The next try succeeds: nothing is left broken.
    assert len(await renderer.render(REQUEST, n=1)) == 1


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (400, "renderer_refused"),
        (401, "renderer_unauthorized"),
        (403, "renderer_unauthorized"),
        (404, "renderer_refused"),
        (422, "renderer_refused"),
    ],
)
async def test_refused_requests_fail_for_good_with_the_servers_message(
    stub: StubImageServer, renderer: OpenAIImageRenderer, status: int, code: str
):
    stub.reply_next(
        status,
        {"error": {"message": "size 64x48 is not supported", "type": "invalid_request_error", "code": None}},
    )

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=1)

    assert (caught.value.code, caught.value.retryable) == (code, False)
    assert "size 64x48 is not supported" in caught.value.message
    assert str(status) in caught.value.message


async def test_a_content_policy_refusal_is_content_refused(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    stub.reply_next(
        400, {"error": {"message": "rejected by the safety system", "code": "content_policy_violation"}}
    )

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=1)

    assert (caught.value.code, caught.value.retryable) == ("content_refused", False)


@pytest.mark.parametrize(
    "body",
    [
        b"<html>not json</html>",
        b'{"created": 1, "data": []}',
        b'{"created": 1}',
        b'{"created": 1, "data": [{}]}',
        b'{"created": 1, "data": [{"b64_json": "%%% not base64"}]}',
        b'{"created": 1, "data": [{"b64_json": "R0lGODlhAQABAAAAACw="}]}',  # a GIF
        b'{"created": 1, "data": [{"b64_json": "iVBORw0KGgoAAAANSUhEUg=="}]}',  # a truncated PNG
    ],
    ids=["not-json", "no-images", "no-data", "empty-item", "bad-base64", "gif", "truncated-png"],
)
async def test_malformed_answers_fail_for_good(
    stub: StubImageServer, renderer: OpenAIImageRenderer, body: bytes
):
    stub.reply_next(200, body)

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=1)

    assert (caught.value.code, caught.value.retryable) == ("renderer_bad_response", False)


async def test_fewer_images_than_asked_for_is_a_bad_response(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    png = base64.b64encode(expected_png(REQUEST, 0)).decode()
    stub.reply_next(200, {"created": 1, "data": [{"b64_json": png}]})

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=2)

    assert caught.value.code == "renderer_bad_response"
    assert "asked for 2 images, got 1" in caught.value.message


async def test_a_server_that_does_not_answer_in_time_is_a_retryable_timeout(stub: StubImageServer):
    stub.hold = True  # the server never answers until released at teardown
    renderer = make_renderer(stub.url, timeout_seconds=0.2)
    try:
        with pytest.raises(RenderFailed) as caught:
            await renderer.render(REQUEST, n=1)
    finally:
        await renderer.aclose()

    assert (caught.value.code, caught.value.retryable) == ("renderer_timeout", True)
    assert len(stub.posts) == 1


async def test_an_unreachable_server_is_retryable_and_fails_the_ping():
    renderer = make_renderer(f"http://127.0.0.1:{free_port()}")
    try:
        with pytest.raises(RenderFailed) as caught:
            await renderer.render(REQUEST, n=1)
        assert (caught.value.code, caught.value.retryable) == ("renderer_unavailable", True)

        with pytest.raises(RenderFailed) as pinged:
            await renderer.ping()
        assert pinged.value.code == "renderer_unavailable"
    finally:
        await renderer.aclose()


async def test_a_closed_renderer_refuses_to_render(renderer: OpenAIImageRenderer):
    await renderer.aclose()

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=1)
    assert (caught.value.code, caught.value.retryable) == ("renderer_closed", True)


# --- Cancellation ---


async def test_should_stop_before_sending_sends_nothing(stub: StubImageServer, renderer: OpenAIImageRenderer):
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    with pytest.raises(RenderCanceled):
        await renderer.render(REQUEST, n=1, on_progress=on_progress, should_stop=lambda: True)

    assert stub.requests == []
    assert seen == []


async def test_should_stop_abandons_the_request_while_the_server_draws(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    stub.hold = True  # the server would never answer: only the stop check can end this render
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    with pytest.raises(RenderCanceled):
        await renderer.render(REQUEST, n=1, on_progress=on_progress, should_stop=stub.received.is_set)

    assert seen == [0.0]
    assert len(stub.posts) == 1


async def test_should_stop_after_the_answer_drops_the_images(stub: StubImageServer):
    # Polling so rarely that only the check after the answer can notice the stop.
    renderer = make_renderer(stub.url, stop_poll_seconds=3600)
    seen: list[float] = []

    async def on_progress(fraction: float) -> None:
        seen.append(fraction)

    try:
        with pytest.raises(RenderCanceled):
            await renderer.render(REQUEST, n=1, on_progress=on_progress, should_stop=stub.received.is_set)
    finally:
        await renderer.aclose()

    assert seen == [0.0]
    assert len(stub.posts) == 1


# --- Ping and the key's secrecy ---


async def test_ping_asks_the_models_endpoint_with_the_key(
    stub: StubImageServer, renderer: OpenAIImageRenderer
):
    await renderer.ping()

    [request] = stub.requests
    assert (request.method, request.path) == ("GET", "/v1/models")
    assert request.headers["authorization"] == f"Bearer {API_KEY}"


async def test_the_key_never_appears_in_logs_or_failures(
    stub: StubImageServer, renderer: OpenAIImageRenderer, caplog: pytest.LogCaptureFixture
):
    caplog.set_level(logging.DEBUG)
    stub.reply_next(
        401, {"error": {"message": f"Incorrect API key provided: {API_KEY}", "code": "invalid_api_key"}}
    )

    with pytest.raises(RenderFailed) as caught:
        await renderer.render(REQUEST, n=1)
    await renderer.render(REQUEST, n=1)
    await renderer.ping()

    assert caught.value.code == "renderer_unauthorized"
    assert "Incorrect API key provided: ***" in caught.value.message
    assert API_KEY not in str(caught.value)
    assert caplog.records  # the exchanges were logged, and none of it names the key
    assert API_KEY not in caplog.text
    assert all(API_KEY not in repr(record.__dict__) for record in caplog.records)
    assert stub.posts[0].headers["authorization"] == f"Bearer {API_KEY}"


# --- The worker's choice ---


async def test_the_worker_uses_the_image_server_when_a_url_is_set(stub: StubImageServer):
    secrets = MemorySecrets({RENDERER_API_KEY: [API_KEY]})

    built_in = renderer_for(Settings(), secrets)
    external = renderer_for(Settings(renderer_url=stub.url, renderer_model=MODEL), secrets)
    try:
        assert isinstance(built_in, ProceduralRenderer)
        assert isinstance(external, OpenAIImageRenderer)
        await external.render(REQUEST, n=1)
    finally:
        await built_in.aclose()
        await external.aclose()

    [post] = stub.posts
    assert post.json is not None and post.json["model"] == MODEL
    assert post.headers["authorization"] == f"Bearer {API_KEY}"
