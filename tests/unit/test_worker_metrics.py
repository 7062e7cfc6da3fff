"""The worker's `/metrics` listener on loopback: the token, the paths, the methods, and requests
that are not HTTP at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from adapters.memory.secrets import MemorySecrets
from core.secrets import METRICS_TOKEN
from entrypoints.wiring import UnusableConfiguration
from entrypoints.worker_metrics import MAX_HEAD_BYTES, MetricsListener

TOKEN = "worker-metrics-token"
BODY = b"# HELP pictor_demo_total Demo\n# TYPE pictor_demo_total counter\npictor_demo_total 3.0\n"


@pytest.fixture
async def secrets() -> MemorySecrets:
    return MemorySecrets({METRICS_TOKEN: [TOKEN]})


@pytest.fixture
async def listener(secrets: MemorySecrets) -> AsyncIterator[MetricsListener]:
    server = MetricsListener(host="127.0.0.1", port=0, secrets=secrets, render=lambda: BODY)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


def url(listener: MetricsListener, path: str = "/metrics") -> str:
    return f"http://127.0.0.1:{listener.port}{path}"


async def test_the_token_opens_the_metrics(listener: MetricsListener) -> None:
    async with httpx.AsyncClient() as client:
        response = await client.get(url(listener), headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    assert response.content == BODY
    assert response.headers["connection"] == "close"


@pytest.mark.parametrize(
    "authorization", [None, "Bearer nope", "Basic d29ya2VyOnBhc3M=", "Bearer", f"Token {TOKEN}"]
)
async def test_anything_but_the_token_is_refused(
    listener: MetricsListener, authorization: str | None
) -> None:
    headers = {"Authorization": authorization} if authorization is not None else {}
    async with httpx.AsyncClient() as client:
        response = await client.get(url(listener), headers=headers)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["code"] == "unauthenticated"
    assert b"pictor_demo_total" not in response.content


async def test_the_previous_token_works_during_a_rotation(
    listener: MetricsListener, secrets: MemorySecrets
) -> None:
    secrets.rotate(METRICS_TOKEN, "the-new-token")
    async with httpx.AsyncClient() as client:
        for token in ("the-new-token", TOKEN):
            response = await client.get(url(listener), headers={"Authorization": f"Bearer {token}"})
            assert response.status_code == 200, token
        secrets.retire(METRICS_TOKEN, "1")
        retired = await client.get(url(listener), headers={"Authorization": f"Bearer {TOKEN}"})
    assert retired.status_code == 401


async def test_other_paths_and_methods(listener: MetricsListener) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient() as client:
        missing = await client.get(url(listener, "/health"), headers=auth)
        posted = await client.post(url(listener), headers=auth, content=b"x")
        queried = await client.get(url(listener, "/metrics?name[]=x"), headers=auth)
        head = await client.head(url(listener), headers=auth)
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    assert (posted.status_code, posted.headers["allow"]) == (405, "GET, HEAD")
    assert queried.status_code == 200
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-length"] == str(len(BODY))


async def exchange(listener: MetricsListener, raw: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", listener.port)
    try:
        writer.write(raw)
        await writer.drain()
        return await asyncio.wait_for(reader.read(), 30)
    finally:
        writer.close()


async def test_requests_that_are_not_http_get_a_400_or_a_closed_connection(listener: MetricsListener) -> None:
    answer = await exchange(listener, b"HELLO\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 400 ")
    # A head that never ends within the limit: the connection is closed without an answer.
    assert await exchange(listener, b"GET /metrics HTTP/1.1\r\nX: " + b"a" * (MAX_HEAD_BYTES + 10)) == b""
    # The listener still serves after both.
    async with httpx.AsyncClient() as client:
        ok = await client.get(url(listener), headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200


async def test_a_port_in_use_is_a_configuration_error_naming_the_setting(listener: MetricsListener) -> None:
    second = MetricsListener(host="127.0.0.1", port=listener.port, secrets=MemorySecrets())
    with pytest.raises(UnusableConfiguration, match="PICTOR_WORKER_METRICS"):
        await second.start()
