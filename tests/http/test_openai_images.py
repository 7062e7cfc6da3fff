"""`POST /v1/images/generations` on the in-memory wiring: OpenAI's request and answer shapes, its
error body on every failure of this path (and only there), the default size, and the deadline.

The end-to-end proof with the official `openai` client is tests/e2e/test_openai_client.py.
"""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image

from core.billing.plans import Plan, PlanRateLimit
from core.generations import generation as lifecycle
from core.ports import Clock, Database
from entrypoints.http.app import create_app
from entrypoints.http.routes.openai_images import default_size
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import settings_from_mapping
from tests.support.accounts import bearer, login, register

PATH = "/v1/images/generations"
BLOCKED_TERM = "forbidden-thing"


@pytest.fixture
def environ(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    terms = tmp_path / "blocked.txt"
    terms.write_text(f"{BLOCKED_TERM}\n")
    return {**environ, "PICTOR_BLOCKED_TERMS_FILE": str(terms)}


@pytest.fixture
async def worker_client(settings, make_app) -> AsyncIterator[AsyncTestClient[Litestar]]:  # type: ignore[no-untyped-def]
    from entrypoints.http.embedded_worker import embedded_worker_lifespan

    async with AsyncTestClient(app=make_app(extra_lifespans=[embedded_worker_lifespan(settings)])) as client:
        yield client


@pytest.fixture
async def impatient_client(environ: dict[str, str]) -> AsyncIterator[AsyncTestClient[Litestar]]:
    """No worker, and a one-second wait: every generation is still queued at the deadline."""
    from entrypoints.wiring import service_registry

    short = {**environ, "PICTOR_GENERATION_WAIT_MAX_SECONDS": "1"}
    settings = settings_from_mapping(short)
    app = create_app(settings, registry_factory=lambda: service_registry(settings, environ=short))
    async with AsyncTestClient(app=app) as client:
        yield client


async def api_key(client: AsyncTestClient[Litestar], scopes: list[str] | None = None) -> dict[str, str]:
    await register(client, "ada@example.com")
    session = bearer(await login(client, "ada@example.com"))
    body: dict[str, Any] = {"name": "openai"}
    if scopes is not None:
        body["scopes"] = scopes
    created = await client.post("/v1/api-keys", json=body, headers=session)
    assert created.status_code == 201, created.text
    return bearer(created.json()["key"])


async def generation_ids(
    client: AsyncTestClient[Litestar] | httpx.AsyncClient, headers: dict[str, str]
) -> list[str]:
    listed = await client.get("/v1/generations", headers=headers)
    assert listed.status_code == 200, listed.text
    return [g["id"] for g in listed.json()["data"]]


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def openai_error(response: Any) -> dict[str, Any]:
    """The OpenAI error body, checked for its exact shape (and for not being a problem+json)."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"message", "type", "param", "code"}, error
    assert isinstance(error["message"], str) and error["message"]
    return dict(error)


async def test_urls_of_rendered_pngs_with_the_worker(worker_client):
    client = worker_client
    key = await api_key(client)
    response = await client.post(
        PATH,
        json={
            "model": "pictor",
            "prompt": "  a lighthouse at dusk ",
            "n": 2,
            "size": "256x256",
            "response_format": "url",
            "user": "end-user-7",
            "quality": "standard",
            "style": "vivid",
            "moderation": "auto",  # a field Pictor does not know: ignored
        },
        headers=key,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["created"], int)
    assert len(body["data"]) == 2
    for image in body["data"]:
        assert set(image) == {"url", "revised_prompt"}
        assert image["revised_prompt"] == "a lighthouse at dusk"
        link = urlsplit(image["url"])
        download = await client.get(f"{link.path}?{link.query}")
        assert download.status_code == 200
        assert png_size(download.content) == (256, 256)
    [generation_id] = await generation_ids(client, key)
    stored = (await client.get(f"/v1/generations/{generation_id}", headers=key)).json()
    assert (stored["status"], stored["style"]) == ("succeeded", "digital-art")


async def test_b64_json_is_the_stored_png(worker_client):
    client = worker_client
    key = await api_key(client)
    response = await client.post(
        PATH, json={"prompt": "a red fox", "size": "256x256", "response_format": "b64_json"}, headers=key
    )
    assert response.status_code == 200, response.text
    [image] = response.json()["data"]
    assert "url" not in image
    data = base64.b64decode(image["b64_json"], validate=True)
    assert png_size(data) == (256, 256)
    [generation_id] = await generation_ids(client, key)
    stored = (await client.get(f"/v1/generations/{generation_id}", headers=key)).json()
    link = urlsplit(stored["images"][0]["url"])
    assert (await client.get(f"{link.path}?{link.query}")).content == data


async def test_a_missing_or_invalid_credential_is_401_in_openai_shape(client):
    for headers in ({}, bearer("pk_live_not_a_real_key")):
        response = await client.post(PATH, json={"prompt": "a cat"}, headers=headers)
        assert response.status_code == 401
        error = openai_error(response)
        assert error["param"] is None
        assert (error["type"], error["code"]) == ("authentication_error", "unauthenticated")
    # Elsewhere errors stay RFC 9457 problems.
    other = await client.post("/v1/generations", json={"prompt": "a cat"})
    assert other.status_code == 401
    assert other.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"prompt": "a cat", "size": "300x300"}, "size"),
        ({"prompt": "a cat", "size": "1024x1024"}, "size"),  # over the free plan's 768x768
        ({"prompt": "a cat", "n": 5}, "n"),
        ({"prompt": "   "}, "prompt"),
        ({"prompt": "a cat", "style": "baroque"}, "style"),
        ({"prompt": "a cat", "response_format": "png"}, "response_format"),
    ],
)
async def test_invalid_requests_are_400_naming_the_field_and_create_nothing(client, body, param):
    key = await api_key(client)
    response = await client.post(PATH, json=body, headers=key)
    assert response.status_code == 400, response.text
    error = openai_error(response)
    assert error["param"] == param
    assert (error["type"], error["code"]) == ("invalid_request_error", "validation_failed")
    assert await generation_ids(client, key) == []


async def test_a_malformed_body_is_400(client):
    key = await api_key(client)
    for body in ({"size": "256x256"}, {"prompt": "a cat", "n": "two"}):
        response = await client.post(PATH, json=body, headers=key)
        assert response.status_code == 400, response.text
        assert openai_error(response)["code"] == "validation_failed"


async def test_a_blocked_prompt_is_400_prompt_rejected(client):
    key = await api_key(client)
    response = await client.post(PATH, json={"prompt": f"a {BLOCKED_TERM} at noon"}, headers=key)
    assert response.status_code == 400
    error = openai_error(response)
    assert (error["type"], error["code"]) == ("invalid_request_error", "prompt_rejected")


async def test_a_key_without_read_scope_is_403_before_anything_is_created(client):
    writer = await api_key(client, scopes=["generations:write"])
    response = await client.post(PATH, json={"prompt": "a cat"}, headers=writer)
    assert response.status_code == 403
    error = openai_error(response)
    assert (error["type"], error["code"]) == ("permission_error", "insufficient_scope")
    session = bearer(await login(client, "ada@example.com"))
    assert await generation_ids(client, session) == []


async def test_a_generation_unfinished_at_the_deadline_is_canceled_uncharged_and_504(impatient_client):
    client = impatient_client
    key = await api_key(client)
    response = await client.post(PATH, json={"prompt": "a slow cat"}, headers=key)
    assert response.status_code == 504
    assert response.headers["x-should-retry"] == "false"
    error = openai_error(response)
    assert (error["type"], error["code"]) == ("server_error", "timeout")
    [generation_id] = await generation_ids(client, key)
    stored = (await client.get(f"/v1/generations/{generation_id}", headers=key)).json()
    # Canceled, and with no size given, the largest square size of the free plan (768x768).
    assert (stored["status"], stored["size"]) == ("canceled", "768x768")
    session = bearer(await login(client, "ada@example.com"))
    usage = (await client.get("/v1/usage", headers=session)).json()
    assert usage["images_used"] == 0


async def while_waiting(
    client: AsyncTestClient[Litestar], key: dict[str, str], act: Callable[[str], Awaitable[None]]
) -> httpx.Response:
    """POST an image request and, while it waits for its generation (no worker runs here), `act`
    on that generation's id; the answer once the request ends. Runs on the app's own loop so the
    two proceed concurrently."""

    async def scenario() -> httpx.Response:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http:
            waiting = asyncio.create_task(
                http.post(PATH, json={"prompt": "a cat", "size": "256x256"}, headers=key)
            )
            while not (ids := await generation_ids(http, key)):
                if waiting.done():  # it ended without creating one: show why
                    raise AssertionError((await waiting).text)
                await asyncio.sleep(0.01)
            await act(ids[0])
            return await waiting

    return client.blocking_portal.call(scenario)


async def test_a_generation_canceled_while_waiting_is_409_not_retried(client):
    key = await api_key(client)

    async def cancel(generation_id: str) -> None:
        transport = httpx.ASGITransport(app=client.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local") as http:
            canceled = await http.post(f"/v1/generations/{generation_id}/cancel", headers=key)
            assert canceled.status_code == 200, canceled.text

    response = await while_waiting(client, key, cancel)
    assert response.status_code == 409
    assert response.headers["x-should-retry"] == "false"
    assert openai_error(response)["code"] == "invalid_state"


async def test_a_failed_render_is_500_with_its_error_code(client):
    key = await api_key(client)

    async def fail(generation_id: str) -> None:
        async with svcs.Container(registry_of(client.app)) as container:
            database, clock = await container.aget(Database, Clock)
        async with database.unit_of_work() as uow:
            current = await uow.generations.get_for_update(generation_id)
            assert current is not None
            failed = lifecycle.fail(current, "render_attempts_exhausted", "the renderer gave up", clock.now())
            await uow.generations.update(failed)
            await uow.commit()

    response = await while_waiting(client, key, fail)
    assert response.status_code == 500
    error = openai_error(response)
    assert (error["type"], error["code"], error["message"]) == (
        "server_error",
        "render_attempts_exhausted",
        "the renderer gave up",
    )


def plan(max_image_pixels: int) -> Plan:
    return Plan(
        code="p",
        name="P",
        monthly_price_cents=0,
        currency="USD",
        monthly_images=10,
        rate_limit=PlanRateLimit(requests=10, per_seconds=60, burst=10),
        max_concurrent_jobs=1,
        max_image_pixels=max_image_pixels,
    )


@pytest.mark.parametrize(
    ("max_image_pixels", "size"),
    [
        (4096 * 4096, "1024x1024"),  # OpenAI's default, never larger
        (1024 * 1024, "1024x1024"),
        (1024 * 1024 - 1, "768x768"),
        (768 * 768, "768x768"),
        (600 * 600, "512x512"),
        (100 * 100, "256x256"),  # nothing fits: the smallest, which validation then refuses
    ],
)
def test_the_default_size_is_1024_or_the_largest_square_the_plan_allows(max_image_pixels, size):
    assert default_size(plan(max_image_pixels)) == size
