"""POST /v1/uploads on the in-memory wiring: formats by content with their true dimensions,
refusals (415, 413, 422), metadata stripped from the stored bytes, and who may upload."""

from __future__ import annotations

import hashlib
import io
import random
from collections.abc import AsyncIterator

import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient
from PIL import Image

from core.ports import BlobStore, Database
from entrypoints.http.app import create_app
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import settings_from_mapping
from tests.support.accounts import bearer, login, register

ORIENTATION = 0x0112
MAKE = 0x010F


def image_bytes(fmt: str, size: tuple[int, int] = (64, 48), **save: object) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (200, 40, 90)).save(out, format=fmt, **save)
    return out.getvalue()


def exif_bytes(orientation: int = 6) -> bytes:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    exif[MAKE] = "Spy Camera"
    return exif.tobytes()


async def user_token(client: AsyncTestClient[Litestar], email: str = "ada@example.com") -> str:
    await register(client, email)
    return await login(client, email)


async def upload(
    client: AsyncTestClient[Litestar], token: str, data: bytes, name: str = "picture.bin"
) -> tuple[int, dict[str, object]]:
    response = await client.post(
        "/v1/uploads", files={"file": (name, data, "application/octet-stream")}, headers=bearer(token)
    )
    return response.status_code, response.json()


async def stored_bytes(client: AsyncTestClient[Litestar], user_id: str, upload_id: str) -> bytes:
    async with svcs.Container(registry_of(client.app)) as container:
        database, store = await container.aget(Database, BlobStore)
        async with database.unit_of_work() as uow:
            record = await uow.uploads.get_for_user(user_id, upload_id)
        assert record is not None
        blob = await store.get(record.blob_key)
        assert hashlib.sha256(blob.data).hexdigest() == record.sha256
        return blob.data


async def me(client: AsyncTestClient[Litestar], token: str) -> str:
    return str((await client.get("/v1/me", headers=bearer(token))).json()["id"])


@pytest.mark.parametrize(
    ("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")]
)
async def test_png_jpeg_and_webp_are_accepted_with_their_true_dimensions(client, fmt, content_type):
    token = await user_token(client)
    # The name and declared type lie: the content decides.
    status, body = await upload(client, token, image_bytes(fmt, (70, 30)), name="not-an-image.gif")
    assert status == 201, body
    assert body["content_type"] == content_type
    assert (body["width"], body["height"]) == (70, 30)
    data = await stored_bytes(client, await me(client, token), str(body["id"]))
    assert body["bytes"] == len(data)
    with Image.open(io.BytesIO(data)) as stored:
        assert stored.size == (70, 30)
        assert Image.MIME[stored.format] == content_type  # type: ignore[index]


async def test_exif_is_stripped_and_the_orientation_applied(client):
    token = await user_token(client)
    sent = image_bytes("JPEG", (60, 20), exif=exif_bytes(orientation=6))
    status, body = await upload(client, token, sent)
    assert status == 201, body
    assert (body["width"], body["height"]) == (20, 60)  # rotated upright, as the tag asked
    data = await stored_bytes(client, await me(client, token), str(body["id"]))
    assert b"Spy Camera" not in data
    with Image.open(io.BytesIO(data)) as stored:
        assert not stored.getexif()
        assert "exif" not in stored.info


async def test_gif_and_non_images_are_415(client):
    token = await user_token(client)
    for data in (image_bytes("GIF"), b"%PDF-1.7 not an image at all"):
        status, body = await upload(client, token, data, name="x.png")
        assert status == 415, body
        assert body["code"] == "unsupported_media_type"


async def test_a_corrupt_image_is_422(client):
    token = await user_token(client)
    truncated = image_bytes("PNG", (300, 300))[:120]
    status, body = await upload(client, token, truncated)
    assert status == 422, body
    assert body["code"] == "validation_failed"
    assert body["errors"][0]["code"] == "corrupt_image"


async def test_the_file_part_is_required_alone(client):
    token = await user_token(client)
    png = image_bytes("PNG")
    wrong_name = {"other": ("a.png", png, "image/png")}
    two_files = [("file", ("a.png", png)), ("file", ("b.png", png))]
    for files in (wrong_name, two_files):
        response = await client.post("/v1/uploads", files=files, headers=bearer(token))
        assert response.status_code == 422, response.text
        assert response.json()["errors"][0]["field"] == "file"


