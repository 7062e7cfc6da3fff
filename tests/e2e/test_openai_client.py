"""The official `openai` client against a running `pictor serve`, with only `base_url` changed.

One process on in-memory database, queue and cache with its in-process worker and the built-in
renderer, images in local files: register and mint an API key over HTTP, then
`client.images.generate(...)` with `response_format` `url` and `b64_json`, and the client's own
exceptions for a bad key, a bad size and a blocked prompt.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator

import httpx
import openai
import pytest
from PIL import Image

from tests.e2e.processes import PictorProcess, clean_environ, free_port

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough passphrase"
BLOCKED_TERM = "forbidden-thing"


class Pictor:
    def __init__(self, base_url: str, api_key: str) -> None:
        self.base_url = base_url
        self.api_key = api_key

    def client(self, api_key: str | None = None) -> openai.OpenAI:
        # No retries: a failure must show on the first answer, not be hidden by a second try.
        return openai.OpenAI(
            base_url=f"{self.base_url}/v1", api_key=api_key or self.api_key, max_retries=0, timeout=120
        )


@pytest.fixture(scope="module")
def pictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pictor]:
    tmp_path = tmp_path_factory.mktemp("openai")
    terms = tmp_path / "blocked.txt"
    terms.write_text(f"{BLOCKED_TERM}\n")
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_PORT": str(port),
            "PICTOR_DATABASE_URL": "memory://",
            "PICTOR_QUEUE_URL": "memory://",  # so `pictor serve` runs the worker in its process
            "PICTOR_VALKEY_URL": "memory://",
            "PICTOR_STORAGE_URL": (tmp_path / "blobs").as_uri(),
            "PICTOR_BLOCKED_TERMS_FILE": str(terms),
            "PICTOR_LOG_LEVEL": "warning",
        }
    )
    server = PictorProcess(["serve"], env, tmp_path / "serve.log")
    try:
        server.wait_ready(base_url, timeout=60)
        yield Pictor(base_url, _api_key(base_url))
    finally:
        server.terminate()


def _api_key(base_url: str) -> str:
    with httpx.Client(base_url=base_url, timeout=30) as http:
        email = "grace@example.com"
        registered = http.post("/v1/auth/register", json={"email": email, "password": PASSWORD})
        assert registered.status_code == 201, registered.text
        login = http.post("/v1/auth/login", json={"email": email, "password": PASSWORD})
        assert login.status_code == 200, login.text
        created = http.post(
            "/v1/api-keys",
            json={"name": "openai client"},
            headers={"Authorization": f"Bearer {login.json()['token']}"},
        )
        assert created.status_code == 201, created.text
        return str(created.json()["key"])


def _png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def test_images_generate_answers_urls_of_pngs(pictor: Pictor) -> None:
    result = pictor.client().images.generate(
        model="pictor", prompt="a lighthouse at dusk", n=2, size="256x256", response_format="url"
    )
    assert result.data is not None and len(result.data) == 2
    for image in result.data:
        assert image.url is not None and image.b64_json is None
        assert image.revised_prompt == "a lighthouse at dusk"
        download = httpx.get(image.url, timeout=30)  # the signed link, as given
        assert download.status_code == 200
        assert _png_size(download.content) == (256, 256)


def test_images_generate_answers_b64_json_pngs(pictor: Pictor) -> None:
    result = pictor.client().images.generate(
        model="pictor", prompt="a red fox in snow", size="256x256", response_format="b64_json"
    )
    assert result.data is not None and len(result.data) == 1
    [image] = result.data
    assert image.b64_json is not None and image.url is None
    assert _png_size(base64.b64decode(image.b64_json, validate=True)) == (256, 256)


def test_an_invalid_key_raises_authentication_error(pictor: Pictor) -> None:
    with pytest.raises(openai.AuthenticationError) as caught:
        pictor.client(api_key="pk_live_not_a_real_key").images.generate(prompt="a cat", size="256x256")
    assert caught.value.status_code == 401
    assert caught.value.code == "unauthenticated"


@pytest.mark.parametrize("size", ["300x300", "1024x1024"])  # unknown; over the free plan's 768x768
def test_a_size_not_allowed_raises_bad_request(pictor: Pictor, size: str) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        pictor.client().images.generate(prompt="a cat", size=size)  # type: ignore[arg-type]
    assert (caught.value.code, caught.value.param) == ("validation_failed", "size")


def test_a_blocked_prompt_raises_bad_request(pictor: Pictor) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        pictor.client().images.generate(prompt=f"a {BLOCKED_TERM} at noon", size="256x256")
    assert caught.value.code == "prompt_rejected"


def test_the_error_body_is_openais(pictor: Pictor) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        pictor.client().images.generate(prompt="a cat", n=9, size="256x256")
    assert caught.value.type == "invalid_request_error"
    assert caught.value.param == "n"
    body = caught.value.body  # the client keeps the `error` object of the answer
    assert isinstance(body, dict) and set(body) == {"message", "type", "param", "code"}
