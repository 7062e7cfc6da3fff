"""The worker's own `/metrics`: a small HTTP listener beside the job worker.

A worker has no HTTP server, and its figures (renders, images stored, webhook deliveries, emails,
its pool and the queues) live in its own process, so Prometheus scrapes it directly, on
`PICTOR_WORKER_METRICS_HOST:PICTOR_WORKER_METRICS_PORT` (127.0.0.1 by default), with the same bearer
token as the API's `/metrics` (the secret `metrics_token`).

The listener speaks just enough HTTP/1.1 for a scraper: one `GET` (or `HEAD`) per connection, a
bounded request head read within a deadline, `Connection: close`. Anything else gets a short
problem+json answer, never a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Final

import svcs
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4

from core.errors import ErrorCode
from core.ports import JobQueue, Secrets
from core.secrets import METRICS_TOKEN
from entrypoints.settings import Settings
from entrypoints.system_metrics import QueueStatsSampler, exposition, forget_this_process
from entrypoints.wiring import UnusableConfiguration

log = logging.getLogger("pictor.metrics")

METRICS_PATH: Final = "/metrics"
MAX_HEAD_BYTES: Final = 16 * 1024  # request line and headers; a scraper sends a few hundred bytes
READ_TIMEOUT_SECONDS: Final = 10.0
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
}


class _Answer:
    def __init__(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.status = status
        self.body = body
        self.headers = headers


def _problem(code: ErrorCode, detail: str, path: str, headers: dict[str, str] | None = None) -> _Answer:
    spec = code.spec
    body = {
        "type": f"/problems/{code.value}",
        "title": spec.title,
        "status": spec.status,
        "detail": detail,
        "instance": path,
        "code": code.value,
    }
    return _Answer(
        spec.status,
        json.dumps(body).encode(),
        {"Content-Type": "application/problem+json", **(headers or {})},
    )


async def token_is_valid(secrets: Secrets, presented: str) -> bool:
    """Whether `presented` is a version of the metrics token (the previous one too, during a
    rotation), compared in constant time."""
    versions = await secrets.versions(METRICS_TOKEN)
    return any(hmac.compare_digest(presented.encode(), v.value.encode()) for v in versions)


class MetricsListener:
    """Serves `GET /metrics` behind the metrics bearer token on `host:port` (port 0: any free
    port; `port` says which once started)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        secrets: Secrets,
        render: Callable[[], bytes] = exposition,
    ) -> None:
        self._host = host
        self._port = port
        self._secrets = secrets
        self._render = render
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        if self._server is None or not self._server.sockets:
            return self._port
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        try:
            self._server = await asyncio.start_server(
                self._serve, self._host, self._port, limit=MAX_HEAD_BYTES
            )
        except OSError as error:
            raise UnusableConfiguration(
                f"PICTOR_WORKER_METRICS_HOST/PORT: cannot listen on {self._host}:{self._port} ({error})"
            ) from None
        log.info("worker metrics listening", extra={"host": self._host, "port": self.port})

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            try:
                async with asyncio.timeout(READ_TIMEOUT_SECONDS):
                    head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError, ConnectionError):
                return  # no complete request within the limits: nothing worth answering
            method, path, headers = _parse_head(head)
            answer = await self._answer(method, path, headers)
            await self._write(writer, answer, with_body=method != "HEAD")
        except Exception:
            log.exception("worker metrics request failed")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _answer(self, method: str | None, path: str, headers: dict[str, str]) -> _Answer:
        if method is None:
            return _problem(ErrorCode.BAD_REQUEST, "Malformed request", path)
        if path != METRICS_PATH:
            return _problem(ErrorCode.NOT_FOUND, f"Only {METRICS_PATH} is served here", path)
        if method not in ("GET", "HEAD"):
            return _problem(ErrorCode.METHOD_NOT_ALLOWED, "Use GET", path, {"Allow": "GET, HEAD"})
        challenge = {"WWW-Authenticate": 'Bearer realm="metrics"'}
        scheme, _sep, presented = headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            return _problem(ErrorCode.UNAUTHENTICATED, "A metrics bearer token is required", path, challenge)
        if not await token_is_valid(self._secrets, presented.strip()):
            return _problem(ErrorCode.UNAUTHENTICATED, "The metrics token is not valid", path, challenge)
        # In multiprocess mode this reads files: off the event loop, which is running jobs.
        body = await asyncio.to_thread(self._render)
        return _Answer(200, body, {"Content-Type": CONTENT_TYPE_PLAIN_0_0_4})  # what generate_latest writes

    @staticmethod
    async def _write(writer: asyncio.StreamWriter, answer: _Answer, *, with_body: bool) -> None:
        lines = [f"HTTP/1.1 {answer.status} {_REASONS.get(answer.status, 'Error')}"]
        headers = {**answer.headers, "Content-Length": str(len(answer.body)), "Connection": "close"}
        lines += [f"{name}: {value}" for name, value in headers.items()]
        writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        if with_body:
            writer.write(answer.body)
        await writer.drain()


def _parse_head(head: bytes) -> tuple[str | None, str, dict[str, str]]:
    """(method, path without query, lower-cased headers); method None when the request line is
    not `METHOD target HTTP/1.x`."""
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or not parts[0].isalpha():
        return None, "", {}
    method, target = parts[0].upper(), parts[1]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep and name and name == name.strip():
            headers[name.lower()] = value.strip()
    return method, target.split("?", 1)[0], headers


@asynccontextmanager
async def worker_metrics(
    registry: svcs.Registry, settings: Settings
) -> AsyncIterator[MetricsListener | None]:
    """For `pictor worker`: the queue gauges sampled in the background and, when
    PICTOR_WORKER_METRICS_PORT is set, the `/metrics` listener (yielded; else None)."""
    async with svcs.Container(registry) as container:
        jobs, secrets = await container.aget(JobQueue, Secrets)
    sampler = QueueStatsSampler(jobs, every_seconds=settings.metrics_sample_interval_seconds)
    listener: MetricsListener | None = None
    if settings.worker_metrics_port is not None:
        if not await secrets.versions(METRICS_TOKEN):
            log.warning("no metrics_token is configured: the worker's /metrics refuses every scrape")
        listener = MetricsListener(
            host=settings.worker_metrics_host, port=settings.worker_metrics_port, secrets=secrets
        )
        await listener.start()
    try:
        async with sampler.running():
            yield listener
    finally:
        if listener is not None:
            await listener.stop()
        forget_this_process()
