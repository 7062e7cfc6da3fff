"""Without Valkey, invalidations travel through PostgreSQL NOTIFY: a plan changed by another
process (`pictor users set-plan`) reaches the principal cache of a running `pictor serve` at once,
though its entries would otherwise live for an hour."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from adapters.postgres.migrations import apply_migrations
from tests.e2e.processes import PictorProcess, clean_environ, free_port
from tests.support.accounts import PASSWORD

pytestmark = pytest.mark.e2e


def _poll(url: str, headers: dict[str, str], done: object, timeout: float = 5.0) -> httpx.Response:
    """GET until `done(response)` holds (the NOTIFY is asynchronous), or the last answer."""
    deadline = time.monotonic() + timeout
    while True:
        response = httpx.get(url, headers=headers, timeout=10)
        if done(response) or time.monotonic() > deadline:  # type: ignore[operator]
            return response
        time.sleep(0.05)


def test_a_plan_set_by_the_cli_reaches_a_running_server(postgres_url: str, tmp_path: Path) -> None:
    asyncio.run(apply_migrations(postgres_url))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_DATABASE_URL": postgres_url,
            "PICTOR_VALKEY_URL": "memory://",
            "PICTOR_QUEUE_URL": "memory://",
            "PICTOR_STORAGE_URL": "memory://",
            "PICTOR_SECRET_URL_SIGNING_KEY": "e2e-signing-key",
            "PICTOR_PORT": str(port),
            "PICTOR_DB_POOL_MIN": "1",
            "PICTOR_CACHE_TTL_SECONDS": "3600",  # only an invalidation can refresh the cache
            "PICTOR_LOG_LEVEL": "warning",
        }
    )
    server = PictorProcess(["serve"], env, tmp_path / "serve.log")
    try:
        server.wait_ready(base, timeout=60)
        email = "notify@example.com"
        assert httpx.post(f"{base}/v1/auth/register", json={"email": email, "password": PASSWORD}).is_success
        token = httpx.post(f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}).json()[
            "token"
        ]
        key = httpx.post(
            f"{base}/v1/api-keys", json={"name": "k"}, headers={"Authorization": f"Bearer {token}"}
        ).json()["key"]
        headers = {"Authorization": f"Bearer {key}"}
        warm = httpx.get(f"{base}/v1/me", headers=headers)
        assert warm.json()["plan"] == "free"
        assert warm.headers["ratelimit-policy"] == '"default";q=60;w=60'

        changed = subprocess.run(
            [sys.executable, "-m", "entrypoints.cli", "users", "set-plan", email, "pro"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert changed.returncode == 0, changed.stderr

        after = _poll(f"{base}/v1/me", headers, lambda r: r.json().get("plan") == "pro")
        assert after.json()["plan"] == "pro", server.output()
        assert after.headers["ratelimit-policy"] == '"default";q=600;w=60'  # the pro plan's limit

    finally:
        server.terminate()
