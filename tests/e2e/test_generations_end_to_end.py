"""Issue 5 "Done when": a user submits a generation to real `pictor` processes, follows its SSE
progress to `succeeded`, and downloads every image through its signed URL, bytes matching the
recorded sha256. Three set-ups:

- `s3`: PostgreSQL + Valkey (SAQ on Valkey) + S3 (moto), `pictor serve` and a separate `pictor worker`;
- `files`: PostgreSQL (SAQ on PostgreSQL) + local files, `pictor serve` and a separate `pictor worker`;
- `embedded`: `pictor serve` with no URLs at all (embedded PostgreSQL, files, in-process worker).

moto does not check request signatures (see tests/integration/test_s3_presigned.py), so a tampered
presigned S3 link is not refused there; the tampered-link `403` is checked on Pictor's own
`/v1/files` links (the `files` and `embedded` set-ups).
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import httpx
import pytest
from PIL import Image

from adapters.postgres.migrations import apply_migrations
from tests.e2e.processes import PictorProcess, clean_environ, free_port
from tests.support.accounts import PASSWORD
from tests.support.plans import roomy_plans_file
from tests.support.services import unique_name

pytestmark = pytest.mark.e2e

RENDER_STEPS = 6  # a few progress events, still fast
TERMINAL = ("succeeded", "failed", "canceled")


@dataclass
class Deployment:
    """Running `pictor` processes and where to reach them; `stop()` ends them all."""

    base_url: str
    processes: list[PictorProcess] = field(default_factory=list)

    def output(self) -> str:
        return "\n".join(f"--- {p.log_path.name}\n{p.output()}" for p in self.processes)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.terminate(timeout=60)


def plans_file(tmp_path: Path) -> str:
    return roomy_plans_file(tmp_path, monthly_images=100, max_concurrent_jobs=4, max_image_pixels=1024 * 1024)


def start_serve(env: dict[str, str], tmp_path: Path, deployment: Deployment, name: str = "serve") -> None:
    server = PictorProcess(["serve"], clean_environ(env), tmp_path / f"{name}.log")
    deployment.processes.append(server)
    server.wait_ready(deployment.base_url, timeout=90)


def start_worker(env: dict[str, str], tmp_path: Path, deployment: Deployment, name: str) -> PictorProcess:
    worker = PictorProcess(["worker"], clean_environ(env), tmp_path / f"{name}.log")
    deployment.processes.append(worker)
    return worker


def api_key(base_url: str, email: str = "ada@example.com") -> dict[str, str]:
    """Register, log in, create an API key; the Authorization header that carries it."""
    registered = httpx.post(f"{base_url}/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{base_url}/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    created = httpx.post(
        f"{base_url}/v1/api-keys",
        json={"name": "e2e"},
        headers={"Authorization": f"Bearer {login.json()['token']}"},
    )
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


def sse_events(base_url: str, generation_id: str, headers: dict[str, str]) -> Iterator[tuple[str, Any]]:
    """The (event, data) pairs of the generation's event stream, as they arrive, until it ends."""
    event, data = "message", ""
    with httpx.stream(
        "GET",
        f"{base_url}/v1/generations/{generation_id}/events",
        headers=headers,
        timeout=httpx.Timeout(10, read=120),
    ) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.partition(":")[2].strip()
            elif line.startswith("data:"):
                data += line.partition(":")[2].strip()
            elif line == "" and data:
                yield event, json.loads(data)
                event, data = "message", ""


def follow_to_the_end(base_url: str, generation_id: str, headers: dict[str, str]) -> list[tuple[str, Any]]:
    events = list(sse_events(base_url, generation_id, headers))
    assert events, "the stream ended without an event"
    return events


def tampered(url: str) -> str:
    """The same link with one character of its signature changed."""
    parts = urlsplit(url)
    query = {name: values[0] for name, values in parse_qs(parts.query).items()}
    signature = query["sig"]
    query["sig"] = signature[:-1] + ("A" if signature[-1] != "A" else "B")
    return urlunsplit(parts._replace(query=urlencode(query)))


