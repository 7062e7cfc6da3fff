"""A local webhook receiver for tests: records every request and answers from a script.

A threaded stdlib HTTP server on 127.0.0.1. Each path has its own script of replies (`Reply`),
taken in order; once a path's script is used up it answers `200`. A reply may hold the request
open until the test releases it (`Reply.hang()`), to catch a sender in the middle of an attempt.
Every accepted TCP connection is counted, so a test can prove that nothing even connected (not
only that no well-formed request arrived).
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOST = "127.0.0.1"
HANG_LIMIT_SECONDS = 300.0  # a forgotten hang never keeps a server thread forever


@dataclass(frozen=True)
class Reply:
    """One scripted answer. With `hold`, the request is recorded at once and answered only after
    the event is set (or the receiver stops)."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    hold: threading.Event | None = None

    @classmethod
    def hang(cls, status: int = 200) -> Reply:
        """A reply that waits for `release()` before answering `status`."""
        return cls(status=status, hold=threading.Event())

    def release(self) -> None:
        if self.hold is not None:
            self.hold.set()


@dataclass(frozen=True)
class Received:
    """One request as it arrived: headers (names lower-cased), the raw body, when, and the answer."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float  # time.monotonic() when the body had been read
    status: int  # what the receiver answered (or was about to answer, when the sender left)


@dataclass
class _State:
    lock: threading.Lock = field(default_factory=threading.Lock)
    changed: threading.Condition = field(init=False)
    scripts: dict[str, deque[Reply]] = field(default_factory=lambda: defaultdict(deque))
    received: list[Received] = field(default_factory=list)
    connections: int = 0
    holds: list[threading.Event] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.changed = threading.Condition(self.lock)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: _State) -> None:
        self.state = state
        super().__init__((HOST, 0), _Handler)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.state.changed:
            self.state.connections += 1
            self.state.changed.notify_all()
        return True


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the test reports what it recorded

    def _read_body(self) -> bytes:
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("content-length") or 0))

    def _handle(self) -> None:
        body = self._read_body()
        state = self.server.state
        path = self.path
        with state.changed:
            script = state.scripts[path]
            reply = script.popleft() if script else Reply()
            if reply.hold is not None:
                state.holds.append(reply.hold)
            state.received.append(
                Received(
                    method=self.command,
                    path=path,
                    headers={name.lower(): value for name, value in self.headers.items()},
                    body=body,
                    at=time.monotonic(),
                    status=reply.status,
                )
            )
            state.changed.notify_all()
        if reply.hold is not None:
            reply.hold.wait(HANG_LIMIT_SECONDS)
        # The sender may have gone (timed out, or was killed) while the reply was held.
        with contextlib.suppress(OSError):
            self.send_response(reply.status)
            for name, value in reply.headers:
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply.body)))
            self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(reply.body)
        self.close_connection = True

    do_POST = _handle
    do_GET = _handle
    do_PUT = _handle


class WebhookReceiver:
    """Start with `with WebhookReceiver() as receiver:`; `receiver.url("/path")` is a target."""

    def __init__(self) -> None:
        self._state = _State()
        self._server = _Server(self._state)
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="webhook-receiver", daemon=True
        )

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str, *, host: str = HOST, scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}{path}"

    def start(self) -> WebhookReceiver:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._state.changed:
            holds = list(self._state.holds)
        for hold in holds:
            hold.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def script(self, path: str, replies: Iterable[Reply]) -> None:
        """Append replies for `path`; after the last one the path answers 200."""
        with self._state.changed:
            self._state.scripts[path].extend(replies)

    def received(self, path: str | None = None) -> list[Received]:
        """What arrived so far (at `path`, or anywhere), oldest first."""
        with self._state.changed:
            return [r for r in self._state.received if path is None or r.path == path]

    @property
    def connections(self) -> int:
        """TCP connections accepted so far, well-formed requests or not."""
        with self._state.changed:
            return self._state.connections

    def wait_for(self, path: str, count: int, *, timeout: float) -> list[Received]:
        """The first `count` requests at `path`, waiting up to `timeout` seconds for them;
        AssertionError with what did arrive when they do not."""
        deadline = time.monotonic() + timeout
        with self._state.changed:
            while True:
                arrived = [r for r in self._state.received if r.path == path]
                if len(arrived) >= count:
                    return arrived[:count]
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(
                        f"{len(arrived)} of {count} requests arrived at {path} within {timeout} s"
                    )
                self._state.changed.wait(left)
