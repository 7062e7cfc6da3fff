"""Per-plan rate limits over HTTP (in-memory wiring), with the IETF RateLimit header fields, and the
public, cacheable plan catalog.

The free plan here comes from an operator's PICTOR_PLANS_FILE: 3 requests per hour with a burst of
3, so refills never happen during a test and exactly three requests pass.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from litestar import Litestar
from litestar.testing import AsyncTestClient

from tests.support.accounts import bearer, login, register

BURST = 3
WINDOW = 3600
POLICY = f'"default";q={BURST};w={WINDOW}'
RATE_LIMIT = re.compile(r'^"default";r=(\d+);t=(\d+)$')

PLANS_FILE = f"""
format = 1

[plans.free]
name = "Tiny"
monthly_price_cents = 0
currency = "USD"
monthly_images = 5
rate_limit = {{ requests = {BURST}, per_seconds = {WINDOW}, burst = {BURST} }}
max_concurrent_jobs = 1
max_image_pixels = 262144
features = ["api_access"]
"""

# API.md "Plans, subscription and usage": the fields of each plan in GET /v1/plans.
PLAN_FIELDS = {
    "code",
    "name",
    "monthly_price_cents",
    "currency",
    "monthly_images",
    "rate_limit",
    "max_concurrent_jobs",
    "max_image_pixels",
    "priority",
    "features",
}


@pytest.fixture
def environ(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS_FILE)
    return {**environ, "PICTOR_PLANS_FILE": str(plans)}


async def api_key(client: AsyncTestClient[Litestar], session: str, name: str) -> str:
    created = await client.post("/v1/api-keys", json={"name": name}, headers=bearer(session))
    assert created.status_code == 201, created.text
    return str(created.json()["key"])


def remaining(response) -> tuple[int, int]:
    match = RATE_LIMIT.match(response.headers.get("ratelimit", ""))
    assert match, response.headers
    return int(match.group(1)), int(match.group(2))


async def test_authenticated_responses_count_down_then_429_with_retry_after(client):
    await register(client, "tiny@example.com")
    key = await api_key(client, await login(client, "tiny@example.com"), "ci")

    answers = [await client.get("/v1/me", headers=bearer(key)) for _ in range(BURST)]

    assert [response.status_code for response in answers] == [200] * BURST
    assert [response.headers["ratelimit-policy"] for response in answers] == [POLICY] * BURST
    left = [remaining(response)[0] for response in answers]
    assert left == list(range(BURST - 1, -1, -1))  # 2, 1, 0
    assert all(0 < remaining(response)[1] <= WINDOW for response in answers)

    refused = await client.get("/v1/me", headers=bearer(key))

    assert refused.status_code == 429, refused.text
    assert refused.headers["content-type"].startswith("application/problem+json")
    problem = refused.json()
    assert problem["code"] == "rate_limited"
    assert problem["status"] == 429
    retry_after = refused.headers["retry-after"]
    assert re.fullmatch(r"\d+", retry_after), retry_after
    assert int(retry_after) >= 1
    assert refused.headers["ratelimit-policy"] == POLICY
    assert remaining(refused)[0] == 0
    assert len(refused.headers.get_list("retry-after")) == 1  # not once from the error and once more


async def test_every_authenticated_route_carries_the_headers(client):
    await register(client, "routes@example.com")
    session = await login(client, "routes@example.com")

    listed = await client.get("/v1/api-keys", headers=bearer(session))
    created = await client.post("/v1/api-keys", json={"name": "x"}, headers=bearer(session))

    assert listed.status_code == 200
    assert created.status_code == 201
    assert listed.headers["ratelimit-policy"] == POLICY
    assert created.headers["ratelimit-policy"] == POLICY
    assert remaining(listed)[0] == BURST - 1
    assert remaining(created)[0] == BURST - 2  # a session is one credential, whatever the route


async def test_limits_are_per_credential(client):
    await register(client, "two-keys@example.com")
    session = await login(client, "two-keys@example.com")
    first = await api_key(client, session, "first")
    second = await api_key(client, session, "second")

    for _ in range(BURST):
        assert (await client.get("/v1/me", headers=bearer(first))).status_code == 200
    assert (await client.get("/v1/me", headers=bearer(first))).status_code == 429

    fresh = await client.get("/v1/me", headers=bearer(second))
    assert fresh.status_code == 200
    assert remaining(fresh)[0] == BURST - 1
    # The session spent two requests creating the keys: its own budget, untouched by the keys'.
    session_answer = await client.get("/v1/me", headers=bearer(session))
    assert session_answer.status_code == 200
    assert remaining(session_answer)[0] == 0


async def test_unauthenticated_and_public_routes_carry_no_rate_limit_headers(client):
    for response in (
        await client.get("/v1/plans"),
        await client.get("/health/live"),
        await client.get("/v1/me"),  # 401: no credential, nothing counted
        await client.get("/v1/me", headers=bearer("pk_live_" + "x" * 38)),  # 401: not a key
    ):
        assert "ratelimit" not in response.headers, (response.request.url, response.headers)
        assert "ratelimit-policy" not in response.headers
    assert (await client.get("/v1/me")).status_code == 401


async def test_plans_are_public_cacheable_and_revalidated_with_the_etag(client):
    response = await client.get("/v1/plans")

    assert response.status_code == 200
    etag = response.headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]{16}"', etag), etag
    assert "max-age" in response.headers["cache-control"]
    plans = response.json()["data"]
    assert [plan["code"] for plan in plans] == ["free", "pro", "team"]  # cheapest first
    for plan in plans:
        assert set(plan) >= PLAN_FIELDS, PLAN_FIELDS - set(plan)
        assert set(plan["rate_limit"]) == {"requests", "per_seconds", "burst"}
        assert isinstance(plan["monthly_price_cents"], int)
        assert isinstance(plan["features"], list)
    free = plans[0]
    assert free["name"] == "Tiny"  # the operator's file replaced the built-in free plan
    assert free["rate_limit"] == {"requests": BURST, "per_seconds": WINDOW, "burst": BURST}
    assert free["monthly_price_cents"] == 0

    again = await client.get("/v1/plans", headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert again.content == b""
    assert again.headers["etag"] == etag

    among_others = await client.get("/v1/plans", headers={"If-None-Match": f'"stale", {etag}'})
    assert among_others.status_code == 304

    stale = await client.get("/v1/plans", headers={"If-None-Match": '"0000000000000000"'})
    assert stale.status_code == 200
    assert stale.json() == response.json()


async def test_if_none_match_uses_weak_comparison_and_the_wildcard(client):
    """RFC 9110 §13.1.2: If-None-Match compares weakly (a proxy that compresses the body marks the
    ETag weak, `W/"..."`, and clients send that back) and `*` matches any current representation."""
    etag = (await client.get("/v1/plans")).headers["etag"]

    weak = await client.get("/v1/plans", headers={"If-None-Match": f"W/{etag}"})
    assert weak.status_code == 304

    wildcard = await client.get("/v1/plans", headers={"If-None-Match": "*"})
    assert wildcard.status_code == 304
