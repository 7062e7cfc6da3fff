"""`pictor serve` with no configuration: embedded PostgreSQL, local files, generated secrets.

Started for real as a process, driven over HTTP, stopped with SIGTERM and started again.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest

from adapters.postgres.embedded import EmbeddedPostgres
from adapters.secrets import FileSecrets
from adapters.storage.factory import blob_store_from_url
from adapters.system import SystemClock
from core.outbox import OutboxMessage
from tests.e2e.processes import PictorProcess, clean_environ, free_port

pytestmark = pytest.mark.e2e

PASSWORD = "a long enough passphrase"


def _embedded_url(data_dir: Path) -> str:
    socket_dir = data_dir / "postgres"
    return f"postgresql://postgres@/pictor?host={quote(str(socket_dir), safe='')}"


async def _write_outbox_message(url: str, message_id: str) -> None:
    from adapters.postgres.database import PostgresDatabase
    from adapters.postgres.pool import open_pool

    pool = await open_pool(url, min_size=1, max_size=1, name="e2e")
    try:
        async with PostgresDatabase(pool).unit_of_work() as uow:
            await uow.outbox.add(
                OutboxMessage(
                    id=message_id, type="e2e.written", occurred_at=datetime.now(UTC), payload={"n": 1}
                )
            )
            await uow.commit()
    finally:
        await pool.close()


async def _outbox_has(url: str, message_id: str) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT 1 FROM outbox WHERE id = %s", (message_id,))).fetchone()
    return row is not None


async def _signed_link(data_dir: Path, base_url: str, key: str, data: bytes) -> str:
    store = blob_store_from_url(
        (data_dir / "blobs").as_uri(),
        secrets=FileSecrets(data_dir / "secrets"),  # the signing key `pictor serve` generated
        clock=SystemClock(),
        public_base_url=base_url,
    )
    await store.put(key, data, content_type="image/png", metadata={"origin": "e2e"})
    return (await store.signed_url(key, expires_in=timedelta(hours=1))).url


def test_serve_starts_on_embedded_defaults_and_keeps_data_across_restarts(tmp_path: Path) -> None:
    data_dir = tmp_path / "var"
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    env = clean_environ(
        {"PICTOR_DATA_DIR": str(data_dir), "PICTOR_PORT": str(port), "PICTOR_LOG_FORMAT": "console"}
    )

    started = time.monotonic()
    server = PictorProcess(["serve"], env, tmp_path / "serve.log")
    try:
        ready = server.wait_ready(base_url, timeout=60)
        print(f"ready after {time.monotonic() - started:.1f} s")  # the README promises seconds, not minutes
        for check in ("database", "queue", "storage"):
            assert ready["checks"][check]["status"] == "pass", ready  # type: ignore[index]
        assert "embedded PostgreSQL" in server.output()

        registered = httpx.post(
            f"{base_url}/v1/auth/register", json={"email": "kept@example.com", "password": PASSWORD}
        )
        assert registered.status_code == 201, registered.text
        login = httpx.post(
            f"{base_url}/v1/auth/login", json={"email": "kept@example.com", "password": PASSWORD}
        )
        session_token = login.json()["token"]

        link = asyncio.run(_signed_link(data_dir, base_url, "e2e/kept.png", b"\x89PNG kept"))
        assert httpx.get(link).content == b"\x89PNG kept"
        asyncio.run(_write_outbox_message(_embedded_url(data_dir), "e2e-message-1"))
        assert server.terminate() == 0, server.output()
    finally:
        server.kill()
    assert EmbeddedPostgres(data_dir / "postgres").pid is None, (
        "the embedded PostgreSQL outlived pictor serve"
    )

    again = PictorProcess(["serve"], env, tmp_path / "serve-again.log")
    try:
        again.wait_ready(base_url, timeout=60)
        response = httpx.get(link)  # same signing key, same file, after a restart
        assert response.status_code == 200, response.text
        assert response.content == b"\x89PNG kept"
        assert asyncio.run(_outbox_has(_embedded_url(data_dir), "e2e-message-1"))
        me = httpx.get(f"{base_url}/v1/me", headers={"Authorization": f"Bearer {session_token}"})
        assert me.status_code == 200, me.text  # sessions live in the embedded PostgreSQL
        assert me.json()["email"] == "kept@example.com"
        assert "generated" not in again.output()  # the secrets from the first run were reused
        assert again.terminate() == 0, again.output()
    finally:
        again.kill()


def test_check_config_masks_secrets(tmp_path: Path) -> None:
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_DATABASE_URL": "postgresql://app:hunter2@db.internal/pictor",
            "PICTOR_METRICS_TOKEN": "very-secret-token",
        }
    )
    process = PictorProcess(["check-config"], env, tmp_path / "check.log")
    assert process.process.wait(timeout=30) == 0
    output = process.output()
    process.kill()
    assert "hunter2" not in output
    assert "very-secret-token" not in output
    assert "postgresql://app:********@db.internal/pictor" in output


def test_bad_configuration_names_the_variable(tmp_path: Path) -> None:
    env = clean_environ({"PICTOR_DATA_DIR": str(tmp_path), "PICTOR_PORT": "eighty"})
    process = PictorProcess(["serve"], env, tmp_path / "bad.log")
    assert process.process.wait(timeout=30) == 2
    output = process.output()
    process.kill()
    assert "PICTOR_PORT" in output
