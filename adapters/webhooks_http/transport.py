"""The WebhookTransport port over httpx, guarded against SSRF.

Each attempt parses the target URL, resolves its host and refuses (without connecting) when any
address is forbidden by `core.webhooks.targets`. It then connects to an address it checked, never
to a name: the request goes to `scheme://<address>:<port>/path` with the real `Host` header and,
for https, the real name as TLS SNI (httpcore's `sni_hostname` extension), so the certificate is
still verified for the name. A second resolution between check and connect, where DNS rebinding
would strike, never happens.

Connections are not kept alive between attempts: httpcore pools connections by scheme, address
and port, so a pooled TLS connection verified for one name could otherwise carry a request for
another name served from the same address (a CDN's shared IP), unverified and likely misrouted.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from typing import Final

import httpx

from adapters.webhooks_http.conventions import (
    CONNECTION_REFUSED,
    DEFAULT_USER_AGENT,
    UnsafeTarget,
    check_addresses,
    check_target,
    outgoing_headers,
    parse_retry_after,
    timed_out,
    unresolvable,
)
from core.webhooks.deliveries import AttemptResult
from core.webhooks.targets import ParsedTarget

Resolver = Callable[[str, int], Awaitable[Sequence[str]]]
"""`(host, port) -> addresses`: how the transport resolves names (injectable for tests)."""

MAX_BODY_BYTES: Final = 64 * 1024  # only the status matters; a hostile receiver cannot make us buffer
_DEFAULT_PORTS: Final = {"https": 443, "http": 80}


async def resolve_with_system(host: str, port: int) -> list[str]:
    """The operating system's resolver (getaddrinfo in the event loop's executor)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def _utc_now() -> datetime:
    return datetime.now(UTC)


