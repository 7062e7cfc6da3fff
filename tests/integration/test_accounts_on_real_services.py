"""The accounts flow over HTTP on real PostgreSQL, Valkey (sessions, rate limits, SAQ queue) and a
real SMTP server: the verification and reset tokens are read from the mail it received."""

from __future__ import annotations

import asyncio
import email
import email.policy
import logging
import re
import socket
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from aiosmtpd.controller import Controller
from litestar.testing import AsyncTestClient
from valkey.asyncio import Valkey

from adapters.postgres.migrations import apply_migrations
from entrypoints.http.app import create_app
from entrypoints.http.embedded_worker import embedded_worker_lifespan
from entrypoints.settings import settings_from_mapping
from entrypoints.wiring import service_registry
from tests.support.accounts import PASSWORD, bearer, login, register
from tests.support.services import unique_name


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []

    async def handle_DATA(self, server: object, session: object, envelope: object) -> str:
        content = envelope.content  # type: ignore[attr-defined]
        self.messages.append(email.message_from_bytes(content, policy=email.policy.default))  # type: ignore[arg-type]
        return "250 OK"

    async def token_for(self, to: str, subject_word: str) -> str:
        for _ in range(400):
            for message in reversed(self.messages):
                if message["To"] == to and subject_word in message["Subject"].lower():
                    text = message.get_body(preferencelist=("plain",)).get_content()
                    match = re.search(r"token=([A-Za-z0-9_\-]+)", text)
                    assert match, text
                    return match.group(1)
            await asyncio.sleep(0.025)
        raise AssertionError(f"no '{subject_word}' mail to {to}: {[m['Subject'] for m in self.messages]}")


@pytest.fixture
def smtp_server() -> Iterator[tuple[Inbox, int]]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


async def _stored_text(postgres_url: str, valkey_url: str, namespace: str) -> str:
    """Everything the flow left in PostgreSQL's account tables and under its Valkey namespace."""
    texts: list[str] = []
    async with await psycopg.AsyncConnection.connect(postgres_url, autocommit=True) as conn:
        for table in ("users", "api_keys", "one_time_tokens", "audit_log", "sessions", "outbox"):
            rows = await (await conn.execute(f"SELECT * FROM {table}")).fetchall()
            texts.append(repr(rows))
    client = Valkey.from_url(valkey_url)
    try:
        async for key in client.scan_iter(match=f"{namespace}:*", count=500):
            kind = await client.type(key)
            if kind == b"string":
                texts.append(repr(await client.get(key)))
            elif kind == b"zset":
                texts.append(repr(await client.zrange(key, 0, -1)))
            elif kind == b"hash":
                texts.append(repr(await client.hgetall(key)))
            texts.append(repr(key))
    finally:
        await client.aclose()
    return "\n".join(texts)


async def test_full_flow_on_real_services(postgres_url, valkey_url, smtp_server, tmp_path: Path, caplog):
    caplog.set_level(logging.DEBUG)
    inbox, port = smtp_server
    namespace = unique_name("acc").replace("_", "-")
    await apply_migrations(postgres_url)
    environ = {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_QUEUE_URL": valkey_url,
        "PICTOR_NAMESPACE": namespace,
        "PICTOR_STORAGE_URL": "memory://",
        "PICTOR_SECRET_URL_SIGNING_KEY": "k",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        "PICTOR_SMTP_URL": f"smtp://127.0.0.1:{port}",
        "PICTOR_MAIL_FROM": "Pictor <no-reply@pictor.test>",
        "PICTOR_DB_POOL_MIN": "1",
    }
    settings = settings_from_mapping(environ)
    app = create_app(
        settings,
        registry_factory=lambda: service_registry(settings, environ=environ),
        extra_lifespans=[embedded_worker_lifespan(settings)],
    )
    async with AsyncTestClient(app=app) as client:
        await register(client, "flow@example.com")
        verify_token = await inbox.token_for("flow@example.com", "confirm")
        assert (await client.post("/v1/auth/verify-email", json={"token": verify_token})).status_code == 204

        session = await login(client, "flow@example.com")
        me = await client.get("/v1/me", headers=bearer(session))
        assert me.status_code == 200
        assert me.json()["email_verified"] is True

        key = (await client.post("/v1/api-keys", json={"name": "flow"}, headers=bearer(session))).json()
        assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 200
        assert (await client.delete(f"/v1/api-keys/{key['id']}", headers=bearer(session))).status_code == 204
        assert (await client.get("/v1/me", headers=bearer(key["key"]))).status_code == 401

        assert (
            await client.post("/v1/auth/password/forgot", json={"email": "flow@example.com"})
        ).status_code == 202
        reset_token = await inbox.token_for("flow@example.com", "reset")
        new_password = "another long passphrase"
        reset = await client.post(
            "/v1/auth/password/reset", json={"token": reset_token, "password": new_password}
        )
        assert reset.status_code == 204, reset.text
        assert (await client.get("/v1/me", headers=bearer(session))).status_code == 401
        fresh_session = await login(client, "flow@example.com", new_password)
        live_key = (
            await client.post("/v1/api-keys", json={"name": "kept"}, headers=bearer(fresh_session))
        ).json()
        assert (await client.get("/v1/me", headers=bearer(live_key["key"]))).status_code == 200

    # No password, token or key at rest or in the logs: only hashes.
    stored = await _stored_text(postgres_url, valkey_url, namespace)
    assert "argon2id" in stored  # the password hashes are there…
    secrets = [
        PASSWORD,
        new_password,
        session,
        fresh_session,
        key["key"],
        live_key["key"],
        verify_token,
        reset_token,
    ]
    # Every log line of the process but the test SMTP server's own (it logs the mail it receives).
    logged = "\n".join(r.getMessage() + repr(r.__dict__) for r in caplog.records if r.name != "mail.log")
    for secret in secrets:
        assert secret not in stored  # …and nothing in clear
        assert secret not in logged
