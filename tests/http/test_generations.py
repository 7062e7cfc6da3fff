"""The generations API on the in-memory wiring: create, read, list, cancel, `Prefer: wait`,
Idempotency-Key (replay, reuse, in progress, concurrent duplicates), quota, and SSE events.

No worker runs here: `finish` plays its part through the repository and the BlobStore (start,
progress, store the image, succeed), so each test decides when a generation ends.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import httpx
import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image

from core.generations import generation as lifecycle
from core.generations.generation import GeneratedImage, Generation
from core.generations.uploads import generation_image_key
from core.ports import BlobStore, Clock, Database
from entrypoints.http.app import create_app
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import settings_from_mapping
from tests.support.accounts import bearer, login, register
from tests.support.plans import roomy_plans_file

T = TypeVar("T")


def plans_environ(environ: dict[str, str], tmp_path: Path, monthly_images: int) -> dict[str, str]:
    return {**environ, "PICTOR_PLANS_FILE": roomy_plans_file(tmp_path, monthly_images=monthly_images)}


@pytest.fixture
def environ(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return plans_environ(environ, tmp_path, monthly_images=1000)


async def user(client: AsyncTestClient[Litestar], email: str = "ada@example.com") -> dict[str, str]:
    await register(client, email)
    return bearer(await login(client, email))


async def services(client: AsyncTestClient[Litestar]) -> tuple[Database, BlobStore, Clock]:
    async with svcs.Container(registry_of(client.app)) as container:
        return await container.aget(Database, BlobStore, Clock)


async def transition(
    client: AsyncTestClient[Litestar], generation_id: str, step: Callable[[Generation, datetime], Generation]
) -> Generation:
    database, _, clock = await services(client)
    async with database.unit_of_work() as uow:
        current = await uow.generations.get_for_update(generation_id)
        assert current is not None
        changed = step(current, clock.now())
        await uow.generations.update(changed)
        await uow.commit()
    return changed


async def finish(client: AsyncTestClient[Litestar], generation_id: str) -> bytes:
    """Do what the worker does: start, report progress, store the images, succeed. Returns the
    bytes of image 0."""
    _, blobs, _ = await services(client)
    started = await transition(client, generation_id, lifecycle.start)
    await transition(client, generation_id, lambda g, now: lifecycle.progress(g, 0.5, now))
    images = []
    for index in range(started.n):
        data = f"\x89PNG image {index} of {generation_id}".encode()
        key = generation_image_key(started.user_id, generation_id, index)
        await blobs.put(key, data, content_type="image/png")
        images.append(
            GeneratedImage(
                index=index,
                blob_key=key,
                content_type="image/png",
                width=started.width,
                height=started.height,
                bytes=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
            )
        )
    await transition(client, generation_id, lambda g, now: lifecycle.succeed(g, images, now))
    return f"\x89PNG image 0 of {generation_id}".encode()


async def created_ids(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> list[str]:
    response = await client.get("/v1/generations", headers=headers)
    assert response.status_code == 200, response.text
    return [g["id"] for g in response.json()["data"]]


async def first_generation(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> str:
    """The id of the caller's generation once one exists (created by a request still running)."""
    while not (ids := await created_ids(client, headers)):
        await asyncio.sleep(0.01)
    return ids[0]


def in_app(client: AsyncTestClient[Litestar], scenario: Callable[[httpx.AsyncClient], Awaitable[T]]) -> T:
    """Run `scenario` on the app's own event loop with a client whose requests run concurrently
    (the test client's requests run one at a time)."""

    async def run() -> T:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as concurrent:
            return await scenario(concurrent)

    return client.blocking_portal.call(run)


async def test_create_read_and_download(client):
    ada = await user(client)
    response = await client.post(
        "/v1/generations", json={"prompt": "a lighthouse at dusk", "size": "256x256", "n": 2}, headers=ada
    )
    assert response.status_code == 202, response.text
    body = response.json()
    assert response.headers["location"] == f"/v1/generations/{body['id']}"
    assert body["status"] == "queued"
    assert (body["prompt"], body["size"], body["n"], body["images"]) == (
        "a lighthouse at dusk",
        "256x256",
        2,
        [],
    )
    assert "error" not in body

    first = await finish(client, body["id"])
    done = (await client.get(f"/v1/generations/{body['id']}", headers=ada)).json()
    assert done["status"] == "succeeded"
    assert done["progress"] == 1.0
    assert [image["index"] for image in done["images"]] == [0, 1]
    link = urlsplit(done["images"][0]["url"])
    download = await client.get(f"{link.path}?{link.query}")
    assert download.status_code == 200
    assert download.content == first
    assert hashlib.sha256(download.content).hexdigest() == done["images"][0]["sha256"]
    assert done["images"][0]["url_expires_at"] > done["finished_at"]


