"""Business counters fed by real requests, and `GET /admin/metrics` answering the same figures as
`/metrics`, for administrators in person only.

The free plan is tiny (one image a month, one at a time, a burst of four requests per hour), so
each refusal happens on a known request. Counters are process-wide: the tests compare before and
after.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient
from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.parser import text_string_to_metric_families

from entrypoints.http.routes.admin_metrics import cache_hit_ratio, metric_families
from tests.http.conftest import METRICS_TOKEN
from tests.http.test_accounts import make_admin
from tests.support.accounts import bearer, login, register

PLANS_FILE = """
format = 1

[plans.free]
name = "Tiny"
monthly_price_cents = 0
currency = "USD"
monthly_images = 1
rate_limit = { requests = 4, per_seconds = 3600, burst = 4 }
max_concurrent_jobs = 1
max_image_pixels = 262144
features = ["api_access"]
"""

BUSINESS_FAMILIES = (
    "pictor_registrations",
    "pictor_logins",
    "pictor_generations",
    "pictor_quota_rejections",
    "pictor_rate_limit_rejections",
)


@pytest.fixture
def environ(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS_FILE)
    return {**environ, "PICTOR_PLANS_FILE": str(plans), "PICTOR_METRICS_SAMPLE_INTERVAL_SECONDS": "0.05"}


async def admin_metrics(client: AsyncTestClient[Litestar], admin: str, name: str | None = None) -> Any:
    response = await client.get(
        "/admin/metrics", params={"name": name} if name else {}, headers=bearer(admin)
    )
    assert response.status_code == 200, response.text
    return response.json()


def samples_of(
    body: Any, families: tuple[str, ...] = BUSINESS_FAMILIES
) -> dict[tuple[str, tuple[Any, ...]], float]:
    return {
        (sample["name"], tuple(sorted(sample["labels"].items()))): sample["value"]
        for family in body["data"]
        if family["name"] in families
        for sample in family["samples"]
    }


def value(body: Any, name: str, **labels: str) -> float:
    return samples_of(body, tuple(f["name"] for f in body["data"])).get(
        (name, tuple(sorted(labels.items()))), 0.0
    )


async def test_requests_feed_the_business_counters(client: AsyncTestClient[Litestar]) -> None:
    admin = await make_admin(client, "ops@example.com")
    before = await admin_metrics(client, admin)

    await register(client, "ada@example.com")
    wrong = await client.post(
        "/v1/auth/login", json={"email": "ada@example.com", "password": "not it at all"}
    )
    assert wrong.status_code == 401
    session = await login(client, "ada@example.com")

    created = await client.post(
        "/v1/generations", json={"prompt": "a quiet harbour", "size": "256x256"}, headers=bearer(session)
    )
    assert created.status_code == 202, created.text
    refused = await client.post(
        "/v1/generations", json={"prompt": "another harbour", "size": "256x256"}, headers=bearer(session)
    )
    assert refused.status_code in (402, 429), refused.text
    reason = refused.json()["code"]
    assert reason in ("quota_exceeded", "concurrency_limit")
    canceled = await client.post(f"/v1/generations/{created.json()['id']}/cancel", headers=bearer(session))
    assert canceled.status_code == 200, canceled.text
    statuses = [(await client.get("/v1/me", headers=bearer(session))).status_code for _ in range(3)]
    assert statuses == [200, 429, 429]  # the fourth request of the burst passed, then refusals

    after = await admin_metrics(client, admin)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("pictor_registrations_total") == 1
    assert grew("pictor_logins_total", outcome="invalid_credentials") == 1
    assert grew("pictor_logins_total", outcome="succeeded") == 1
    assert grew("pictor_generations_total", status="queued") == 1
    assert grew("pictor_generations_total", status="canceled") == 1
    assert grew("pictor_quota_rejections_total", reason=reason) == 1
    assert grew("pictor_rate_limit_rejections_total", limit="api") == 2


async def test_admin_metrics_are_the_figures_of_metrics(client: AsyncTestClient[Litestar]) -> None:
    admin = await make_admin(client, "ops@example.com")
    await register(client, "bea@example.com")
    await login(client, "bea@example.com")
    text = (await client.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})).text
    body = await admin_metrics(client, admin)

    from_text = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        if family.name in BUSINESS_FAMILIES
        for sample in family.samples
        if not sample.name.endswith("_created")
    }
    assert from_text, text
    assert samples_of(body) == from_text
    families = {family["name"]: family for family in body["data"]}
    assert families["pictor_logins"]["type"] == "counter"
    assert families["pictor_http_request_duration_seconds"]["type"] == "histogram"
    assert families["pictor_queue_depth"]["type"] == "gauge"
    assert body["multiprocess"] is False
    assert body["cache_hit_ratio"] is None or 0 <= body["cache_hit_ratio"] <= 1
    assert not any(s["name"].endswith("_created") for f in body["data"] for s in f["samples"])


async def test_the_name_filter_and_the_queue_gauges(client: AsyncTestClient[Litestar]) -> None:
    admin = await make_admin(client, "ops@example.com")
    await register(client, "cy@example.com")  # its verification email waits on the email queue
    for _ in range(200):
        body = await admin_metrics(client, admin, "pictor_queue_")
        if value(body, "pictor_queue_depth", queue="email") >= 1:
            break
        await asyncio.sleep(0.05)
    names = {family["name"] for family in body["data"]}
    assert names and all(name.startswith("pictor_queue_") for name in names)
    assert {"pictor_queue_depth", "pictor_queue_running_jobs", "pictor_queue_failed_jobs"} <= names
    assert value(body, "pictor_queue_depth", queue="email") == 1
    assert value(body, "pictor_queue_running_jobs", queue="email") == 0


async def test_only_administrators_in_person(client: AsyncTestClient[Litestar]) -> None:
    assert (await client.get("/admin/metrics")).status_code == 401
    await register(client, "dan@example.com")
    user = await login(client, "dan@example.com")
    forbidden = await client.get("/admin/metrics", headers=bearer(user))
    assert (forbidden.status_code, forbidden.json()["code"]) == (403, "forbidden")
    admin = await make_admin(client, "ops@example.com")
    key = await client.post("/v1/api-keys", json={"name": "ops"}, headers=bearer(admin))
    assert key.status_code == 201, key.text
    with_key = await client.get("/admin/metrics", headers=bearer(key.json()["key"]))
    assert with_key.status_code == 403


def test_families_drop_created_timestamps_and_non_finite_values() -> None:
    registry = CollectorRegistry()
    Counter("pictor_cache_hits_total", "hits", registry=registry).inc(3)
    Counter("pictor_cache_misses_total", "misses", registry=registry).inc(1)
    Gauge("pictor_odd", "odd", registry=registry).set(float("nan"))
    families = metric_families(registry)
    assert [f.name for f in families] == ["pictor_cache_hits", "pictor_cache_misses", "pictor_odd"]
    assert [s.name for s in families[0].samples] == ["pictor_cache_hits_total"]
    assert families[2].samples[0].value is None  # JSON has no NaN
    assert cache_hit_ratio(families) == 0.75
    assert cache_hit_ratio(metric_families(CollectorRegistry())) is None
