"""An ImageRenderer that asks any OpenAI-compatible image server (`POST /v1/images/generations`).

The server draws; this adapter speaks its protocol, checks what comes back and maps every failure
to a `RenderFailed` whose `retryable` tells the generation job whether another try can help:
timeouts, connection errors, 429 and 5xx can; a refused request (400/401/403/404/422), a
malformed answer or an image that is no PNG, JPEG or WebP cannot.

OpenAI's API has no negative prompt or style: both are appended to the prompt text. The seed goes
as an extra `seed` field, which many compatible servers (LocalAI, vLLM-style gateways, ...) honour;
determinism then is the server's promise, not ours. A request with an init image goes to
`/v1/images/edits` (multipart, the init image as `image`).

The API key is read through the Secrets port on every request (so it can rotate) and is only ever
sent in the Authorization header to the configured server's origin; it is scrubbed from any error
message the server echoes back and never logged.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, Final, TypeVar
from urllib.parse import urljoin

import httpx
import msgspec

from adapters.images.inspection import inspect_image
from core.errors import DomainError
from core.images import ImageLimits, sniff_image_type
from core.ports import Secrets
from core.rendering import (
    MAX_PIXELS,
    RenderCanceled,
    RenderedImage,
    RenderFailed,
    RenderRequest,
    check_render_request,
)
from core.secrets import RENDERER_API_KEY

log = logging.getLogger("pictor.renderer.http")

DEFAULT_CONNECT_TIMEOUT_SECONDS: Final = 10.0
DEFAULT_MAX_RESPONSE_BYTES: Final = 256 * 1024 * 1024  # n base64 images of the largest size fit
DEFAULT_STOP_POLL_SECONDS: Final = 0.25
MAX_IMAGE_BYTES: Final = 64 * 1024 * 1024
_MAX_ERROR_MESSAGE: Final = 500
T = TypeVar("T")


class _ImageData(msgspec.Struct):
    b64_json: str | None = None
    url: str | None = None
    revised_prompt: str | None = None


class _ImagesResponse(msgspec.Struct):
    data: list[_ImageData]
    created: int | None = None


def compose_prompt(request: RenderRequest) -> str:
    """The prompt text sent to the server: OpenAI has no fields for the style or the negative prompt."""
    parts = [request.prompt.strip()]
    if request.style:
        parts.append(f"Style: {request.style.strip()}.")
    if request.negative_prompt:
        parts.append(f"Avoid: {request.negative_prompt.strip()}.")
    return "\n\n".join(parts)


def api_root(base_url: str) -> str:
    """The server's root URL, whether the operator configured it with or without `/v1`."""
    root = base_url.strip().rstrip("/")
    if root.endswith("/v1"):
        root = root[: -len("/v1")]
    if not root.startswith(("http://", "https://")):
        raise ValueError(f"the renderer URL must be http(s), got {base_url!r}")
    return root