class HttpWebhookTransport:
    """Implements `core.ports.WebhookTransport` with one `httpx.AsyncClient`; `aclose()` closes it.

    `allow_private` (PICTOR_WEBHOOKS_ALLOW_PRIVATE) lets plain http and loopback, private and
    link-local addresses through, for local development and tests. `resolver` replaces the
    system's, `verify` is httpx's (an `ssl.SSLContext` trusting a test CA, or a bool), `now` is the
    wall clock that HTTP-date `Retry-After` values are measured against. `max_connections` bounds
    the attempts in flight at once; more wait for a free connection within their own deadline.
    """

    def __init__(
        self,
        *,
        allow_private: bool,
        resolver: Resolver = resolve_with_system,
        verify: ssl.SSLContext | bool = True,
        now: Callable[[], datetime] = _utc_now,
        user_agent: str = DEFAULT_USER_AGENT,
        max_connections: int = 100,
    ) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._now = now
        self._user_agent = user_agent
        self._client = httpx.AsyncClient(
            verify=verify,
            follow_redirects=False,
            trust_env=False,  # no proxy or CA from the environment: targets are reached as checked
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=0),
            headers={"User-Agent": user_agent, "Connection": "close"},
        )
        self._closed = False

    async def send(
        self, url: str, *, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> AttemptResult:
        """POST `body` to `url` once; see `core.ports.WebhookTransport.send`.

        Raises only for the caller's mistakes: a non-positive timeout, or a closed transport.
        """
        if not 0 < timeout_seconds < math.inf:
            raise ValueError("timeout_seconds must be a positive number of seconds")
        if self._closed:
            raise RuntimeError("the webhook transport is closed")
        started = time.monotonic()
        result = await self._attempt(url, headers, body, timeout_seconds)
        return AttemptResult(
            status_code=result.status_code,
            error=result.error,
            retry_after_seconds=result.retry_after_seconds,
            duration_seconds=time.monotonic() - started,
        )

    async def aclose(self) -> None:
        """Close the client; later sends raise RuntimeError."""
        self._closed = True
        await self._client.aclose()

    async def _attempt(
        self, url: str, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> AttemptResult:
        # One deadline covers resolving, connecting, sending and reading the status: httpx's own
        # timeouts are per phase (and per read), so a receiver trickling bytes could outlast them.
        deadline = asyncio.get_running_loop().time() + timeout_seconds
        try:
            target = check_target(url, allow_private=self._allow_private)
            async with asyncio.timeout_at(deadline):
                addresses = await self._checked_addresses(target)
                response = await self._post(target, addresses, headers, body, timeout_seconds)
        except UnsafeTarget as refusal:
            return AttemptResult(error=str(refusal))
        except (TimeoutError, httpx.TimeoutException):
            return AttemptResult(error=timed_out(timeout_seconds))
        except (httpx.HTTPError, httpx.InvalidURL, OSError) as error:
            return AttemptResult(error=_describe(error))
        try:
            retry_after = parse_retry_after(response.headers.get("retry-after"), self._now())
            # Reading a little of the body lets a receiver that writes its answer before finishing
            # the request complete cleanly; what it says, or whether it stalls, changes nothing.
            with contextlib.suppress(TimeoutError, httpx.HTTPError, OSError):
                async with asyncio.timeout_at(deadline):
                    await _discard_body(response)
        finally:
            with contextlib.suppress(httpx.HTTPError, OSError):
                await response.aclose()
        return AttemptResult(status_code=response.status_code, retry_after_seconds=retry_after)

    async def _checked_addresses(self, target: ParsedTarget) -> list[str]:
        if target.ip_literal is not None:
            addresses = [target.ip_literal]
        else:
            try:
                resolved = await self._resolver(target.host, target.port)
            except OSError:  # socket.gaierror and friends
                raise UnsafeTarget(unresolvable(target.host)) from None
            addresses = list(dict.fromkeys(resolved))  # distinct, in the resolver's order
            if not addresses:
                raise UnsafeTarget(unresolvable(target.host))
        check_addresses(target, addresses, allow_private=self._allow_private)
        return addresses

    async def _post(
        self,
        target: ParsedTarget,
        addresses: list[str],
        headers: dict[str, str],
        body: bytes,
        timeout_seconds: float,
    ) -> httpx.Response:
        """Send to the first checked address that accepts a connection (an IPv6 address listed
        first may well be unreachable); nothing was sent on a failed connect, so trying the next
        cannot deliver twice."""
        wire_url = httpx.URL(target.url)
        host_header = _host_header(wire_url, target)
        sent_headers = outgoing_headers(headers, user_agent=self._user_agent)
        if host_header is not None:
            sent_headers["Host"] = host_header
        extensions = {"sni_hostname": target.host} if target.scheme == "https" and host_header else {}
        failure: httpx.ConnectError | None = None
        for address in addresses:
            request = self._client.build_request(
                "POST",
                wire_url.copy_with(host=address),
                content=body,
                headers=sent_headers,
                extensions=extensions,
                timeout=httpx.Timeout(timeout_seconds),
            )
            try:
                return await self._client.send(request, stream=True)
            except httpx.ConnectError as error:
                failure = error
        assert failure is not None  # the resolver's addresses were checked non-empty
        raise failure


def _host_header(wire_url: httpx.URL, target: ParsedTarget) -> str | None:
    """The `Host` header for a target named by host name (None for an address, which httpx fills
    in itself). httpx parses the URL independently of `check_target_url`; should the two read a
    different host or port out of it, the URL is refused rather than trusted."""
    port = wire_url.port or _DEFAULT_PORTS[wire_url.scheme]
    if wire_url.raw_host.decode("ascii").rstrip(".").lower() != target.host.lower() or port != target.port:
        raise UnsafeTarget("unsafe target: the URL is ambiguous")
    if target.ip_literal is not None:
        return None
    return wire_url.netloc.decode("ascii")


async def _discard_body(response: httpx.Response) -> None:
    received = 0
    async for chunk in response.aiter_raw():  # raw: a compressed bomb is never inflated
        received += len(chunk)
        if received >= MAX_BODY_BYTES:
            return


def _describe(error: BaseException) -> str:
    """A short text for a failed attempt, from what the error is and what caused it: never the
    request's headers or body, nor the receiver's bytes."""
    cause = _root_cause(error)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS certificate rejected: {cause.verify_message}"
    if isinstance(cause, ssl.SSLError):
        return f"TLS handshake failed: {cause.reason or type(cause).__name__}"
    if isinstance(cause, ConnectionRefusedError):
        return CONNECTION_REFUSED
    if isinstance(cause, ConnectionResetError | BrokenPipeError):
        return "connection reset by the receiver"
    if isinstance(error, httpx.RemoteProtocolError):
        if "disconnected" in str(error).lower():
            return "the receiver closed the connection without answering"
        return "the receiver's answer is not valid HTTP"
    if isinstance(error, httpx.ConnectError):
        reason = cause.strerror if isinstance(cause, OSError) and cause.strerror else "no connection"
        return f"connection failed: {reason}"
    if isinstance(error, httpx.InvalidURL):
        return "unsafe target: the URL is ambiguous"
    if isinstance(cause, OSError) and cause.strerror:
        return f"network error: {cause.strerror}"
    return f"HTTP error: {type(error).__name__}"


def _root_cause(error: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(error) not in seen:
        seen.add(id(error))
        following = error.__cause__ or error.__context__
        if following is None:
            break
        error = following
    return error
