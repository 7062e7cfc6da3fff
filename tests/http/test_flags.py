"""Feature flags over HTTP on the in-memory wiring: the caller's evaluated flags (GET /v1/flags),
the admin CRUD (/admin/flags: create 201, replace 200, stale marked, delete, 404, validation
problems, audit records, who may), and the first real use: the beta `sunset` generation style,
open only where its flag is on.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient

from core.ports import Clock
from entrypoints.http.svcs_plugin import registry_of
from tests.support.accounts import admin_session, bearer, login, register
from tests.support.plans import roomy_plans_file

FLAGS = "/admin/flags"


@pytest.fixture
def environ(environ: dict[str, str], tmp_path: Path) -> dict[str, str]:
    return {**environ, "PICTOR_PLANS_FILE": roomy_plans_file(tmp_path)}


async def user(client: AsyncTestClient[Litestar], email: str) -> dict[str, str]:
    await register(client, email)
    return bearer(await login(client, email))


async def admin(client: AsyncTestClient[Litestar], email: str = "root@example.com") -> dict[str, str]:
    return bearer(await admin_session(client, email))


async def put_flag(
    client: AsyncTestClient[Litestar], headers: dict[str, str], key: str, status: int = 201, **body: Any
) -> dict[str, Any]:
    response = await client.put(f"{FLAGS}/{key}", json=body, headers=headers)
    assert response.status_code == status, response.text
    return dict(response.json())


async def my_flags(client: AsyncTestClient[Litestar], headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/v1/flags", headers=headers)
    assert response.status_code == 200, response.text
    return dict(response.json()["data"])


async def test_admins_create_replace_list_and_delete_flags_with_audit_records(client):
    root = await admin(client)
    created = await put_flag(
        client,
        root,
        "new-editor",
        description="The new editor",
        enabled=True,
        rollout=25,
        rules=[{"attribute": "plan", "values": ["pro"], "serve": True}],
    )
    assert created["key"] == "new-editor" and created["kind"] == "boolean"
    assert (created["enabled"], created["default"], created["rollout"], created["stale"]) == (
        True,
        False,
        25,
        False,
    )
    assert created["rules"] == [{"attribute": "plan", "operator": "in", "values": ["pro"], "serve": True}]
    assert created["created_at"] == created["updated_at"]

    replaced = await put_flag(client, root, "new-editor", status=200, enabled=False)
    assert (replaced["enabled"], replaced["rollout"], replaced["rules"]) == (False, 100, [])  # replaced whole
    assert replaced["created_at"] == created["created_at"]
    same = await put_flag(client, root, "new-editor", status=200, enabled=False)
    assert same == replaced  # nothing changed: nothing written

    async with svcs.Container(registry_of(client.app)) as container:
        now = (await container.aget(Clock)).now()
    past = (now - timedelta(days=1)).isoformat()
    await put_flag(
        client,
        root,
        "button-color",
        kind="variant",
        enabled=True,
        default="control",
        variants=[{"name": "control", "weight": 500}, {"name": "blue", "weight": 500}],
        expires_at=past,
    )
    listing = await client.get(FLAGS, headers=root)
    assert listing.status_code == 200
    assert [(f["key"], f["stale"]) for f in listing.json()["data"]] == [
        ("button-color", True),
        ("new-editor", False),
    ]
    one = await client.get(f"{FLAGS}/button-color", headers=root)
    assert one.status_code == 200 and one.json()["stale"] is True

    assert (await client.delete(f"{FLAGS}/button-color", headers=root)).status_code == 204
    gone = await client.delete(f"{FLAGS}/button-color", headers=root)
    assert (gone.status_code, gone.json()["code"]) == (404, "not_found")
    assert (await client.get(f"{FLAGS}/button-color", headers=root)).status_code == 404
    assert (await client.get(f"{FLAGS}/Not%20A%20Key", headers=root)).status_code == 404

    audit = await client.get("/admin/audit", headers=root)
    records = [r for r in audit.json()["data"] if r["action"].startswith("feature_flag.")]
    assert [(r["action"], r["target_id"]) for r in records] == [
        ("feature_flag.deleted", "button-color"),
        ("feature_flag.created", "button-color"),
        ("feature_flag.updated", "new-editor"),
        ("feature_flag.created", "new-editor"),
    ]
    assert records[2]["details"]["changes"]["enabled"] == {"before": True, "after": False}
    assert records[2]["details"]["changes"]["rules"] == {"before": 1, "after": 0}
    assert all(r["actor_id"] is not None and r["target_type"] == "feature_flag" for r in records)


async def test_invalid_definitions_are_problems_listing_every_field(client):
    root = await admin(client)
    response = await client.put(
        f"{FLAGS}/Bad%20Key",
        json={
            "rollout": 150,
            "default": "maybe",
            "rules": [{"attribute": "role", "values": ["owner"], "serve": True}],
        },
        headers=root,
    )
    assert response.status_code == 422
    problem = response.json()
    assert problem["code"] == "validation_failed"
    assert {e["field"] for e in problem["errors"]} == {"key", "rollout", "default", "rules[0].values"}
    unknown = await client.put(f"{FLAGS}/ok", json={"enabld": True}, headers=root)
    assert (unknown.status_code, unknown.json()["code"]) == (422, "validation_failed")
    wrong_attribute = await client.put(
        f"{FLAGS}/ok",
        json={"rules": [{"attribute": "country", "values": ["fr"], "serve": True}]},
        headers=root,
    )
    assert wrong_attribute.status_code == 422
    assert (await client.get(FLAGS, headers=root)).json()["data"] == []


async def test_only_administrators_in_person_manage_flags(client):
    ada = await user(client, "ada@example.com")
    assert (await client.get(FLAGS)).status_code == 401
    for response in (
        await client.get(FLAGS, headers=ada),
        await client.put(f"{FLAGS}/x", json={}, headers=ada),
        await client.delete(f"{FLAGS}/x", headers=ada),
    ):
        assert (response.status_code, response.json()["code"]) == (403, "forbidden")
    root = await admin(client)
    key = await client.post("/v1/api-keys", json={"name": "ops", "scopes": ["account:read"]}, headers=root)
    assert key.status_code == 201, key.text
    with_key = await client.get(FLAGS, headers=bearer(key.json()["key"]))
    assert with_key.status_code == 403  # an admin's API key is not the admin


async def test_each_caller_gets_the_flags_evaluated_for_them(client):
    root = await admin(client)
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@beta.example.org")
    await put_flag(
        client,
        root,
        "beta-program",
        enabled=True,
        rollout=0,
        rules=[{"attribute": "email_domain", "values": ["beta.example.org"], "serve": True}],
    )
    await put_flag(
        client,
        root,
        "layout",
        kind="variant",
        enabled=True,
        default="classic",
        variants=[{"name": "classic", "weight": 0}, {"name": "grid", "weight": 1000}],
        rules=[{"attribute": "role", "values": ["admin"], "serve": "classic"}],
    )
    await put_flag(client, root, "dark-mode", enabled=False)
    assert await my_flags(client, ada) == {"beta-program": False, "dark-mode": False, "layout": "grid"}
    assert await my_flags(client, bob) == {"beta-program": True, "dark-mode": False, "layout": "grid"}
    assert await my_flags(client, root) == {"beta-program": False, "dark-mode": False, "layout": "classic"}

    # A change is served at once (one process here; tests/contract covers other processes).
    await put_flag(client, root, "dark-mode", status=200, enabled=True)
    assert (await my_flags(client, ada))["dark-mode"] is True
    await client.delete(f"{FLAGS}/beta-program", headers=root)
    assert "beta-program" not in await my_flags(client, bob)

    created = await client.post(
        "/v1/api-keys", json={"name": "app", "scopes": ["generations:read"]}, headers=ada
    )
    assert await my_flags(client, bearer(created.json()["key"])) == {"dark-mode": True, "layout": "grid"}
    assert (await client.get("/v1/flags")).status_code == 401


async def test_the_sunset_style_is_open_only_where_its_flag_is_on(client):
    root = await admin(client)
    ada = await user(client, "ada@example.com")
    bob = await user(client, "bob@example.com")
    request = {"prompt": "a lighthouse at dusk", "size": "256x256", "style": "Sunset"}

    async def generate(headers: dict[str, str]) -> Any:
        return await client.post("/v1/generations", json=request, headers=headers)

    refused = await generate(ada)
    assert refused.status_code == 422
    assert refused.json()["errors"] == [
        {"field": "style", "message": refused.json()["errors"][0]["message"], "code": "unknown_style"}
    ]
    assert "sunset" not in refused.json()["errors"][0]["message"]

    ada_id = (await client.get("/v1/me", headers=ada)).json()["id"]
    await put_flag(
        client,
        root,
        "beta-style-sunset",
        enabled=True,
        rollout=0,
        rules=[{"attribute": "user_id", "values": [ada_id], "serve": True}],
    )
    accepted = await generate(ada)
    assert accepted.status_code == 202, accepted.text
    assert accepted.json()["style"] == "sunset"
    assert (await generate(bob)).status_code == 422  # the rule is Ada's alone

    await put_flag(client, root, "beta-style-sunset", status=200, enabled=False)
    assert (await generate(ada)).status_code == 422  # switched off: closed again at once
    plain = await client.post("/v1/generations", json={**request, "style": "anime"}, headers=bob)
    assert plain.status_code == 202, plain.text