class OpenAIImageRenderer:
    """Implements `core.ports.ImageRenderer` against an OpenAI-compatible image server.

    One render is one HTTP exchange, so progress is 0.0 when it is sent and 1.0 when the images
    are checked. `should_stop` is asked before sending, every `stop_poll_seconds` while the server
    draws (the request is abandoned as soon as it turns true) and once more after the answer.
    The renderer owns a pooled `httpx.AsyncClient`; `aclose()` closes it.
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str,
        secrets: Secrets,
        timeout_seconds: float = 120.0,
        connect_timeout_seconds: float = DEFAULT_CONNECT_TIMEOUT_SECONDS,
        max_pixels: int = MAX_PIXELS,
        max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES,
        stop_poll_seconds: float = DEFAULT_STOP_POLL_SECONDS,
        max_connections: int = 16,
    ) -> None:
        if timeout_seconds <= 0 or connect_timeout_seconds <= 0:
            raise ValueError("renderer timeouts must be positive")
        self._root = api_root(base_url)
        self._origin = httpx.URL(self._root).copy_with(path="/", query=None, fragment=None)
        self._model = model
        self._secrets = secrets
        self._timeout_seconds = timeout_seconds
        self._max_pixels = max_pixels
        self._max_response_bytes = max_response_bytes
        self._stop_poll_seconds = stop_poll_seconds
        self._image_limits = ImageLimits(max_bytes=MAX_IMAGE_BYTES, max_pixels=max_pixels)
        self._client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_seconds, connect=min(connect_timeout_seconds, timeout_seconds)),
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_connections),
            follow_redirects=False,  # a redirect could carry the Authorization header elsewhere
        )
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
        if self._closed:
            raise RenderFailed("renderer_closed", "the renderer is shut down", retryable=True)
        if request.init_image is not None and sniff_image_type(request.init_image) is None:
            raise RenderFailed(
                "invalid_init_image", "the init image is not PNG, JPEG or WebP", retryable=False
            )
        if should_stop is not None and should_stop():
            raise RenderCanceled("stopped before the request was sent")
        if on_progress is not None:
            await on_progress(0.0)
        images = await self._until_stopped(self._exchange(request, n), should_stop)
        if should_stop is not None and should_stop():
            raise RenderCanceled("stopped after the server answered; the images are dropped")
        if on_progress is not None:
            await on_progress(1.0)
        return images

    async def ping(self) -> None:
        """Raise `RenderFailed` unless the server answers HTTP at all (any status means reachable)."""
        api_key = await self._api_key()
        try:
            async with asyncio.timeout(self._timeout_seconds):
                response = await self._client.get(f"{self._root}/v1/models", headers=_auth(api_key))
        except (TimeoutError, httpx.TimeoutException) as error:
            raise RenderFailed(
                "renderer_timeout", "the image server did not answer in time", retryable=True
            ) from error
        except httpx.HTTPError as error:
            raise _unreachable(error) from error
        log.debug("image server answered the ping", extra={"status": response.status_code})

    async def aclose(self) -> None:
        """Close the connection pool; later renders fail with a retryable `renderer_closed`."""
        self._closed = True
        await self._client.aclose()

    # --- One exchange: the request, the answer, the images ---

    async def _exchange(self, request: RenderRequest, n: int) -> list[RenderedImage]:
        api_key = await self._api_key()
        try:
            async with asyncio.timeout(self._timeout_seconds):
                body = await self._ask(request, n, api_key)
                answer = _decode_answer(body)
                if len(answer.data) < n:
                    raise _bad_response(f"asked for {n} images, got {len(answer.data)}")
                payloads = [await self._image_bytes(item, api_key) for item in answer.data[:n]]
        except (TimeoutError, httpx.TimeoutException) as error:
            raise RenderFailed(
                "renderer_timeout",
                f"the image server did not answer within {self._timeout_seconds:g} s",
                retryable=True,
            ) from error
        except httpx.HTTPError as error:
            raise _unreachable(error) from error
        return [await self._checked(index, data) for index, data in enumerate(payloads)]

    async def _ask(self, request: RenderRequest, n: int, api_key: str | None) -> bytes:
        fields: dict[str, Any] = {
            "model": self._model,
            "prompt": compose_prompt(request),
            "n": n,
            "size": f"{request.width}x{request.height}",
            "response_format": "b64_json",
            "seed": request.seed,
        }
        log.info(
            "asking the image server",
            extra={
                "model": self._model,
                "n": n,
                "size": fields["size"],
                "edit": request.init_image is not None,
            },
        )
        if request.init_image is None:
            outgoing = self._client.build_request(
                "POST", f"{self._root}/v1/images/generations", json=fields, headers=_auth(api_key)
            )
        else:
            image_type = sniff_image_type(request.init_image)
            assert image_type is not None  # checked before sending
            outgoing = self._client.build_request(
                "POST",
                f"{self._root}/v1/images/edits",
                data={name: str(value) for name, value in fields.items()},
                files={"image": (f"init.{image_type.name.lower()}", request.init_image, image_type.value)},
                headers=_auth(api_key),
            )
        response = await self._client.send(outgoing, stream=True)
        try:
            body = await self._read_capped(response)
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise _failure_from_status(response, body, api_key)
        return body

    async def _image_bytes(self, item: _ImageData, api_key: str | None) -> bytes:
        if item.b64_json is not None:
            return _b64(item.b64_json)
        if item.url is None:
            raise _bad_response("an image has neither b64_json nor url")
        if item.url.startswith("data:"):
            _, _, encoded = item.url.partition(",")
            return _b64(encoded)
        url = httpx.URL(urljoin(f"{self._root}/", item.url))
        if url.scheme not in ("http", "https"):
            raise _bad_response(f"an image URL has scheme {url.scheme!r}")
        # The key goes only to the configured server, never to a CDN or bucket it links to.
        same_origin = url.copy_with(path="/", query=None, fragment=None) == self._origin
        response = await self._client.send(
            self._client.build_request("GET", url, headers=_auth(api_key) if same_origin else {}),
            stream=True,
        )
        try:
            body = await self._read_capped(response)
        finally:
            await response.aclose()
        if response.status_code != 200:
            raise _failure_from_status(response, body, api_key, what="downloading an image")
        return body

    async def _checked(self, index: int, data: bytes) -> RenderedImage:
        try:
            # Decoding a large image is CPU work: off the event loop.
            facts = await asyncio.to_thread(inspect_image, data, self._image_limits, field="image")
        except DomainError as error:
            raise _bad_response(f"image {index} is unusable: {error.detail}") from None
        return RenderedImage.of(
            index, data, width=facts.width, height=facts.height, content_type=facts.content_type.value
        )

    async def _read_capped(self, response: httpx.Response) -> bytes:
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self._max_response_bytes:
                raise _bad_response(f"the answer is larger than {self._max_response_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _until_stopped(self, work: Coroutine[Any, Any, T], should_stop: Callable[[], bool] | None) -> T:
        """Run `work`, abandoning it (RenderCanceled) as soon as `should_stop()` turns true."""
        if should_stop is None:
            return await work
        task = asyncio.ensure_future(work)
        try:
            while True:
                done, _ = await asyncio.wait({task}, timeout=self._stop_poll_seconds)
                if done:
                    return task.result()
                if should_stop():
                    raise RenderCanceled("stopped while the image server was drawing")
        finally:
            if not task.done():
                task.cancel()
                await asyncio.wait({task})

    async def _api_key(self) -> str | None:
        versions = await self._secrets.versions(RENDERER_API_KEY)
        return versions[0].value if versions else None


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def _b64(encoded: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise _bad_response("an image's base64 is invalid") from None


def _decode_answer(body: bytes) -> _ImagesResponse:
    try:
        answer = msgspec.json.decode(body, type=_ImagesResponse)
    except msgspec.DecodeError as error:
        raise _bad_response(f"the answer is not an images response ({error})") from None
    if not answer.data:
        raise _bad_response("the answer holds no image")
    return answer


def _bad_response(message: str) -> RenderFailed:
    return RenderFailed("renderer_bad_response", message, retryable=False)


def _unreachable(error: httpx.HTTPError) -> RenderFailed:
    return RenderFailed(
        "renderer_unavailable", f"the image server is unreachable ({type(error).__name__})", retryable=True
    )


def _failure_from_status(
    response: httpx.Response, body: bytes, api_key: str | None, *, what: str = "rendering"
) -> RenderFailed:
    status = response.status_code
    message, error_code = _server_error(body)
    if api_key:  # some servers echo the key they refused; it must not reach logs or clients
        message = message.replace(api_key, "***")
    detail = f"the image server answered {status} while {what}" + (f": {message}" if message else "")
    log.warning("the image server refused", extra={"status": status, "error_code": error_code})
    if status == 429 or status >= 500:
        retry_after = response.headers.get("Retry-After")
        if retry_after:
            detail += f" (retry after {retry_after.strip()[:40]})"
        code = "renderer_rate_limited" if status == 429 else "renderer_unavailable"
        return RenderFailed(code, detail, retryable=True)
    if error_code == "content_policy_violation":
        return RenderFailed("content_refused", detail, retryable=False)
    if status in (401, 403):
        return RenderFailed("renderer_unauthorized", detail, retryable=False)
    if 400 <= status < 500:
        return RenderFailed("renderer_refused", detail, retryable=False)
    return _bad_response(detail)  # 1xx, 2xx other than 200, 3xx: not the protocol


def _server_error(body: bytes) -> tuple[str, str | None]:
    """The message and code of an OpenAI error body ({error: {message, type, code}}), or the text."""
    try:
        decoded = msgspec.json.decode(body)
    except msgspec.DecodeError:
        return body.decode("utf-8", "replace").strip()[:_MAX_ERROR_MESSAGE], None
    error = decoded.get("error") if isinstance(decoded, dict) else None
    if isinstance(error, dict):
        code = error.get("code")
        return str(error.get("message") or "")[:_MAX_ERROR_MESSAGE], str(code) if code is not None else None
    if isinstance(error, str):
        return error[:_MAX_ERROR_MESSAGE], None
    if isinstance(decoded, dict) and isinstance(decoded.get("detail"), str):  # FastAPI-style servers
        return decoded["detail"][:_MAX_ERROR_MESSAGE], None
    return "", None