def image_keys(user_id: str, generation_id: str, n: int) -> list[str]:
    """Where the issue says a generation's images go in the BlobStore."""
    return [f"generations/{user_id}/{generation_id}/{index}.png" for index in range(n)]


def stored_files(root: Path) -> list[str]:
    """The keys under a file store's root (its `.meta` sidecars left out)."""
    return sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and ".meta" not in p.parts
    )


def submit_watch_and_download(deployment: Deployment, *, pictor_links: bool) -> dict[str, Any]:
    """The user's journey; returns the finished generation, with `user_id` added."""
    base_url = deployment.base_url
    headers = api_key(base_url)
    me = httpx.get(f"{base_url}/v1/me", headers=headers, timeout=30)
    assert me.status_code == 200, me.text
    created = httpx.post(
        f"{base_url}/v1/generations",
        json={"prompt": "a lighthouse at dusk", "size": "256x256", "n": 2, "seed": 11},
        headers=headers,
        timeout=30,
    )
    assert created.status_code == 202, created.text
    generation_id = created.json()["id"]
    assert created.headers["location"] == f"/v1/generations/{generation_id}"

    events = follow_to_the_end(base_url, generation_id, headers)
    names = [name for name, _ in events]
    assert names[-1] == "succeeded", (events, deployment.output())
    assert names[0] == "progress" and set(names[:-1]) == {"progress"}, names
    progress = [data["progress"] for name, data in events if name == "progress"]
    assert progress == sorted(progress), progress  # never goes backwards
    done = events[-1][1]
    assert (done["id"], done["status"], done["progress"]) == (generation_id, "succeeded", 1.0)

    again = httpx.get(f"{base_url}/v1/generations/{generation_id}", headers=headers, timeout=30)
    assert again.status_code == 200
    assert [image["sha256"] for image in again.json()["images"]] == [i["sha256"] for i in done["images"]]

    assert [image["index"] for image in done["images"]] == [0, 1]
    for image in done["images"]:
        download = httpx.get(image["url"], timeout=30)  # no credentials: the link is the permission
        assert download.status_code == 200, download.text
        assert hashlib.sha256(download.content).hexdigest() == image["sha256"]
        assert len(download.content) == image["bytes"]
        assert download.headers["content-type"] == image["content_type"] == "image/png"
        with Image.open(io.BytesIO(download.content)) as png:
            assert (png.format, png.size) == ("PNG", (256, 256))
        if pictor_links:
            assert urlsplit(image["url"]).path.startswith("/v1/files/")
            refused = httpx.get(tampered(image["url"]), timeout=30)
            assert refused.status_code == 403, refused.text
            assert refused.json()["code"] == "invalid_signature"
            # A valid signature on another key is no permission either.
            other = image["url"].replace(f"/{image['index']}.png", f"/{1 - image['index']}.png")
            assert other != image["url"]
            assert httpx.get(other, timeout=30).status_code == 403
        else:
            assert "X-Amz-Signature=" in image["url"], image["url"]
    assert done["images"][0]["sha256"] != done["images"][1]["sha256"]
    return {**done, "user_id": me.json()["id"]}


def shared_environ(tmp_path: Path, port: int) -> dict[str, str]:
    return {
        "PICTOR_DATA_DIR": str(tmp_path / "var"),
        "PICTOR_PORT": str(port),
        "PICTOR_PLANS_FILE": plans_file(tmp_path),
        "PICTOR_RENDER_STEPS": str(RENDER_STEPS),
        "PICTOR_RENDER_WORKERS": "1",
        "PICTOR_WORKER_CONCURRENCY": "2",
        "PICTOR_DB_POOL_MIN": "1",
        "PICTOR_DB_POOL_MAX": "4",
        "PICTOR_LOG_LEVEL": "warning",
    }


