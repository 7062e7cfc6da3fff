"""The outermost layer of every HTTP response: correlation id, security headers, metrics, access log.

It wraps Litestar's whole handler (routing and exception handling included), so 404s and errors
raised before any route runs get the same headers as everything else.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from core.correlation import accept_request_id
from entrypoints.correlation import correlation_id_var
from entrypoints.http.http_metrics import IN_PROGRESS, observe_request
from entrypoints.http.openapi_fixes import with_full_allow

# Plain ASGI types: this layer sits outside Litestar's typed scopes.
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


CORRELATION_SCOPE_KEY = "pictor.correlation_id"
RATE_LIMIT_HEADERS_SCOPE_KEY = "pictor.rate_limit_headers"  # set by the guard on authenticated requests

_access_log = logging.getLogger("pictor.access")

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), microphone=(), geolocation=()"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
)
# The interactive docs (served from our own assets) need inline scripts and styles.
_DOCS_CSP = (
    b"default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    b"img-src 'self' data:; frame-ancestors 'none'"
)
_HSTS = (b"strict-transport-security", b"max-age=63072000; includeSubDomains")
_SECURITY_NAMES = frozenset(name for name, _ in SECURITY_HEADERS)
_DOCS_SECURITY_HEADERS = tuple(
    (name, _DOCS_CSP if name == b"content-security-policy" else value) for name, value in SECURITY_HEADERS
)


class RequestContext:
    """Raw ASGI middleware; kept small because it runs on every request."""

    def __init__(self, app: ASGIApp, *, hsts: bool = False) -> None:
        self._app = app
        self._hsts = hsts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        request_id = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                request_id = accept_request_id(value.decode("latin-1"))
                break
        if request_id is None:
            request_id = os.urandom(16).hex()
        scope[CORRELATION_SCOPE_KEY] = request_id
        token = correlation_id_var.set(request_id)
        encoded_id = request_id.encode()
        path: str = scope["path"]
        is_docs = path.startswith(("/docs", "/schema"))
        status = 0
        started = time.perf_counter()

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                security = _DOCS_SECURITY_HEADERS if is_docs else SECURITY_HEADERS
                present = {name.lower() for name, _ in headers}
                if present.isdisjoint(_SECURITY_NAMES):  # the usual case: add them all at once
                    headers.extend(security)
                else:  # a route set one of them itself: its own value wins
                    headers.extend(item for item in security if item[0] not in present)
                headers.append((b"x-request-id", encoded_id))
                if self._hsts:
                    headers.append(_HSTS)
                for name, value in scope.get(RATE_LIMIT_HEADERS_SCOPE_KEY, ()):
                    if name not in present:
                        headers.append((name, value))
                if scope["method"] == "OPTIONS":
                    headers = with_full_allow(headers, scope)
                message["headers"] = headers
            await send(message)

        IN_PROGRESS.inc()
        try:
            await self._app(scope, receive, send_with_headers)
        finally:
            IN_PROGRESS.dec()
            elapsed = time.perf_counter() - started
            observe_request(scope["method"], scope.get("path_template"), status or 500, elapsed)
            if _access_log.isEnabledFor(logging.INFO):
                _access_log.info(
                    "request",
                    extra={
                        "method": scope["method"],
                        "path": path,
                        "route": scope.get("path_template"),
                        "status": status,
                        "duration_ms": round(elapsed * 1000, 3),
                    },
                )
            correlation_id_var.reset(token)
