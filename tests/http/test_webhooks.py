"""The webhooks API on the in-memory wiring: endpoints (create with a secret shown once, list, get,
update, delete, SSRF refusals, event filter), endpoint secret rotation, deliveries (paged listing,
retry by hand) and the account's secret for per-request `webhook_url` deliveries.

No worker runs here: deliveries are written through the memory database's unit of work, the way
the outbox's webhook fan-out writes them, and failed the way the delivery job fails them.
"""

from __future__ import annotations

import base64
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient

from core.events import EVENT_TYPES
from core.ports import Clock, Database, Ids, JobQueue
from core.webhooks.deliveries import AttemptResult, WebhookDelivery, new_delivery, record_attempt
from core.webhooks.delivery import deliver_job_spec
from entrypoints.http.app import create_app
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import settings_from_mapping
from tests.support.accounts import bearer, login, register
from tests.support.plans import roomy_plans_file

ENDPOINTS = "/v1/webhook-endpoints"
ACCOUNT_SECRET = "/v1/webhook-secret"
TARGET = "https://hooks.example.com/pictor"


@pytest.fixture
def environ(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {
        **environ,
        "PICTOR_PLANS_FILE": roomy_plans_file(tmp_path, monthly_images=100, max_concurrent_jobs=5),
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "webhook-master-key-for-tests",
    }


async def user(client: AsyncTestClient[Litestar], email: str = "ada@example.com") -> dict[str, str]:
    await register(client, email)
    return bearer(await login(client, email))


async def api_key(
    client: AsyncTestClient[Litestar], session: dict[str, str], scopes: list[str]
) -> dict[str, str]:
    created = await client.post("/v1/api-keys", json={"name": "app", "scopes": scopes}, headers=session)
    assert created.status_code == 201, created.text
    return bearer(created.json()["key"])


async def create_endpoint(
    client: AsyncTestClient[Litestar], headers: dict[str, str], **body: Any
) -> dict[str, Any]:
    response = await client.post(ENDPOINTS, json={"url": TARGET, **body}, headers=headers)
    assert response.status_code == 201, response.text
    return dict(response.json())


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code, body
    return body


def assert_secret(secret: str) -> None:
    """A Standard Webhooks secret: `whsec_` and the base64 of at least 24 random bytes."""
    assert secret.startswith("whsec_")
    assert len(base64.b64decode(secret.removeprefix("whsec_"), validate=True)) >= 24


def parse_time(text: str) -> datetime:
    """RFC 3339 in UTC, as the contract promises."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    offset = moment.utcoffset()
    assert offset is not None and offset.total_seconds() == 0
    return moment


async def user_id(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> str:
    me = await client.get("/v1/me", headers=headers)
    assert me.status_code == 200, me.text
    return str(me.json()["id"])


async def add_deliveries(
    client: AsyncTestClient[Litestar], owner_id: str, endpoint: dict[str, Any], count: int
) -> list[WebhookDelivery]:
    """`count` pending deliveries to the endpoint, as the fan-out writes them for published events."""
    async with svcs.Container(registry_of(client.app)) as container:
        database, ids, clock = await container.aget(Database, Ids, Clock)
        added = []
        async with database.unit_of_work() as uow:
            for _ in range(count):
                delivery = new_delivery(
                    id=ids.new_id(),
                    user_id=owner_id,
                    endpoint_id=endpoint["id"],
                    url=endpoint["url"],
                    event_id=ids.new_id(),
                    event_type="generation.succeeded",
                    event_occurred_at=clock.now(),
                    data={"id": ids.new_id(), "status": "succeeded", "n": 1},
                    schedule=(0.0,),
                    now=clock.now(),
                )
                assert await uow.webhook_deliveries.add(delivery)
                added.append(delivery)
            await uow.commit()
    return added


async def fail(client: AsyncTestClient[Litestar], delivery: WebhookDelivery) -> WebhookDelivery:
    """Do what the delivery job does when the last attempt of the schedule gets a 500."""
    async with svcs.Container(registry_of(client.app)) as container:
        database, clock = await container.aget(Database, Clock)
        async with database.unit_of_work() as uow:
            current = await uow.webhook_deliveries.get_for_update(delivery.id)
            assert current is not None
            failed, _ = record_attempt(
                current, AttemptResult(status_code=500), now=clock.now(), schedule=(0.0,), jitter=0.5
            )
            await uow.webhook_deliveries.update(failed)
            await uow.commit()
    assert failed.status == "failed"
    return failed


async def test_create_shows_the_secret_once_and_list_get_never(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client)
    created = await create_endpoint(client, ada, events=["generation.succeeded", "generation.failed"])

    assert_secret(created["secret"])
    assert created["url"] == TARGET
    assert created["events"] == ["generation.succeeded", "generation.failed"]
    assert (created["status"], created["disabled_reason"]) == ("active", None)
    assert parse_time(created["created_at"]) == parse_time(created["updated_at"])
    endpoint = {k: v for k, v in created.items() if k != "secret"}

    listed = await client.get(ENDPOINTS, headers=ada)
    assert listed.status_code == 200, listed.text
    assert listed.json() == {"data": [endpoint]}
    got = await client.get(f"{ENDPOINTS}/{created['id']}", headers=ada)
    assert (got.status_code, got.json()) == (200, endpoint)
    assert created["secret"] not in listed.text + got.text


async def test_events_left_out_means_every_event_type_and_duplicates_collapse(
    client: AsyncTestClient[Litestar],
) -> None:
    ada = await user(client)
    assert (await create_endpoint(client, ada))["events"] == []
    assert (await create_endpoint(client, ada, events=None))["events"] == []
    twice = await create_endpoint(client, ada, events=["quota.threshold_reached"] * 2)
    assert twice["events"] == ["quota.threshold_reached"]
    every = await create_endpoint(client, ada, events=list(EVENT_TYPES))
    assert every["events"] == list(EVENT_TYPES)
    # Two endpoints' secrets are independent.
    assert len({twice["secret"], every["secret"]}) == 2


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/",
        "https://10.0.0.1/x",
        "https://169.254.169.254/",
        "https://[::1]/",
        "http://example.com/",
    ],
)
async def test_private_loopback_metadata_and_plain_http_targets_are_unsafe(
    client: AsyncTestClient[Litestar], url: str
) -> None:
    ada = await user(client)
    assert_problem(await client.post(ENDPOINTS, json={"url": url}, headers=ada), 422, "unsafe_url")
    endpoint = await create_endpoint(client, ada)
    moved = await client.patch(f"{ENDPOINTS}/{endpoint['id']}", json={"url": url}, headers=ada)
    assert_problem(moved, 422, "unsafe_url")
    assert (await client.get(ENDPOINTS, headers=ada)).json()["data"][0]["url"] == TARGET


async def test_configuration_can_allow_private_targets(environ: dict[str, str]) -> None:
    from entrypoints.wiring import service_registry

    allowing = {**environ, "PICTOR_WEBHOOKS_ALLOW_PRIVATE": "true"}
    settings = settings_from_mapping(allowing)
    app = create_app(settings, registry_factory=lambda: service_registry(settings, environ=allowing))
    async with AsyncTestClient(app=app) as client:
        ada = await user(client)
        for url in ("http://127.0.0.1:9000/hook", "https://10.0.0.1/x"):
            created = await client.post(ENDPOINTS, json={"url": url}, headers=ada)
            assert created.status_code == 201, created.text
            assert created.json()["url"] == url


async def test_unknown_event_types_and_fields_are_validation_failures(
    client: AsyncTestClient[Litestar],
) -> None:
    ada = await user(client)
    unknown = await client.post(ENDPOINTS, json={"url": TARGET, "events": ["image.painted"]}, headers=ada)
    body = assert_problem(unknown, 422, "validation_failed")
    assert [e["field"] for e in body["errors"]] == ["events"]
    assert "image.painted" in body["detail"]

    for extra in ({"secret": "whsec_mine"}, {"status": "disabled"}, {"id": "x"}):
        refused = await client.post(ENDPOINTS, json={"url": TARGET, **extra}, headers=ada)
        assert_problem(refused, 422, "validation_failed")
    assert_problem(await client.post(ENDPOINTS, json={}, headers=ada), 422, "validation_failed")
    assert_problem(
        await client.post(ENDPOINTS, json={"url": TARGET, "events": "x"}, headers=ada),
        422,
        "validation_failed",
    )

    endpoint = await create_endpoint(client, ada)
    path = f"{ENDPOINTS}/{endpoint['id']}"
    bad_filter = await client.patch(path, json={"events": ["image.painted"]}, headers=ada)
    assert [e["field"] for e in assert_problem(bad_filter, 422, "validation_failed")["errors"]] == ["events"]
    for bad in ({"secret": "x"}, {"enabled": None}, {"url": None}, {"enabled": "yes"}):
        assert_problem(await client.patch(path, json=bad, headers=ada), 422, "validation_failed")
    assert (await client.get(ENDPOINTS, headers=ada)).json()["data"] == [
        {k: v for k, v in endpoint.items() if k != "secret"}
    ]


async def test_update_changes_only_what_is_sent(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client)
    endpoint = await create_endpoint(client, ada, events=["generation.succeeded"])
    path = f"{ENDPOINTS}/{endpoint['id']}"

    refiltered = await client.patch(
        path, json={"events": ["generation.failed", "generation.canceled"]}, headers=ada
    )
    assert refiltered.status_code == 200, refiltered.text
    assert refiltered.json()["events"] == ["generation.failed", "generation.canceled"]
    assert refiltered.json()["url"] == TARGET
    assert parse_time(refiltered.json()["updated_at"]) >= parse_time(endpoint["updated_at"])

    moved = (await client.patch(path, json={"url": "https://other.example.com/in"}, headers=ada)).json()
    assert (moved["url"], moved["events"]) == (
        "https://other.example.com/in",
        ["generation.failed", "generation.canceled"],
    )

    every = (await client.patch(path, json={"events": []}, headers=ada)).json()
    assert every["events"] == []

    unchanged = await client.patch(path, json={}, headers=ada)
    assert (unchanged.status_code, unchanged.json()) == (200, every)
    assert (await client.get(path, headers=ada)).json() == every


async def test_disable_and_enable_again(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client)
    endpoint = await create_endpoint(client, ada)
    path = f"{ENDPOINTS}/{endpoint['id']}"
    [pending] = await add_deliveries(client, await user_id(client, ada), endpoint, 1)

    off = await client.patch(path, json={"enabled": False}, headers=ada)
    assert off.status_code == 200, off.text
    assert off.json()["status"] == "disabled" and off.json()["disabled_reason"]
    assert (await client.get(path, headers=ada)).json()["status"] == "disabled"
    # Turning it off cancels what it still had to receive.
    [canceled] = (await client.get(f"{path}/deliveries", headers=ada)).json()["data"]
    assert (canceled["id"], canceled["status"], canceled["next_attempt_at"]) == (pending.id, "canceled", None)
    # A disabled endpoint gets no retry by hand either.
    retry = await client.post(f"{path}/deliveries/{pending.id}/retry", headers=ada)
    assert_problem(retry, 409, "invalid_state")

    on = await client.patch(path, json={"enabled": True}, headers=ada)
    assert on.status_code == 200, on.text
    assert (on.json()["status"], on.json()["disabled_reason"]) == ("active", None)
    # Enabled again, what was canceled can be sent by hand.
    again = await client.post(f"{path}/deliveries/{pending.id}/retry", headers=ada)
    assert (again.status_code, again.json()["status"]) == (202, "pending"), again.text


async def test_delete_removes_the_endpoint(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client)
    kept = await create_endpoint(client, ada)
    gone = await create_endpoint(client, ada)

    deleted = await client.delete(f"{ENDPOINTS}/{gone['id']}", headers=ada)
    assert (deleted.status_code, deleted.content) == (204, b"")
    assert [e["id"] for e in (await client.get(ENDPOINTS, headers=ada)).json()["data"]] == [kept["id"]]
    for response in (
        await client.get(f"{ENDPOINTS}/{gone['id']}", headers=ada),
        await client.delete(f"{ENDPOINTS}/{gone['id']}", headers=ada),
        await client.post(f"{ENDPOINTS}/{gone['id']}/secret/rotate", headers=ada),
        await client.get(f"{ENDPOINTS}/{gone['id']}/deliveries", headers=ada),
    ):
        assert_problem(response, 404, "not_found")


async def test_another_users_endpoint_is_not_found(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")
    endpoint = await create_endpoint(client, ada)
    [delivery] = await add_deliveries(client, await user_id(client, ada), endpoint, 1)
    await fail(client, delivery)
    path = f"{ENDPOINTS}/{endpoint['id']}"

    for response in (
        await client.get(path, headers=bob),
        await client.patch(path, json={"enabled": False}, headers=bob),
        await client.delete(path, headers=bob),
        await client.post(f"{path}/secret/rotate", headers=bob),
        await client.get(f"{path}/deliveries", headers=bob),
        await client.post(f"{path}/deliveries/{delivery.id}/retry", headers=bob),
        await client.get(f"{ENDPOINTS}/not-an-id", headers=bob),
    ):
        assert_problem(response, 404, "not_found")
    assert (await client.get(ENDPOINTS, headers=bob)).json() == {"data": []}
    # Nothing of Ada's changed.
    still = (await client.get(path, headers=ada)).json()
    assert still["status"] == "active"
    [failed] = (await client.get(f"{path}/deliveries", headers=ada)).json()["data"]
    assert failed["status"] == "failed"

    # Bob's own endpoint does not reach Ada's delivery either.
    own = await create_endpoint(client, bob)
    crossed = await client.post(f"{ENDPOINTS}/{own['id']}/deliveries/{delivery.id}/retry", headers=bob)
    assert_problem(crossed, 404, "not_found")


async def test_the_webhooks_manage_scope_is_needed(client: AsyncTestClient[Litestar]) -> None:
    session = await user(client)
    endpoint = await create_endpoint(client, session)
    generations_only = await api_key(client, session, ["generations:read", "generations:write"])
    path = f"{ENDPOINTS}/{endpoint['id']}"

    for response in (
        await client.post(ENDPOINTS, json={"url": TARGET}, headers=generations_only),
        await client.get(ENDPOINTS, headers=generations_only),
        await client.get(path, headers=generations_only),
        await client.patch(path, json={"enabled": False}, headers=generations_only),
        await client.delete(path, headers=generations_only),
        await client.post(f"{path}/secret/rotate", headers=generations_only),
        await client.get(f"{path}/deliveries", headers=generations_only),
        await client.get(ACCOUNT_SECRET, headers=generations_only),
        await client.post(f"{ACCOUNT_SECRET}/rotate", headers=generations_only),
    ):
        assert_problem(response, 403, "insufficient_scope")

    manager = await api_key(client, session, ["webhooks:manage"])
    assert (await client.get(path, headers=manager)).status_code == 200
    assert_problem(await client.get(ENDPOINTS), 401, "unauthenticated")


async def test_rotating_an_endpoint_secret_gives_a_new_one(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client)
    endpoint = await create_endpoint(client, ada)
    path = f"{ENDPOINTS}/{endpoint['id']}/secret/rotate"

    rotated = await client.post(path, headers=ada)
    assert rotated.status_code == 200, rotated.text
    assert set(rotated.json()) == {"secret", "created_at"}
    assert_secret(rotated.json()["secret"])
    assert rotated.json()["secret"] != endpoint["secret"]
    parse_time(rotated.json()["created_at"])

    again = (await client.post(path, headers=ada)).json()["secret"]
    assert again not in (endpoint["secret"], rotated.json()["secret"])
    # The endpoint itself still never shows a secret.
    assert "secret" not in (await client.get(f"{ENDPOINTS}/{endpoint['id']}", headers=ada)).json()


async def test_deliveries_are_listed_newest_first_in_pages(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client)
    endpoint = await create_endpoint(client, ada)
    other = await create_endpoint(client, ada)
    path = f"{ENDPOINTS}/{endpoint['id']}/deliveries"

    empty = await client.get(path, headers=ada)
    assert (empty.status_code, empty.json()) == (200, {"data": [], "next_cursor": None})

    owner = await user_id(client, ada)
    added = await add_deliveries(client, owner, endpoint, 3)
    await add_deliveries(client, owner, other, 2)  # another endpoint's, never listed here

    first = await client.get(path, params={"limit": 2}, headers=ada)
    assert first.status_code == 200, first.text
    newest_first = [d.id for d in reversed(added)]
    assert [d["id"] for d in first.json()["data"]] == newest_first[:2]
    cursor = first.json()["next_cursor"]
    assert isinstance(cursor, str) and cursor

    second = await client.get(path, params={"limit": 2, "cursor": cursor}, headers=ada)
    assert second.status_code == 200, second.text
    assert [d["id"] for d in second.json()["data"]] == newest_first[2:]
    assert second.json()["next_cursor"] is None

    everything = (await client.get(path, headers=ada)).json()
    assert [d["id"] for d in everything["data"]] == newest_first and everything["next_cursor"] is None

    shown = first.json()["data"][0]
    stored = added[-1]
    assert set(shown) == {
        "id",
        "event_id",
        "event_type",
        "status",
        "attempts",
        "last_status_code",
        "next_attempt_at",
        "created_at",
        "last_error",
        "last_attempt_at",
        "delivered_at",
    }
    assert (shown["event_id"], shown["event_type"], shown["status"], shown["attempts"]) == (
        stored.event_id,
        "generation.succeeded",
        "pending",
        0,
    )
    assert (shown["last_status_code"], shown["last_error"], shown["delivered_at"]) == (None, None, None)
    assert parse_time(shown["created_at"]) == stored.created_at
    assert parse_time(shown["next_attempt_at"]) == stored.next_attempt_at

    assert_problem(await client.get(path, params={"cursor": "not-ours"}, headers=ada), 400, "invalid_cursor")
    assert_problem(await client.get(path, params={"limit": 0}, headers=ada), 422, "validation_failed")


async def test_a_failed_delivery_is_retried_by_hand(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client)
    endpoint = await create_endpoint(client, ada)
    [delivery] = await add_deliveries(client, await user_id(client, ada), endpoint, 1)
    retry_path = f"{ENDPOINTS}/{endpoint['id']}/deliveries/{delivery.id}/retry"

    # Still pending: its schedule retries it.
    assert_problem(await client.post(retry_path, headers=ada), 409, "invalid_state")

    failed = await fail(client, delivery)
    [listed] = (await client.get(f"{ENDPOINTS}/{endpoint['id']}/deliveries", headers=ada)).json()["data"]
    assert (listed["status"], listed["attempts"], listed["last_status_code"]) == ("failed", 1, 500)
    assert (
        listed["next_attempt_at"] is None and parse_time(listed["last_attempt_at"]) == failed.last_attempt_at
    )

    retried = await client.post(retry_path, headers=ada)
    assert retried.status_code == 202, retried.text
    body = retried.json()
    assert (body["id"], body["status"], body["attempts"]) == (delivery.id, "pending", 1)
    assert body["next_attempt_at"] is not None
    # The attempt is on its way to the `webhooks` queue.
    async with svcs.Container(registry_of(client.app)) as container:
        jobs, database = await container.aget(JobQueue, Database)
        async with database.unit_of_work() as uow:
            stored = await uow.webhook_deliveries.get_for_user(failed.user_id, delivery.id)
        assert stored is not None and stored.status == "pending"
        spec = deliver_job_spec(stored)
        assert spec.key is not None and await jobs.status(spec.queue, spec.key) is not None

    # Pending again, so a second retry waits for this one.
    assert_problem(await client.post(retry_path, headers=ada), 409, "invalid_state")
    missing = f"{ENDPOINTS}/{endpoint['id']}/deliveries/{endpoint['id']}/retry"
    assert_problem(await client.post(missing, headers=ada), 404, "not_found")
    assert_problem(
        await client.post(f"{ENDPOINTS}/{endpoint['id']}/deliveries/x/retry", headers=ada), 404, "not_found"
    )


async def test_the_account_secret_is_made_on_first_use_and_rotates(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")

    first = await client.get(ACCOUNT_SECRET, headers=ada)
    assert first.status_code == 200, first.text
    assert set(first.json()) == {"secret", "created_at"}
    assert_secret(first.json()["secret"])
    assert (await client.get(ACCOUNT_SECRET, headers=ada)).json() == first.json()
    assert (await client.get(ACCOUNT_SECRET, headers=bob)).json()["secret"] != first.json()["secret"]

    rotated = await client.post(f"{ACCOUNT_SECRET}/rotate", headers=ada)
    assert rotated.status_code == 200, rotated.text
    assert_secret(rotated.json()["secret"])
    assert rotated.json()["secret"] != first.json()["secret"]
    assert parse_time(rotated.json()["created_at"]) >= parse_time(first.json()["created_at"])
    assert (await client.get(ACCOUNT_SECRET, headers=ada)).json() == rotated.json()


async def test_rotating_the_account_secret_first_makes_one(client: AsyncTestClient[Litestar]) -> None:
    ada = await user(client)
    rotated = await client.post(f"{ACCOUNT_SECRET}/rotate", headers=ada)
    assert rotated.status_code == 200, rotated.text
    assert_secret(rotated.json()["secret"])
    assert (await client.get(ACCOUNT_SECRET, headers=ada)).json() == rotated.json()


async def test_the_openapi_document_lists_the_webhook_routes(client: AsyncTestClient[Litestar]) -> None:
    document = (await client.get("/schema/openapi.json")).json()
    paths = document["paths"]
    expected = {
        "/v1/webhook-endpoints": {"get", "post"},
        "/v1/webhook-endpoints/{endpoint_id}": {"get", "patch", "delete"},
        "/v1/webhook-endpoints/{endpoint_id}/secret/rotate": {"post"},
        "/v1/webhook-endpoints/{endpoint_id}/deliveries": {"get"},
        "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry": {"post"},
        "/v1/webhook-secret": {"get"},
        "/v1/webhook-secret/rotate": {"post"},
    }
    for path, methods in expected.items():
        assert methods <= set(paths[path]), path
        for method in methods:
            assert paths[path][method]["security"] == [{"bearer": []}]
    create = paths["/v1/webhook-endpoints"]["post"]
    assert {"201", "401", "403", "422"} <= set(create["responses"])
    assert "unsafe_url" in create["responses"]["422"]["description"]
    retry = paths["/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/retry"]["post"]
    assert {"202", "404", "409"} <= set(retry["responses"])