async def test_a_json_body_is_415(client):
    token = await user_token(client)
    response = await client.post("/v1/uploads", json={"file": "x"}, headers=bearer(token))
    assert response.status_code == 415
    assert response.json()["code"] == "unsupported_media_type"


async def test_multipart_with_only_the_session_cookie_is_refused(client):
    """A cross-site form can post multipart with the cookie; it cannot set Authorization."""
    await register(client, "ada@example.com")
    response = await client.post(
        "/v1/auth/login", json={"email": "ada@example.com", "password": "correct horse battery staple"}
    )
    assert response.status_code == 200
    assert client.cookies.get("pictor_session")
    refused = await client.post("/v1/uploads", files={"file": ("a.png", image_bytes("PNG"))})
    assert refused.status_code == 415
    assert refused.json()["code"] == "unsupported_media_type"


async def test_uploads_need_a_credential_with_generations_write(client):
    png = image_bytes("PNG")
    unknown = await client.post("/v1/uploads", files={"file": ("a.png", png)}, headers=bearer("nope"))
    assert unknown.status_code == 401
    token = await user_token(client)
    created = await client.post(
        "/v1/api-keys", json={"name": "read only", "scopes": ["generations:read"]}, headers=bearer(token)
    )
    assert created.status_code == 201, created.text
    status, body = await upload(client, str(created.json()["key"]), png)
    assert status == 403
    assert body["code"] == "insufficient_scope"


@pytest.fixture
async def small_limits_client(environ: dict[str, str]) -> AsyncIterator[AsyncTestClient[Litestar]]:
    from entrypoints.wiring import service_registry

    small = {**environ, "PICTOR_UPLOAD_MAX_BYTES": "4000", "PICTOR_UPLOAD_MAX_PIXELS": str(100 * 100)}
    settings = settings_from_mapping(small)
    app = create_app(settings, registry_factory=lambda: service_registry(settings, environ=small))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


def noisy_png(size: tuple[int, int]) -> bytes:
    """A PNG that does not compress: its byte size grows with its pixels."""
    out = io.BytesIO()
    noise = random.Random(7).randbytes(size[0] * size[1] * 3)
    Image.frombytes("RGB", size, noise).save(out, format="PNG")
    return out.getvalue()


async def test_over_the_byte_or_pixel_limit_is_413(small_limits_client):
    client = small_limits_client
    token = await user_token(client)
    within = noisy_png((20, 20))
    assert len(within) < 4000
    status, body = await upload(client, token, within)
    assert status == 201, body

    too_many_bytes = noisy_png((60, 60))
    assert 4000 < len(too_many_bytes) < 4000 + 64 * 1024  # past the file limit, within the body's
    status, body = await upload(client, token, too_many_bytes)
    assert status == 413, body
    assert body["code"] == "payload_too_large"
    assert body["errors"][0]["code"] == "too_many_bytes"

    way_too_large = noisy_png((200, 200))
    assert len(way_too_large) > 4000 + 64 * 1024  # refused while reading the body
    status, body = await upload(client, token, way_too_large)
    assert status == 413, body
    assert body["code"] == "payload_too_large"

    too_many_pixels = image_bytes("PNG", (101, 100))  # flat colour: few bytes, many pixels
    assert len(too_many_pixels) < 4000
    status, body = await upload(client, token, too_many_pixels)
    assert status == 413, body
    assert body["errors"][0]["code"] == "too_many_pixels"


async def test_an_upload_is_read_only_through_its_owner(client):
    ada = await user_token(client, "ada@example.com")
    bob = await user_token(client, "bob@example.com")
    status, body = await upload(client, ada, image_bytes("PNG"))
    assert status == 201
    async with svcs.Container(registry_of(client.app)) as container:
        database = await container.aget(Database)
        async with database.unit_of_work() as uow:
            assert await uow.uploads.get_for_user(await me(client, bob), str(body["id"])) is None
            assert await uow.uploads.get_for_user(await me(client, ada), str(body["id"])) is not None