async def test_list_is_newest_first_with_a_cursor_and_a_status_filter(client):
    ada = await user(client)
    ids = []
    for prompt in ("one", "two", "three"):
        response = await client.post(
            "/v1/generations", json={"prompt": prompt, "size": "256x256"}, headers=ada
        )
        ids.append(response.json()["id"])
    await finish(client, ids[1])
    page = (await client.get("/v1/generations?limit=2", headers=ada)).json()
    assert [g["id"] for g in page["data"]] == [ids[2], ids[1]]
    rest = (await client.get(f"/v1/generations?limit=2&cursor={page['next_cursor']}", headers=ada)).json()
    assert [g["id"] for g in rest["data"]] == [ids[0]]
    assert rest["next_cursor"] is None
    succeeded = (await client.get("/v1/generations?status=succeeded", headers=ada)).json()
    assert [g["id"] for g in succeeded["data"]] == [ids[1]]
    bad = await client.get("/v1/generations?status=done", headers=ada)
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "query.status"


async def test_cancel_then_cancel_again_is_invalid_state(client):
    ada = await user(client)
    created = (
        await client.post("/v1/generations", json={"prompt": "x", "size": "256x256"}, headers=ada)
    ).json()
    canceled = await client.post(f"/v1/generations/{created['id']}/cancel", headers=ada)
    assert canceled.status_code == 200, canceled.text
    assert canceled.json()["status"] == "canceled"
    again = await client.post(f"/v1/generations/{created['id']}/cancel", headers=ada)
    assert again.status_code == 409
    assert again.json()["code"] == "invalid_state"


async def test_another_users_generation_and_upload_are_not_found(client):
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")
    created = (
        await client.post("/v1/generations", json={"prompt": "x", "size": "256x256"}, headers=ada)
    ).json()
    for method, path in (
        ("GET", f"/v1/generations/{created['id']}"),
        ("POST", f"/v1/generations/{created['id']}/cancel"),
        ("GET", f"/v1/generations/{created['id']}/events"),
        ("GET", "/v1/generations/not-an-id"),
    ):
        response = await client.request(method, path, headers=bob)
        assert response.status_code == 404, (method, path)
    assert await created_ids(client, bob) == []

    png = io.BytesIO()
    Image.new("RGB", (32, 32)).save(png, format="PNG")
    upload = await client.post("/v1/uploads", files={"file": ("a.png", png.getvalue())}, headers=ada)
    assert upload.status_code == 201
    theirs = await client.post(
        "/v1/generations",
        json={"prompt": "x", "size": "256x256", "init_image": upload.json()["id"]},
        headers=bob,
    )
    assert theirs.status_code == 422
    assert theirs.json()["errors"][0]["field"] == "init_image"
    mine = await client.post(
        "/v1/generations",
        json={"prompt": "x", "size": "256x256", "init_image": upload.json()["id"]},
        headers=ada,
    )
    assert mine.status_code == 202, mine.text
    assert mine.json()["init_image"] == upload.json()["id"]


async def test_prefer_wait_answers_200_once_it_finishes(client):
    ada = await user(client)

    async def scenario(http: httpx.AsyncClient) -> httpx.Response:
        post = asyncio.create_task(
            http.post(
                "/v1/generations",
                json={"prompt": "x", "size": "256x256"},
                headers={**ada, "Prefer": "wait=30"},
            )
        )
        await finish(client, await first_generation(http, ada))
        return await post

    response = in_app(client, scenario)
    assert response.status_code == 200, response.text
    assert response.headers["preference-applied"] == "wait=30"
    assert response.headers["location"] == f"/v1/generations/{response.json()['id']}"
    assert response.json()["status"] == "succeeded"
    assert len(response.json()["images"]) == 1


