"""Issue 7 "Done when": rotating a secret while requests run drops none of them and invalidates
nothing still valid.

`pictor serve --workers 2` (PostgreSQL for data and the SAQ queue, Valkey for sessions and caches,
local files, the worker in process, secrets generated in the default directory) serves a steady
stream of requests from several threads while `pictor secrets rotate` rotates `url_signing_key`,
`webhook_secret_key` and `metrics_token`. Every request must succeed: sessions stay logged in,
links signed before the rotation still download, fresh links move to the new key version (once
every process has read it), webhooks signed with secrets derived from the old master key still
verify, and secrets derived after it use the new one. No secret value ever shows in the server's
logs, in error bodies, in `pictor secrets list` or in `pictor check-config`.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg
import pytest
from standardwebhooks import Webhook

from adapters.postgres.migrations import apply_migrations
from tests.e2e.processes import PictorProcess, clean_environ, free_port
from tests.support.accounts import PASSWORD
from tests.support.plans import roomy_plans_file
from tests.support.services import unique_name

pytestmark = pytest.mark.e2e

ROTATED = ("url_signing_key", "webhook_secret_key", "metrics_token")
LOAD_THREADS = 4


def cli(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def kid(url: str) -> str:
    return parse_qs(urlsplit(url).query)["kid"][0]


class Receiver:
    """Webhook deliveries to 127.0.0.1, each answered 200 and kept (headers, raw body)."""

    def __init__(self) -> None:
        received: list[tuple[dict[str, str], bytes]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                received.append(({k.lower(): v for k, v in self.headers.items()}, body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, generation_id: str, guard: float = 60.0) -> tuple[dict[str, str], bytes]:
        deadline = time.monotonic() + guard  # only against a hang
        while time.monotonic() < deadline:
            for headers, body in list(self.received):
                if json.loads(body)["data"].get("id") == generation_id:
                    return headers, body
            time.sleep(0.05)
        raise AssertionError(f"no delivery for generation {generation_id}")


@dataclass
class Load:
    """Threads that keep using everything a rotation could break, recording every failure."""

    base_url: str
    session: str
    generation_id: str
    old_link: str
    old_sha256: str
    account_secret: str
    metrics_token: str
    stop: threading.Event = field(default_factory=threading.Event)
    failures: list[str] = field(default_factory=list)
    requests: int = 0
    fresh_kids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self) -> None:
        auth = {"Authorization": f"Bearer {self.session}"}
        # API calls share a connection; each link is downloaded over a new one, so the process that
        # checks a link is often not the one that signed it (as behind a load balancer).
        fresh_connections = httpx.Limits(max_keepalive_connections=0)
        with (
            httpx.Client(base_url=self.base_url, timeout=30) as client,
            httpx.Client(timeout=30, limits=fresh_connections) as links,
        ):
            rounds = 0
            while not self.stop.is_set():
                rounds += 1
                self._check(client.get("/v1/me", headers=auth), "me")
                old = links.get(self.old_link)
                self._check(old, "link signed before")
                if old.status_code == 200 and hashlib.sha256(old.content).hexdigest() != self.old_sha256:
                    self._fail("link signed before: other bytes")
                generation = client.get(f"/v1/generations/{self.generation_id}", headers=auth)
                self._check(generation, "generation")
                if generation.status_code == 200:
                    fresh = generation.json()["images"][0]["url"]
                    self._check(links.get(fresh), f"fresh link {kid(fresh)}")
                    with self.lock:
                        self.fresh_kids.append(kid(fresh))
                secret = client.get("/v1/webhook-secret", headers=auth)
                self._check(secret, "webhook secret")
                if secret.status_code == 200 and secret.json()["secret"] != self.account_secret:
                    self._fail("the account's webhook secret changed")
                if rounds % 10 == 1:  # a scrape is a large answer: now and then is enough
                    metrics = client.get(
                        "/metrics", headers={"Authorization": f"Bearer {self.metrics_token}"}
                    )
                    self._check(metrics, "metrics with the old token")

    def _check(self, response: httpx.Response, what: str) -> None:
        with self.lock:
            self.requests += 1
        if response.status_code != 200:
            self._fail(f"{what}: {response.status_code} {response.text[:200]}")

    def _fail(self, text: str) -> None:
        with self.lock:
            self.failures.append(text)

    def recent_kids(self, n: int) -> list[str]:
        with self.lock:
            return self.fresh_kids[-n:]


@pytest.fixture
def deployment(postgres_url: str, valkey_url: str, tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    asyncio.run(apply_migrations(postgres_url))
    port = free_port()
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path / "var"),
            "PICTOR_PORT": str(port),
            "PICTOR_HTTP_WORKERS": "2",
            "PICTOR_DATABASE_URL": postgres_url,
            "PICTOR_VALKEY_URL": valkey_url,
            "PICTOR_NAMESPACE": unique_name("rot").replace("_", "-"),
            "PICTOR_STORAGE_URL": (tmp_path / "blobs").as_uri(),
            "PICTOR_EMBEDDED_WORKER": "true",
            "PICTOR_SECRETS_CACHE_SECONDS": "1",
            "PICTOR_PLANS_FILE": roomy_plans_file(
                tmp_path, max_concurrent_jobs=8, max_image_pixels=1024 * 1024, requests=100_000
            ),
            "PICTOR_RENDER_STEPS": "2",
            "PICTOR_RENDER_WORKERS": "1",
            "PICTOR_WORKER_CONCURRENCY": "2",
            "PICTOR_DB_POOL_MIN": "1",
            "PICTOR_DB_POOL_MAX": "6",
            "PICTOR_WEBHOOKS_ALLOW_PRIVATE": "true",
            "PICTOR_OUTBOX_POLL_INTERVAL_SECONDS": "0.2",
            "PICTOR_LOG_LEVEL": "info",  # the logs are searched for secrets: let them say plenty
        }
    )
    server = PictorProcess(["serve"], env, tmp_path / "serve.log")
    try:
        server.wait_ready(f"http://127.0.0.1:{port}", timeout=90)
        yield f"http://127.0.0.1:{port}", env
    finally:
        server.terminate(timeout=60)
        (tmp_path / "serve.log.final").write_text(server.output())


def secret_values(secrets_dir: Path) -> set[str]:
    return {p.read_text().strip() for p in secrets_dir.rglob("*") if p.is_file()}


def generate(base_url: str, auth: dict[str, str], seed: int) -> dict[str, Any]:
    created = httpx.post(
        f"{base_url}/v1/generations",
        json={"prompt": "a lighthouse at dusk", "size": "256x256", "n": 1, "seed": seed},
        headers={**auth, "Prefer": "wait=60"},
        timeout=90,
    )
    assert created.status_code in (200, 202), created.text
    generation = created.json()
    deadline = time.monotonic() + 60  # only against a hang
    while generation["status"] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.1)
        url = f"{base_url}/v1/generations/{generation['id']}"
        generation = httpx.get(url, headers=auth, timeout=30).json()
    assert generation["status"] == "succeeded", generation
    return dict(generation)


async def key_versions(postgres_url: str, owner: str) -> list[tuple[str, bool]]:
    """(master key version, still current) of each webhook secret version of that owner kind."""
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT key_version, expires_at IS NULL FROM webhook_secrets"
            " WHERE owner = %s ORDER BY created_at",
            (owner,),
        )
        return [(str(v), bool(current)) for v, current in await cursor.fetchall()]


def test_rotating_secrets_under_load_drops_no_request_and_breaks_nothing_valid(
    deployment: tuple[str, dict[str, str]], postgres_url: str, tmp_path: Path
) -> None:
    base_url, env = deployment
    secrets_dir = tmp_path / "var" / "secrets"
    assert set(ROTATED) <= {p.name for p in secrets_dir.iterdir()}  # generated by serve
    assert {p.name for p in (secrets_dir / "url_signing_key").iterdir()} == {"1"}
    receiver = Receiver()

    assert httpx.post(f"{base_url}/v1/auth/register", json={"email": "ada@example.com", "password": PASSWORD})
    login = httpx.post(f"{base_url}/v1/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert login.status_code == 200, login.text
    session = login.json()["token"]
    auth = {"Authorization": f"Bearer {session}"}
    endpoint = httpx.post(
        f"{base_url}/v1/webhook-endpoints",
        json={"url": receiver.url, "events": ["generation.succeeded"]},
        headers=auth,
    )
    assert endpoint.status_code == 201, endpoint.text
    endpoint_id, endpoint_secret = endpoint.json()["id"], endpoint.json()["secret"]
    account_secret = httpx.get(f"{base_url}/v1/webhook-secret", headers=auth).json()["secret"]

    before = generate(base_url, auth, seed=1)
    old_link = before["images"][0]["url"]
    assert kid(old_link) == "1"
    headers, body = receiver.wait_for(before["id"])
    Webhook(endpoint_secret).verify(body, headers)

    load = Load(
        base_url=base_url,
        session=session,
        generation_id=before["id"],
        old_link=old_link,
        old_sha256=before["images"][0]["sha256"],
        account_secret=account_secret,
        metrics_token=(secrets_dir / "metrics_token" / "1").read_text().strip(),
    )
    threads = [threading.Thread(target=load.run) for _ in range(LOAD_THREADS)]
    for thread in threads:
        thread.start()
    try:
        while load.requests < 50:  # the load is under way before anything rotates
            time.sleep(0.02)
        requests_at_rotation = load.requests
        rotated = cli(["secrets", "rotate", *ROTATED], env)
        assert rotated.returncode == 0, rotated.stderr
        for name in ROTATED:
            assert f"{name}: version 2 added" in rotated.stdout

        # Fresh links move to the new version once both processes have read it (their cache is
        # 1 s here, plus the margin), and stay there.
        deadline = time.monotonic() + 60  # only against a hang
        while time.monotonic() < deadline and load.recent_kids(40) != ["2"] * 40:
            time.sleep(0.1)
        assert load.recent_kids(40) == ["2"] * 40, load.recent_kids(40)
    finally:
        load.stop.set()
        for thread in threads:
            thread.join(timeout=60)

    assert load.failures == []
    assert load.requests > requests_at_rotation + 200  # the load really ran across the rotation
    assert httpx.get(old_link).status_code == 200  # signed with version 1, still valid
    assert httpx.get(f"{base_url}/v1/me", headers=auth).status_code == 200  # still logged in

    # The new metrics token works beside the old one.
    new_token = (secrets_dir / "metrics_token" / "2").read_text().strip()
    scraped = httpx.get(f"{base_url}/metrics", headers={"Authorization": f"Bearer {new_token}"})
    assert scraped.status_code == 200

    # Webhooks: a delivery after the rotation is signed with the endpoint secret made under master
    # key version 1; secrets made now derive from version 2, and the old one signs beside it.
    after = generate(base_url, auth, seed=2)
    headers, body = receiver.wait_for(after["id"])
    Webhook(endpoint_secret).verify(body, headers)
    rotated_secret = httpx.post(f"{base_url}/v1/webhook-endpoints/{endpoint_id}/secret/rotate", headers=auth)
    assert rotated_secret.status_code == 200, rotated_secret.text
    new_endpoint_secret = rotated_secret.json()["secret"]
    third = generate(base_url, auth, seed=3)
    headers, body = receiver.wait_for(third["id"])
    Webhook(new_endpoint_secret).verify(body, headers)
    Webhook(endpoint_secret).verify(body, headers)  # in its overlap, the old secret signs too
    assert asyncio.run(key_versions(postgres_url, "endpoint")) == [("1", False), ("2", True)]
    assert httpx.get(f"{base_url}/v1/webhook-secret", headers=auth).json()["secret"] == account_secret

    # Retiring version 1 of the link key ends the old link, and only that.
    retired = cli(["secrets", "retire", "url_signing_key", "1"], env)
    assert retired.returncode == 0, retired.stderr
    deadline = time.monotonic() + 30  # only against a hang: both processes' caches expire
    refused = httpx.get(old_link)
    while refused.status_code == 200 and time.monotonic() < deadline:
        time.sleep(0.1)
        refused = httpx.get(old_link)
    assert (refused.status_code, refused.json()["code"]) == (403, "invalid_signature")
    fresh = httpx.get(f"{base_url}/v1/generations/{before['id']}", headers=auth).json()["images"][0]["url"]
    assert (kid(fresh), httpx.get(fresh).status_code) == ("2", 200)

    # No secret value anywhere an operator or a client can read.
    values = secret_values(secrets_dir) | {endpoint_secret, new_endpoint_secret, account_secret}
    listed = cli(["secrets", "list"], env)
    checked = cli(["check-config"], env)
    error_body = refused.text
    server_log = (tmp_path / "serve.log").read_text(errors="replace")
    for text, where in (
        (listed.stdout + listed.stderr, "secrets list"),
        (rotated.stdout + rotated.stderr + retired.stdout + retired.stderr, "secrets rotate and retire"),
        (checked.stdout + checked.stderr, "check-config"),
        (error_body, "an error body"),
        (server_log, "the server's log"),
    ):
        leaked = [v[:6] + "…" for v in values if v in text]
        assert leaked == [], f"secret values in {where}"
    assert "url_signing_key" in listed.stdout and "2              current" in listed.stdout


def test_what_is_managed_elsewhere_is_not_rotated(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "var" / "secrets"
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path / "var"),
            "PICTOR_DATABASE_URL": "memory://",
            "PICTOR_STORAGE_URL": "memory://",
            "PICTOR_SECRET_URL_SIGNING_KEY": "signing-key-from-the-environment",
            "PICTOR_METRICS_TOKEN": "metrics-token-from-the-environment",
        }
    )
    (secrets_dir / "webhook_secret_key").mkdir(parents=True)
    (secrets_dir / "webhook_secret_key" / "1").write_text("webhook-master-key-in-a-file\n")

    for name, variable in (
        ("url_signing_key", "PICTOR_SECRET_URL_SIGNING_KEY"),
        ("metrics_token", "PICTOR_METRICS_TOKEN"),
    ):
        refused = cli(["secrets", "rotate", name], env)
        assert refused.returncode == 2
        assert "comes from the environment" in refused.stderr and variable in refused.stderr
        assert "from-the-environment" not in refused.stderr + refused.stdout

    listed = cli(["secrets", "list", "--json"], env)
    assert listed.returncode == 0, listed.stderr
    sources = {
        status["name"]: (status["source"], [v["state"] for v in status["versions"]])
        for status in json.loads(listed.stdout)
    }
    assert sources["url_signing_key"] == ("environment", ["current"])
    assert sources["metrics_token"] == ("environment", ["current"])
    assert sources["webhook_secret_key"] == ("directory", ["current"])
    assert "from-the-environment" not in listed.stdout and "master-key-in-a-file" not in listed.stdout

    checked = cli(["check-config"], env)
    assert checked.returncode == 0, checked.stderr
    assert "from-the-environment" not in checked.stdout and "master-key-in-a-file" not in checked.stdout

    # A read-only mount (as Kubernetes mounts secrets): refused, nothing written.
    rotate = [sys.executable, "-m", "entrypoints.cli", "secrets", "rotate", "webhook_secret_key"]
    if shutil.which("unshare") and subprocess.run(["unshare", "-rm", "true"], check=False).returncode == 0:
        folder = str(secrets_dir / "webhook_secret_key")
        command = ["unshare", "-rm", "sh", "-c", 'mount --bind -o ro "$0" "$0" && exec "$@"', folder, *rotate]
    else:
        pytest.skip("no user namespaces here to mount the secrets read-only")
    refused = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "read-only" in refused.stderr
    assert sorted(p.name for p in (secrets_dir / "webhook_secret_key").iterdir()) == ["1"]

    rotated = cli(["secrets", "rotate", "webhook_secret_key"], env)  # the same folder, writable
    assert rotated.returncode == 0, rotated.stderr
    assert sorted(p.name for p in (secrets_dir / "webhook_secret_key").iterdir()) == ["1", "2"]
