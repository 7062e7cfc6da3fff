"""A local ops-alert receiver for tests: a threaded HTTP server on 127.0.0.1 that records every
POST (headers lower-cased, raw body) and answers 204."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import msgspec
from standardwebhooks.webhooks import Webhook


@dataclass(frozen=True)
class Delivery:
    headers: dict[str, str]
    body: bytes

    def verified(self, secret: str | bytes) -> dict[str, Any]:
        """The payload, once `standardwebhooks` has checked the signature and timestamp with `secret`."""
        payload: dict[str, Any] = Webhook(secret).verify(self.body, self.headers)
        return payload

    def json(self) -> dict[str, Any]:
        decoded: dict[str, Any] = msgspec.json.decode(self.body)
        return decoded


class OpsReceiver:
    """`with OpsReceiver() as receiver:` — alerts go to `receiver.url`."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._deliveries: list[Delivery] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                with receiver._lock:
                    receiver._deliveries.append(
                        Delivery({k.lower(): v for k, v in self.headers.items()}, body)
                    )
                    receiver._lock.notify_all()
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="ops-receiver",
            daemon=True,
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/ops/alerts"

    def __enter__(self) -> OpsReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def deliveries(self) -> list[Delivery]:
        with self._lock:
            return list(self._deliveries)

    def wait_for(self, count: int, *, timeout: float = 15.0) -> list[Delivery]:
        """The first `count` deliveries, waiting up to `timeout` seconds for them to arrive."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while len(self._deliveries) < count:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise AssertionError(f"{len(self._deliveries)} of {count} alerts arrived in {timeout} s")
                self._lock.wait(left)
            return list(self._deliveries[:count])
