"""Counting HTTP responses for error tracking: a raw ASGI layer inside the request context.

Every response counts toward its route's traffic (the 5xx rate's denominator); an error response
(status 400 and above) is also counted by its code, read from the problem+json body that
`entrypoints.http.problems` built (or an OpenAI-style `{"error": {"code"}}` body), by route
template and category. Success responses cost a dict increment; only error bodies are read.
Probes (`/health/*`, `/metrics`) are left out: a load balancer's polling is not traffic, and a
failing readiness check has its own alerting.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Any, Final

import msgspec
from litestar import Litestar

from entrypoints.error_tracking import ErrorTracking, tracking_of
from entrypoints.http.http_metrics import UNMATCHED_ROUTE
from entrypoints.http.request_context import CORRELATION_SCOPE_KEY
from entrypoints.http.svcs_plugin import registry_of

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

PROBE_ROUTES: Final = frozenset({"/health/live", "/health/ready", "/metrics"})
MAX_ERROR_BODY_BYTES: Final = 16 * 1024  # a problem body is a few hundred bytes; more is not read
_METHODS: Final = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _OpenAIError(msgspec.Struct):
    code: str | None = None


class _ErrorBody(msgspec.Struct):
    code: str | None = None  # problem+json
    error: _OpenAIError | None = None  # the OpenAI-compatible endpoint's errors


_decode_error_body = msgspec.json.Decoder(_ErrorBody).decode


def error_code_of(body: bytes, status: int) -> str:
    """The code an error response carried; `http_<status>` when its body has none."""
    try:
        parsed = _decode_error_body(body)
    except msgspec.DecodeError:
        parsed = _ErrorBody()
    code = parsed.code or (parsed.error.code if parsed.error is not None else None)
    return code or f"http_{status}"


class ErrorTrackingMiddleware:
    """Wraps Litestar's handler (`around`), inside `RequestContext`, which sets the correlation id.
    Counts only while `lifespan` runs, with the process's ErrorTracking from the registry. List
    `lifespan` before the embedded worker's, so the worker's last jobs are flushed too."""

    def __init__(self) -> None:
        self._app: ASGIApp | None = None
        self._tracking: ErrorTracking | None = None

    def around(self, app: ASGIApp) -> ErrorTrackingMiddleware:
        self._app = app
        return self

    @asynccontextmanager
    async def lifespan(self, app: Litestar) -> AsyncIterator[None]:
        tracking = tracking_of(registry_of(app))
        if tracking is None:
            yield
            return
        await tracking.start()
        self._tracking = tracking
        try:
            yield
        finally:
            self._tracking = None
            await tracking.stop()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = self._app
        assert app is not None, "wrap Litestar's handler with around() first"
        tracking = self._tracking
        if tracking is None or scope["type"] != "http":
            await app(scope, receive, send)
            return
        status = 0
        body: bytearray | None = None

        async def observe(message: Message) -> None:
            nonlocal status, body
            if message["type"] == "http.response.start":
                status = message["status"]
                if status >= 400:
                    body = bytearray()
            elif body is not None and len(body) < MAX_ERROR_BODY_BYTES:
                body += message.get("body", b"")
            await send(message)

        try:
            await app(scope, receive, observe)
        finally:
            route = scope.get("path_template") or UNMATCHED_ROUTE
            if route not in PROBE_ROUTES:
                method = scope["method"] if scope["method"] in _METHODS else "OTHER"
                tracking.count_response(method, route)
                if status == 0 or status >= 400:
                    # No response started: the exception escaped every handler (a 500 to the client).
                    code = error_code_of(bytes(body), status) if body is not None else "internal_error"
                    tracking.count_http_error(
                        method,
                        route,
                        status=status or 500,
                        code=code,
                        correlation_id=scope.get(CORRELATION_SCOPE_KEY) or "",
                    )