async def test_prefer_wait_is_capped_and_zero_does_not_wait(client):
    ada = await user(client)
    now = await client.post(
        "/v1/generations", json={"prompt": "x", "size": "256x256"}, headers={**ada, "Prefer": "wait=0"}
    )
    assert now.status_code == 202
    assert now.headers["preference-applied"] == "wait=0"

    async def scenario(http: httpx.AsyncClient) -> httpx.Response:
        post = asyncio.create_task(
            http.post(
                "/v1/generations",
                json={"prompt": "y", "size": "256x256"},
                headers={**ada, "Prefer": "respond-async, wait=3600"},
            )
        )
        while len(ids := await created_ids(http, ada)) < 2:
            await asyncio.sleep(0.01)
        await finish(client, ids[0])
        return await post

    capped = in_app(client, scenario)
    assert capped.status_code == 200
    assert capped.headers["preference-applied"] == "wait=60"  # generation_wait_max_seconds


async def test_an_idempotent_repeat_replays_and_creates_nothing(client):
    ada = await user(client)
    headers = {**ada, "Idempotency-Key": "order-17"}
    body = {"prompt": "a red fox", "size": "256x256"}
    first = await client.post("/v1/generations", json=body, headers=headers)
    assert first.status_code == 202
    assert "idempotent-replayed" not in first.headers
    # Same body, keys in another order: the same request.
    again = await client.post(
        "/v1/generations", json={"size": "256x256", "prompt": "a red fox"}, headers=headers
    )
    assert again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert again.json() == first.json()
    assert again.headers["location"] == first.headers["location"]
    assert await created_ids(client, ada) == [first.json()["id"]]

    reused = await client.post("/v1/generations", json={**body, "prompt": "a blue fox"}, headers=headers)
    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"
    # Keys are per user: Bob's "order-17" is his own.
    bob = await user(client, "bob@example.com")
    his = await client.post("/v1/generations", json=body, headers={**bob, "Idempotency-Key": "order-17"})
    assert his.status_code == 202
    assert "idempotent-replayed" not in his.headers


async def test_a_repeat_while_the_first_runs_is_409_then_replays(client):
    ada = await user(client)
    headers = {**ada, "Idempotency-Key": "slow-one", "Prefer": "wait=30"}
    body = {"prompt": "x", "size": "256x256"}

    async def scenario(http: httpx.AsyncClient) -> tuple[httpx.Response, httpx.Response, str]:
        first = asyncio.create_task(http.post("/v1/generations", json=body, headers=headers))
        generation_id = await first_generation(http, ada)
        in_progress = await http.post("/v1/generations", json=body, headers=headers)
        await finish(client, generation_id)
        return in_progress, await first, generation_id

    in_progress, first, generation_id = in_app(client, scenario)
    assert in_progress.status_code == 409
    assert in_progress.json()["code"] == "idempotency_in_progress"
    assert in_progress.headers["retry-after"] == "1"
    assert first.status_code == 200
    replayed = await client.post("/v1/generations", json=body, headers=headers)
    assert replayed.status_code == 200
    assert replayed.headers["idempotent-replayed"] == "true"
    assert replayed.json() == first.json()
    assert await created_ids(client, ada) == [generation_id]


async def test_concurrent_duplicates_create_one_generation(client):
    ada = await user(client)
    headers = {**ada, "Idempotency-Key": "burst"}

    async def scenario(http: httpx.AsyncClient) -> list[httpx.Response]:
        body = {"prompt": "x", "size": "256x256"}
        return list(
            await asyncio.gather(
                *(http.post("/v1/generations", json=body, headers=headers) for _ in range(8))
            )
        )

    responses = in_app(client, scenario)
    fresh = [r for r in responses if r.status_code == 202 and "idempotent-replayed" not in r.headers]
    assert len(fresh) == 1
    assert all(r.status_code in (202, 409) for r in responses)
    assert await created_ids(client, ada) == [fresh[0].json()["id"]]


async def test_an_invalid_key_or_a_failed_request_leaves_the_key_usable(client):
    ada = await user(client)
    bad_key = await client.post(
        "/v1/generations", json={"prompt": "x"}, headers={**ada, "Idempotency-Key": "k" * 256}
    )
    assert bad_key.status_code == 422
    assert bad_key.json()["errors"][0]["field"] == "Idempotency-Key"
    headers = {**ada, "Idempotency-Key": "retry-me"}
    refused = await client.post("/v1/generations", json={"prompt": "x", "size": "4096x4096"}, headers=headers)
    assert refused.status_code == 422
    fixed = await client.post("/v1/generations", json={"prompt": "x", "size": "4096x4096"}, headers=headers)
    assert fixed.status_code == 422  # the same request ran again (released), not "in progress"
    assert fixed.json()["code"] == "validation_failed"


