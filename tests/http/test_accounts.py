"""Accounts over HTTP on the in-memory wiring, with the job worker running in the app."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory.mailer import MemoryMailer
from core.ports import (
    Database,
    Mailer,
    SessionStore,
)
from entrypoints.http.embedded_worker import embedded_worker_lifespan
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import Settings
from tests.support.accounts import PASSWORD, admin_session, bearer, login, register


@pytest.fixture
def environ(environ: dict[str, str]) -> dict[str, str]:
    return {**environ, "PICTOR_SMTP_URL": "memory://"}


@pytest.fixture
async def client(
    make_app: Callable[..., Litestar], settings: Settings
) -> AsyncIterator[AsyncTestClient[Litestar]]:
    app = make_app(extra_lifespans=[embedded_worker_lifespan(settings)])
    async with AsyncTestClient(app=app) as test_client:
        yield test_client


async def service(client: AsyncTestClient[Litestar], kind: Any) -> Any:
    async with svcs.Container(registry_of(client.app)) as container:
        return await container.aget(kind)


async def wait_for_email(client: AsyncTestClient[Litestar], to: str, kind: str) -> str:
    """The token in the link of the newest `kind` email to `to` (the email job runs in the app)."""
    mailer: MemoryMailer = await service(client, Mailer)
    for _ in range(200):
        message = mailer.last_to(to, kind=kind)
        if message is not None:
            match = re.search(r"token=([A-Za-z0-9_\-]+)", message.text)
            assert match, message.text
            return match.group(1)
        await asyncio.sleep(0.025)
    raise AssertionError(f"no {kind} email to {to}")


async def make_admin(client: AsyncTestClient[Litestar], email: str) -> str:
    return await admin_session(client, email, display_name="Admin")


async def test_register_verify_login_me_key_revoke(client):
    user = await register(client, "Ada@Example.com")
    assert user["email"] == "Ada@Example.com"
    assert user["role"] == "user"
    assert user["email_verified"] is False

    duplicate = await client.post(
        "/v1/auth/register", json={"email": " ada@EXAMPLE.com ", "password": PASSWORD}
    )
    assert duplicate.status_code == 409
    assert duplicate.json()["code"] == "email_taken"

    token = await wait_for_email(client, "Ada@Example.com", "verify_email")
    assert (await client.post("/v1/auth/verify-email", json={"token": token})).status_code == 204
    again = await client.post("/v1/auth/verify-email", json={"token": token})
    assert again.status_code == 409  # single use

    wrong = await client.post(
        "/v1/auth/login", json={"email": "ada@example.com", "password": "nope nope nope"}
    )
    assert wrong.status_code == 401
    assert wrong.json()["code"] == "invalid_credentials"

    response = await client.post("/v1/auth/login", json={"email": "ADA@example.com", "password": PASSWORD})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"token", "session", "user"}
    assert set(body["session"]) >= {"id", "created_at", "expires_at"}
    cookie = response.headers["set-cookie"]
    assert "pictor_session=" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=lax" in cookie or "SameSite=Lax" in cookie
    session_token = body["token"]
    client.cookies.clear()

    me = await client.get("/v1/me", headers=bearer(session_token))
    assert me.status_code == 200
    assert me.json()["email_verified"] is True
    client.cookies.set("pictor_session", session_token)
    assert (await client.get("/v1/me")).status_code == 200  # the cookie works too
    client.cookies.clear()

    created = await client.post("/v1/api-keys", json={"name": "ci"}, headers=bearer(session_token))
    assert created.status_code == 201, created.text
    key = created.json()
    assert re.fullmatch(r"pk_live_[0-9A-Za-z]{38}", key["key"])
    assert sorted(key["scopes"]) == [
        "account:read",
        "generations:read",
        "generations:write",
        "webhooks:manage",
    ]
    assert key["key"].startswith(key["prefix"])

    assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200
    listed = (await client.get("/v1/api-keys", headers=bearer(session_token))).json()["data"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "key" not in listed[0]
    assert listed[0]["last_used_at"] is not None

    assert (
        await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(session_token))
    ).status_code == 204
    revoked = await client.get("/v1/me", headers=bearer(key["key"]))
    assert revoked.status_code == 401
    assert revoked.json()["code"] == "unauthenticated"


async def test_forgot_and_reset_end_every_session(client):
    await register(client, "grace@example.com")
    first = await login(client, "grace@example.com")
    second = await login(client, "grace@example.com")

    unknown = await client.post("/v1/auth/password/forgot", json={"email": "nobody@example.com"})
    assert unknown.status_code == 202
    assert (
        await client.post("/v1/auth/password/forgot", json={"email": "GRACE@example.com"})
    ).status_code == 202
    token = await wait_for_email(client, "grace@example.com", "reset_password")

    weak = await client.post("/v1/auth/password/reset", json={"token": token, "password": "password"})
    assert weak.status_code == 422
    assert weak.json()["code"] == "weak_password"
    new_password = "an entirely new passphrase"
    reset = await client.post(
        "/v1/auth/password/reset", json={"token": "x" + token, "password": new_password}
    )
    assert reset.status_code == 409
    # The weak attempt did not use up the token: consumption and the policy check share a transaction.
    reset = await client.post("/v1/auth/password/reset", json={"token": token, "password": new_password})
    assert reset.status_code == 204, reset.text

    for old in (first, second):
        assert (await client.get("/v1/me", headers=bearer(old))).status_code == 401
    assert (
        await client.post("/v1/auth/login", json={"email": "grace@example.com", "password": PASSWORD})
    ).status_code == 401
    await login(client, "grace@example.com", new_password)


async def test_every_credential_failure_is_401_unauthenticated(client):
    await register(client, "linus@example.com")
    session = await login(client, "linus@example.com")
    admin = await make_admin(client, "root@example.com")

    async def new_key(**extra: Any) -> dict[str, Any]:
        response = await client.post("/v1/api-keys", json={"name": "k", **extra}, headers=bearer(session))
        assert response.status_code == 201, response.text
        return dict(response.json())

    good = await new_key()
    expiring = await new_key(expires_at=(datetime.now(UTC) + timedelta(seconds=1)).isoformat())
    fenced = await new_key(allowed_ips=["10.0.0.0/8", "2001:db8::/32"])
    revoked = await new_key()
    await client.delete(f"/v1/api-keys/{revoked['id']}", headers=bearer(session))
    wrong_checksum = good["key"][:-1] + ("A" if good["key"][-1] != "A" else "B")
    await asyncio.sleep(1.1)

    cases = {
        "missing": {},
        "malformed header": {"Authorization": "Token abc"},
        "empty bearer": {"Authorization": "Bearer "},
        "unknown session": bearer("not-a-session-token"),
        "wrong checksum": bearer(wrong_checksum),
        "revoked": bearer(revoked["key"]),
        "expired": bearer(expiring["key"]),
        "ip not allowed": bearer(fenced["key"]),
    }
    for name, headers in cases.items():
        response = await client.get("/v1/me", headers=headers)
        assert response.status_code == 401, (name, response.text)
        assert response.json()["code"] == "unauthenticated", name

    user_id = (await client.get("/v1/me", headers=bearer(session))).json()["id"]
    suspend = await client.patch(
        f"/admin/users/{user_id}", json={"status": "suspended"}, headers=bearer(admin)
    )
    assert suspend.status_code == 200, suspend.text
    for credential in (session, good["key"]):
        response = await client.get("/v1/me", headers=bearer(credential))
        assert response.status_code == 401
        assert response.json()["code"] == "unauthenticated"


async def test_other_users_objects_are_404_and_admin_routes_403(client):
    await register(client, "alice@example.com")
    await register(client, "bob@example.com")
    alice = await login(client, "alice@example.com")
    bob = await login(client, "bob@example.com")
    key = (await client.post("/v1/api-keys", json={"name": "a"}, headers=bearer(alice))).json()
    alice_sessions = (await client.get("/v1/auth/sessions", headers=bearer(alice))).json()["data"]
    assert [s["current"] for s in alice_sessions] == [True]

    assert (await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(bob))).status_code == 404
    assert (await client.delete("/v1/api-keys/not-an-id", headers=bearer(bob))).status_code == 404
    other = await client.delete(f"/v1/auth/sessions/{alice_sessions[0]['id']}", headers=bearer(bob))
    assert other.status_code == 404
    assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200  # untouched

    for path in ("/admin/users", "/admin/audit", f"/admin/users/{alice_sessions[0]['id']}"):
        response = await client.get(path, headers=bearer(bob))
        assert response.status_code == 403, path
        assert response.json()["code"] == "forbidden"

    patched = await client.patch("/v1/me", json={"role": "admin", "display_name": "Bob"}, headers=bearer(bob))
    assert patched.status_code == 200
    assert patched.json()["role"] == "user"
    assert patched.json()["display_name"] == "Bob"
    assert (await client.get("/admin/users", headers=bearer(bob))).status_code == 403


async def test_password_change_needs_the_current_one_and_ends_other_sessions(client):
    await register(client, "kay@example.com")
    this = await login(client, "kay@example.com")
    other = await login(client, "kay@example.com")
    new_password = "a different long passphrase"
    refused = await client.patch(
        "/v1/me", json={"password": new_password, "current_password": "wrong"}, headers=bearer(this)
    )
    assert refused.status_code == 422  # the session is fine; the field is wrong
    assert refused.json()["errors"][0]["field"] == "current_password"
    changed = await client.patch(
        "/v1/me", json={"password": new_password, "current_password": PASSWORD}, headers=bearer(this)
    )
    assert changed.status_code == 200, changed.text
    assert (await client.get("/v1/me", headers=bearer(this))).status_code == 200
    assert (await client.get("/v1/me", headers=bearer(other))).status_code == 401


async def test_sessions_can_be_listed_ended_and_all_logged_out(client):
    await register(client, "sam@example.com")
    first = await login(client, "sam@example.com")
    second = await login(client, "sam@example.com")
    listed = (await client.get("/v1/auth/sessions", headers=bearer(first))).json()["data"]
    assert len(listed) == 2
    assert {"id", "created_at", "last_seen_at", "expires_at", "ip", "user_agent", "current"} <= set(listed[0])
    other_id = next(s["id"] for s in listed if not s["current"])
    assert (await client.delete(f"/v1/auth/sessions/{other_id}", headers=bearer(first))).status_code == 204
    assert (await client.get("/v1/me", headers=bearer(second))).status_code == 401

    third = await login(client, "sam@example.com")
    assert (await client.post("/v1/auth/logout-all", headers=bearer(first))).status_code == 204
    for token in (first, third):
        assert (await client.get("/v1/me", headers=bearer(token))).status_code == 401

    fourth = await login(client, "sam@example.com")
    assert (await client.post("/v1/auth/logout", headers=bearer(fourth))).status_code == 204
    assert (await client.get("/v1/me", headers=bearer(fourth))).status_code == 401


async def test_failed_logins_are_limited_and_audited(client):
    await register(client, "eve@example.com")
    admin = await make_admin(client, "boss@example.com")
    statuses = []
    for _ in range(6):
        response = await client.post(
            "/v1/auth/login", json={"email": "eve@example.com", "password": "guess guess guess"}
        )
        statuses.append(response.status_code)
    assert statuses[:5] == [401] * 5
    assert statuses[5] == 429
    limited = await client.post("/v1/auth/login", json={"email": "eve@example.com", "password": PASSWORD})
    assert limited.status_code == 429  # even the right password waits
    assert limited.json()["code"] == "too_many_attempts"
    assert int(limited.headers["retry-after"]) >= 1

    audit = (await client.get("/admin/audit", headers=bearer(admin))).json()["data"]
    actions = [record["action"] for record in audit]
    assert "login.suspicious_activity" in actions
    assert actions.count("login.failed") == 5
    suspicious = await client.get("/admin/audit?action=login.suspicious_activity", headers=bearer(admin))
    assert {r["action"] for r in suspicious.json()["data"]} == {"login.suspicious_activity"}


async def test_admin_lists_users_with_filters_and_pages(client):
    for n in range(5):
        await register(client, f"user{n}@example.com")
    admin = await make_admin(client, "chief@example.com")
    first = (await client.get("/admin/users?limit=2", headers=bearer(admin))).json()
    assert len(first["data"]) == 2
    second = (
        await client.get(f"/admin/users?limit=2&cursor={first['next_cursor']}", headers=bearer(admin))
    ).json()
    assert not {u["id"] for u in first["data"]} & {u["id"] for u in second["data"]}
    filtered = (await client.get("/admin/users?email=user3", headers=bearer(admin))).json()["data"]
    assert [u["email"] for u in filtered] == ["user3@example.com"]
    bad = await client.get("/admin/users?cursor=garbage", headers=bearer(admin))
    assert bad.status_code == 400
    assert bad.json()["code"] == "invalid_cursor"


async def test_no_secret_is_stored_or_logged_in_clear(client, caplog):
    caplog.set_level(logging.DEBUG)
    await register(client, "quiet@example.com")
    session = await login(client, "quiet@example.com")
    key = (await client.post("/v1/api-keys", json={"name": "s"}, headers=bearer(session))).json()["key"]
    await client.get("/v1/me", headers=bearer(key))

    database = await service(client, Database)
    sessions = await service(client, SessionStore)
    stored = repr(database.__dict__) + repr(sessions.__dict__)
    for secret in (PASSWORD, session, key):
        assert secret not in stored
        assert secret not in caplog.text


async def test_keys_cannot_administer_manage_sessions_or_mint_keys(client):
    admin = await make_admin(client, "head@example.com")
    admin_key = (await client.post("/v1/api-keys", json={"name": "a"}, headers=bearer(admin))).json()["key"]
    for method, path in (
        ("GET", "/admin/users"),
        ("GET", "/admin/audit"),
        ("GET", "/v1/auth/sessions"),
        ("POST", "/v1/auth/logout-all"),
        ("GET", "/v1/api-keys"),
    ):
        response = await client.request(method, path, headers=bearer(admin_key))
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["code"] == "forbidden"
    minted = await client.post("/v1/api-keys", json={"name": "b"}, headers=bearer(admin_key))
    assert minted.status_code == 403
    assert (await client.get("/v1/me", headers=bearer(admin))).status_code == 200  # the session still works


async def test_bad_input_is_a_clear_error_never_a_500(client):
    nul = await client.post("/v1/auth/register", json={"email": "a\u0000b@example.com", "password": PASSWORD})
    assert nul.status_code == 422
    assert nul.json()["code"] == "validation_failed"
    login_nul = await client.post("/v1/auth/login", json={"email": "a\u0000b@example.com", "password": "x"})
    assert login_nul.status_code == 401
    await register(client, "bad@example.com")
    session = await login(client, "bad@example.com")
    key = await client.post("/v1/api-keys", json={"name": "a\u0000b"}, headers=bearer(session))
    assert key.status_code == 422
    plain = await client.post(
        "/v1/auth/login",
        content=b'{"email": "bad@example.com", "password": "x"}',
        headers={"content-type": "text/plain"},
    )
    assert plain.status_code == 415  # a cross-site form cannot post JSON
    assert plain.json()["code"] == "unsupported_media_type"
    huge = await client.post("/v1/auth/login", json={"email": "bad@example.com", "password": "x" * 100_000})
    assert huge.status_code == 401
    admin = await make_admin(client, "over@example.com")
    unknown_action = await client.get("/admin/audit?action=nonsense", headers=bearer(admin))
    assert unknown_action.status_code == 422


async def test_a_suspended_account_cannot_tell_its_password_is_right(client):
    await register(client, "sus@example.com")
    admin = await make_admin(client, "judge@example.com")
    user_id = (await client.get("/admin/users?email=sus", headers=bearer(admin))).json()["data"][0]["id"]
    await client.patch(f"/admin/users/{user_id.upper()}", json={"status": "suspended"}, headers=bearer(admin))
    right = await client.post("/v1/auth/login", json={"email": "sus@example.com", "password": PASSWORD})
    wrong = await client.post(
        "/v1/auth/login", json={"email": "sus@example.com", "password": "wrong wrong wrong"}
    )
    assert right.status_code == wrong.status_code == 401
    assert right.json()["code"] == wrong.json()["code"] == "invalid_credentials"


async def test_parallel_guesses_cannot_outrun_the_login_limit(client):
    await register(client, "race@example.com")
    responses = await asyncio.gather(
        *(
            client.post("/v1/auth/login", json={"email": "race@example.com", "password": f"guess number {n}"})
            for n in range(20)
        )
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses.count(401) == 5  # the burst, and not one password check more
    assert statuses.count(429) == 15


async def test_an_admin_cannot_demote_themselves_whatever_the_id_spelling(client):
    admin = await make_admin(client, "self@example.com")
    me = (await client.get("/v1/me", headers=bearer(admin))).json()
    for spelling in (me["id"], me["id"].upper()):
        response = await client.patch(
            f"/admin/users/{spelling}", json={"role": "user"}, headers=bearer(admin)
        )
        assert response.status_code == 409, spelling


async def test_role_and_status_changes_are_audited_with_before_and_after(client):
    await register(client, "moved@example.com")
    admin = await make_admin(client, "mover@example.com")
    user_id = (await client.get("/admin/users?email=moved", headers=bearer(admin))).json()["data"][0]["id"]
    changed = await client.patch(
        f"/admin/users/{user_id}", json={"role": "admin", "status": "suspended"}, headers=bearer(admin)
    )
    assert changed.status_code == 200
    assert (changed.json()["role"], changed.json()["status"]) == ("admin", "suspended")
    records = (await client.get(f"/admin/audit?target_id={user_id}", headers=bearer(admin))).json()["data"]
    details = {r["action"]: r["details"] for r in records}
    assert details["user.role_changed"] == {"before": "user", "after": "admin"}
    assert details["user.status_changed"] == {"before": "active", "after": "suspended"}
    unchanged = await client.patch(f"/admin/users/{user_id}", json={"role": "admin"}, headers=bearer(admin))
    assert unchanged.status_code == 200
    again = (await client.get(f"/admin/audit?target_id={user_id}", headers=bearer(admin))).json()["data"]
    assert len(again) == len(records)  # nothing changed, nothing recorded
