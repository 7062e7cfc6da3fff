"""Two real `pictor serve` processes on one PostgreSQL and one Valkey enforce one rate limit per
credential, not one each: requests alternating between them share a single budget."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import httpx
import pytest

from adapters.postgres.migrations import apply_migrations
from tests.e2e.processes import PictorProcess, clean_environ, free_port
from tests.support.accounts import PASSWORD
from tests.support.services import unique_name

pytestmark = pytest.mark.e2e

BURST = 10
WINDOW = 3600  # one request back per 6 minutes: no refill during the test
RATE_LIMIT = re.compile(r'^"default";r=(\d+);t=(\d+)$')

PLANS_FILE = f"""
format = 1

[plans.free]
name = "Free"
monthly_price_cents = 0
currency = "USD"
monthly_images = 50
rate_limit = {{ requests = {BURST}, per_seconds = {WINDOW}, burst = {BURST} }}
max_concurrent_jobs = 1
max_image_pixels = 589824
"""


def _api_key(base_url: str) -> str:
    email = "shared@example.com"
    registered = httpx.post(f"{base_url}/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{base_url}/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    created = httpx.post(
        f"{base_url}/v1/api-keys",
        json={"name": "shared"},
        headers={"Authorization": f"Bearer {login.json()['token']}"},
    )
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def test_two_processes_enforce_one_limit(postgres_url: str, valkey_url: str, tmp_path: Path) -> None:
    asyncio.run(apply_migrations(postgres_url))
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS_FILE)
    shared = {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_QUEUE_URL": valkey_url,
        "PICTOR_NAMESPACE": unique_name("rl").replace("_", "-"),
        "PICTOR_STORAGE_URL": "memory://",
        "PICTOR_SECRET_URL_SIGNING_KEY": "e2e-signing-key",
        "PICTOR_PLANS_FILE": str(plans),
        "PICTOR_DB_POOL_MIN": "1",
        "PICTOR_LOG_LEVEL": "warning",
    }
    ports = [free_port(), free_port()]
    bases = [f"http://127.0.0.1:{port}" for port in ports]
    servers = [
        PictorProcess(
            ["serve"], clean_environ({**shared, "PICTOR_PORT": str(port)}), tmp_path / f"serve-{n}.log"
        )
        for n, port in enumerate(ports)
    ]
    try:
        for server, base in zip(servers, bases, strict=True):
            server.wait_ready(base, timeout=60)
        key = _api_key(bases[0])
        headers = {"Authorization": f"Bearer {key}"}

        answers: list[tuple[int, httpx.Response]] = []
        for n in range(2 * BURST + 4):
            which = n % 2
            answers.append((which, httpx.get(f"{bases[which]}/v1/me", headers=headers, timeout=10)))

        statuses = [response.status_code for _, response in answers]
        assert set(statuses) <= {200, 429}, [response.text for _, response in answers]
        assert statuses.count(200) == BURST, statuses  # one budget for both processes, not two
        assert statuses == [200] * BURST + [429] * (len(answers) - BURST), statuses
        assert {which for which, response in answers if response.status_code == 200} == {0, 1}
        assert {which for which, response in answers if response.status_code == 429} == {0, 1}

        remaining = []
        for _, response in answers[:BURST]:
            match = RATE_LIMIT.match(response.headers["ratelimit"])
            assert match, response.headers
            remaining.append(int(match.group(1)))
            assert response.headers["ratelimit-policy"] == f'"default";q={BURST};w={WINDOW}'
        assert remaining == list(range(BURST - 1, -1, -1))  # counted down across both processes

        for _, refused in answers[BURST:]:
            assert refused.json()["code"] == "rate_limited"
            assert int(refused.headers["retry-after"]) >= 1
    finally:
        for server in servers:
            server.terminate()