@pytest.fixture
async def two_image_client(
    environ: dict[str, str], tmp_path: Path
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    from entrypoints.wiring import service_registry

    small = plans_environ(environ, tmp_path, monthly_images=2)
    settings = settings_from_mapping(small)
    app = create_app(settings, registry_factory=lambda: service_registry(settings, environ=small))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def test_quota_exceeded_is_402_and_a_cancel_gives_the_images_back(two_image_client):
    client = two_image_client
    ada = await user(client)
    two = await client.post("/v1/generations", json={"prompt": "x", "size": "256x256", "n": 2}, headers=ada)
    assert two.status_code == 202
    over = await client.post("/v1/generations", json={"prompt": "x", "size": "256x256"}, headers=ada)
    assert over.status_code == 402
    assert over.json()["code"] == "quota_exceeded"
    assert (await client.post(f"/v1/generations/{two.json()['id']}/cancel", headers=ada)).status_code == 200
    after = await client.post("/v1/generations", json={"prompt": "x", "size": "256x256"}, headers=ada)
    assert after.status_code == 202


def sse_events(text: str) -> list[tuple[str, str]]:
    events = []
    for block in text.replace("\r\n", "\n").strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
        events.append((fields.get("event", "message"), fields.get("data", "")))
    return events


async def test_events_stream_progress_then_the_terminal_event(client):
    ada = await user(client)
    created = (
        await client.post("/v1/generations", json={"prompt": "x", "size": "256x256"}, headers=ada)
    ).json()

    async def scenario(http: httpx.AsyncClient) -> httpx.Response:
        stream = asyncio.create_task(http.get(f"/v1/generations/{created['id']}/events", headers=ada))
        await asyncio.sleep(0.2)  # not a threshold: the events are the same whenever the stream starts
        await finish(client, created["id"])
        return await stream  # it ends by itself after the terminal event

    response = in_app(client, scenario)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[0] == "progress", response.text
    assert names[-1] == "succeeded"
    assert set(names[:-1]) == {"progress"}
    assert json.loads(events[0][1])["status"] in ("queued", "running")
    assert json.loads(events[-1][1])["images"][0]["index"] == 0


async def test_events_of_a_finished_generation_end_at_once(client):
    ada = await user(client)
    created = (
        await client.post("/v1/generations", json={"prompt": "x", "size": "256x256"}, headers=ada)
    ).json()
    await client.post(f"/v1/generations/{created['id']}/cancel", headers=ada)
    response = await client.get(f"/v1/generations/{created['id']}/events", headers=ada)
    events = sse_events(response.text)
    assert [name for name, _ in events] == ["canceled"]
    assert json.loads(events[0][1])["status"] == "canceled"


@pytest.fixture
async def worker_client(settings, make_app) -> AsyncIterator[AsyncTestClient[Litestar]]:  # type: ignore[no-untyped-def]
    from entrypoints.http.embedded_worker import embedded_worker_lifespan

    async with AsyncTestClient(
        app=make_app(extra_lifespans=[embedded_worker_lifespan(settings)])
    ) as test_client:
        yield test_client


async def test_with_the_embedded_worker_a_generation_renders_and_downloads(worker_client):
    """End to end in one process: the real render job and renderer, through the memory queue."""
    client = worker_client
    ada = await user(client)
    response = await client.post(
        "/v1/generations",
        json={"prompt": "a lighthouse at dusk", "size": "256x256", "n": 2, "seed": 7},
        headers={**ada, "Prefer": "wait=60"},
    )
    assert response.status_code == 200, response.text
    done = response.json()
    assert done["status"] == "succeeded"
    for image in done["images"]:
        link = urlsplit(image["url"])
        download = await client.get(f"{link.path}?{link.query}")
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == image["sha256"]
        assert len(download.content) == image["bytes"]
        with Image.open(io.BytesIO(download.content)) as png:
            assert (png.format, png.size) == ("PNG", (256, 256))
    events = sse_events((await client.get(f"/v1/generations/{done['id']}/events", headers=ada)).text)
    assert [name for name, _ in events] == ["succeeded"]


async def test_a_write_only_key_gets_202_without_waiting(client):
    ada = await user(client)
    created = await client.post(
        "/v1/api-keys", json={"name": "writer", "scopes": ["generations:write"]}, headers=ada
    )
    writer = bearer(created.json()["key"])
    response = await client.post(
        "/v1/generations", json={"prompt": "x", "size": "256x256"}, headers={**writer, "Prefer": "wait=5"}
    )
    assert response.status_code == 202, response.text
    assert "preference-applied" not in response.headers
    assert len(await created_ids(client, ada)) == 1