@dataclass
class SetUp:
    """What a set-up starts with, and how to list the keys its BlobStore holds."""

    env: dict[str, str]
    separate_worker: bool
    pictor_links: bool  # signed by Pictor and served by /v1/files (else presigned by S3)
    stored_keys: Callable[[], list[str]]


def s3_setup(request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]) -> SetUp:
    """PostgreSQL, Valkey (cache and SAQ queue), S3 on moto."""
    import boto3

    postgres_url = request.getfixturevalue("postgres_url")
    valkey_url = request.getfixturevalue("valkey_url")
    moto_endpoint = request.getfixturevalue("moto_endpoint")
    bucket = request.getfixturevalue("s3_bucket")
    asyncio.run(apply_migrations(postgres_url))
    boto = boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        aws_access_key_id="test",
        aws_secret_access_key="test",
        region_name="us-east-1",
    )

    def stored_keys() -> list[str]:
        listed = boto.list_objects_v2(Bucket=bucket).get("Contents", [])
        return sorted(str(item["Key"]).removeprefix("pictor/") for item in listed)

    env |= {
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_QUEUE_URL": valkey_url,
        "PICTOR_NAMESPACE": unique_name("g2e").replace("_", "-"),
        "PICTOR_STORAGE_URL": f"s3://{bucket}/pictor",
        "PICTOR_S3_ENDPOINT": moto_endpoint,
        "PICTOR_S3_REGION": "us-east-1",
        "PICTOR_S3_ACCESS_KEY_ID": "test",
        "PICTOR_S3_SECRET_ACCESS_KEY": "test",
        "PICTOR_S3_ALLOW_HTTP": "true",
        "PICTOR_SECRET_URL_SIGNING_KEY": "e2e-signing-key",
        "PICTOR_EMBEDDED_WORKER": "false",  # the separate worker renders
    }
    return SetUp(env, separate_worker=True, pictor_links=False, stored_keys=stored_keys)


def files_setup(request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]) -> SetUp:
    """PostgreSQL for data and the SAQ queue, local files, no Valkey."""
    postgres_url = request.getfixturevalue("postgres_url")
    asyncio.run(apply_migrations(postgres_url))
    blobs = tmp_path / "blobs"
    env |= {
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": "memory://",
        "PICTOR_QUEUE_URL": postgres_url,
        "PICTOR_NAMESPACE": unique_name("g2e").replace("_", "-"),
        "PICTOR_STORAGE_URL": blobs.as_uri(),
        "PICTOR_SECRET_URL_SIGNING_KEY": "e2e-signing-key",  # serve signs what the worker stores
        "PICTOR_EMBEDDED_WORKER": "false",
    }
    return SetUp(env, separate_worker=True, pictor_links=True, stored_keys=lambda: stored_files(blobs))


def embedded_setup(request: pytest.FixtureRequest, tmp_path: Path, env: dict[str, str]) -> SetUp:
    """No database, cache, queue or storage URL at all: what `just serve` runs."""
    blobs = Path(env["PICTOR_DATA_DIR"]) / "blobs"
    return SetUp(env, separate_worker=False, pictor_links=True, stored_keys=lambda: stored_files(blobs))


SET_UPS = {"s3": s3_setup, "files": files_setup, "embedded": embedded_setup}


@pytest.mark.parametrize("set_up", list(SET_UPS))
def test_submit_watch_progress_and_download_every_image(
    set_up: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    port = free_port()
    chosen = SET_UPS[set_up](request, tmp_path, shared_environ(tmp_path, port))
    deployment = Deployment(f"http://127.0.0.1:{port}")
    try:
        start_serve(chosen.env, tmp_path, deployment)
        if chosen.separate_worker:
            start_worker(chosen.env, tmp_path, deployment, "worker")
        done = submit_watch_and_download(deployment, pictor_links=chosen.pictor_links)
        assert chosen.stored_keys() == image_keys(done["user_id"], done["id"], 2)
    finally:
        deployment.stop()
