"""Issue 4 "Done when", over HTTP against real PostgreSQL and Valkey: a free user exhausts the
quota and gets `402 quota_exceeded`; an upgrade lifts it at once, through the same cached API key.
(That a paid upgrade charges exactly its preview is shown in test_billing_on_real_services.py.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.postgres.migrations import apply_migrations
from entrypoints.http.app import create_app
from entrypoints.settings import settings_from_mapping
from entrypoints.wiring import service_registry
from tests.support.accounts import bearer, login, register
from tests.support.services import unique_name

pytestmark = pytest.mark.services

PLANS = """
format = 1

[plans.free]
name = "Tiny"
monthly_price_cents = 0
currency = "USD"
monthly_images = 3
rate_limit = { requests = 1000, per_seconds = 60, burst = 1000 }
max_concurrent_jobs = 10
max_image_pixels = 262144
"""


@pytest.fixture
async def client(
    postgres_url: str, valkey_url: str, tmp_path: Path
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    await apply_migrations(postgres_url)
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS)
    environ = {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_QUEUE_URL": valkey_url,
        "PICTOR_NAMESPACE": unique_name("quota").replace("_", "-"),
        "PICTOR_STORAGE_URL": "memory://",
        "PICTOR_SECRET_URL_SIGNING_KEY": "k",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        "PICTOR_PLANS_FILE": str(plans),
        "PICTOR_EMBEDDED_WORKER": "false",  # generations stay queued: their images stay reserved
        "PICTOR_DB_POOL_MIN": "1",
    }
    settings = settings_from_mapping(environ)
    app = create_app(settings, registry_factory=lambda: service_registry(settings, environ=environ))
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def test_a_free_user_runs_out_then_an_upgrade_lifts_the_quota_at_once(
    client: AsyncTestClient[Litestar],
) -> None:
    await register(client, "quota@example.com")
    session = bearer(await login(client, "quota@example.com"))
    key = bearer((await client.post("/v1/api-keys", json={"name": "q"}, headers=session)).json()["key"])
    body = {"prompt": "a lighthouse at dusk", "size": "256x256"}

    assert (await client.post("/v1/generations", json={**body, "n": 2}, headers=key)).status_code == 202
    assert (await client.post("/v1/generations", json={**body, "n": 1}, headers=key)).status_code == 202
    refused = await client.post("/v1/generations", json={**body, "n": 1}, headers=key)
    assert refused.status_code == 402, refused.text
    assert refused.json()["code"] == "quota_exceeded"
    assert refused.headers["content-type"].startswith("application/problem+json")
    usage = (await client.get("/v1/usage", headers=key)).json()
    assert (usage["images_used"], usage["images_limit"], usage["images_remaining"]) == (3, 3, 0)

    preview = (await client.post("/v1/subscription/preview", json={"plan": "pro"}, headers=session)).json()
    upgraded = await client.post("/v1/subscription", json={"plan": "pro"}, headers=session)
    assert upgraded.status_code == 200, upgraded.text
    # Pro has trial days: a first upgrade from free is a trial, and the preview said it costs nothing.
    assert preview["amount_due_cents"] == 0
    assert upgraded.json()["status"] == "trialing"
    assert upgraded.json()["latest_charge"] is None

    # The same API key, its principal cached: the pro quota applies on the very next request.
    accepted = await client.post("/v1/generations", json={**body, "n": 1}, headers=key)
    assert accepted.status_code == 202, accepted.text
    assert (await client.get("/v1/me", headers=key)).json()["plan"] == "pro"
