"""SIGTERM while requests are in flight: readiness fails at once, and no request is lost.

The in-flight requests are slow downloads of a large file through signed links: each client reads
its body slowly, so every one of them is mid-response when the signal arrives.
"""

from __future__ import annotations

import asyncio
import hashlib
import http.client
import os
import threading
import time
from datetime import timedelta
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from adapters.memory.secrets import MemorySecrets
from adapters.storage.factory import blob_store_from_url
from adapters.system import SystemClock
from tests.e2e.processes import PictorProcess, clean_environ, free_port

pytestmark = pytest.mark.e2e

SIGNING_KEY = "e2e-signing-key"
CLIENTS = 12
FILE_BYTES = 4 * 1024 * 1024
CHUNK = 64 * 1024


async def _publish(blobs: Path, base_url: str, data: bytes) -> str:
    store = blob_store_from_url(
        blobs.as_uri(),
        secrets=MemorySecrets({"url_signing_key": [SIGNING_KEY]}),
        clock=SystemClock(),
        public_base_url=base_url,
    )
    await store.put("big/file.bin", data, content_type="application/octet-stream")
    return (await store.signed_url("big/file.bin", expires_in=timedelta(hours=1))).url


class SlowDownload(threading.Thread):
    """Fetches the link, then reads the body slowly; records what arrived."""

    def __init__(self, link: str, headers_received: threading.Barrier) -> None:
        super().__init__(daemon=True)
        self.parts = urlsplit(link)
        self.headers_received = headers_received
        self.status = 0
        self.digest = ""
        self.received = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            conn = http.client.HTTPConnection(self.parts.hostname, self.parts.port, timeout=30)
            conn.request("GET", f"{self.parts.path}?{self.parts.query}")
            response = conn.getresponse()
            self.status = response.status
            self.headers_received.wait(timeout=30)
            sha = hashlib.sha256()
            while chunk := response.read(CHUNK):
                sha.update(chunk)
                self.received += len(chunk)
                time.sleep(0.02)  # a slow client: the whole body takes a couple of seconds
            self.digest = sha.hexdigest()
            conn.close()
        except BaseException as error:
            self.error = error


def _poll_readiness(base_url: str, stop: threading.Event, seen: list[str]) -> None:
    while not stop.is_set():
        try:
            seen.append(str(httpx.get(f"{base_url}/health/ready", timeout=2).status_code))
        except httpx.HTTPError:
            seen.append("refused")
        time.sleep(0.05)


def test_sigterm_finishes_in_flight_requests_and_fails_readiness_first(tmp_path: Path) -> None:
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    blobs = tmp_path / "blobs"
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_PORT": str(port),
            "PICTOR_DATABASE_URL": "memory://",
            "PICTOR_QUEUE_URL": "memory://",
            "PICTOR_VALKEY_URL": "memory://",
            "PICTOR_STORAGE_URL": blobs.as_uri(),
            "PICTOR_SECRET_URL_SIGNING_KEY": SIGNING_KEY,
            "PICTOR_SHUTDOWN_DRAIN_SECONDS": "1",
            "PICTOR_LOG_LEVEL": "warning",
        }
    )
    data = os.urandom(FILE_BYTES)
    expected = hashlib.sha256(data).hexdigest()
    server = PictorProcess(["serve"], env, tmp_path / "serve.log")
    try:
        server.wait_ready(base_url, timeout=60)
        link = asyncio.run(_publish(blobs, base_url, data))

        headers_received = threading.Barrier(CLIENTS + 1)
        downloads = [SlowDownload(link, headers_received) for _ in range(CLIENTS)]
        for download in downloads:
            download.start()
        headers_received.wait(timeout=30)  # every response has started: all are in flight

        stop_polling = threading.Event()
        readiness: list[str] = []
        poller = threading.Thread(
            target=_poll_readiness, args=(base_url, stop_polling, readiness), daemon=True
        )
        poller.start()
        deadline = time.monotonic() + 10  # a busy machine may take a while for the first answer
        while len(readiness) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        signalled_at = len(readiness)
        exit_code = server.terminate(timeout=60)
        for download in downloads:
            download.join(timeout=60)
        stop_polling.set()
        poller.join(timeout=10)
    finally:
        server.kill()

    assert exit_code == 0, server.output()
    for download in downloads:
        assert download.error is None, repr(download.error)
        assert download.status == 200
        assert download.received == FILE_BYTES
        assert download.digest == expected
    before, after = readiness[:signalled_at], readiness[signalled_at:]
    assert before and set(before) == {"200"}, readiness
    assert "503" in after, f"readiness never failed while draining: {readiness}"
    assert after.index("503") < (after.index("refused") if "refused" in after else len(after)), readiness
