"""`pictor users create-admin` for real: the password comes from stdin, the admin can log in."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from adapters.postgres.migrations import apply_migrations
from tests.e2e.processes import clean_environ

pytestmark = pytest.mark.e2e


def _run(args: list[str], env: dict[str, str], stdin: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _admin_row(url: str) -> tuple[str, str, bool, str] | None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT role, status, email_verified, password_hash FROM users WHERE email_normalized = %s",
            ("root@example.com",),
        )
        return await cursor.fetchone()


def test_create_admin_reads_the_password_from_stdin(postgres_url: str, tmp_path: Path) -> None:
    asyncio.run(apply_migrations(postgres_url))
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_DATABASE_URL": postgres_url,
            "PICTOR_VALKEY_URL": "memory://",
            "PICTOR_STORAGE_URL": "memory://",
            "PICTOR_SECRET_URL_SIGNING_KEY": "k",
            "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        }
    )
    weak = _run(["users", "create-admin", "root@example.com"], env, "password\n")
    assert weak.returncode == 2
    assert "characters" in weak.stderr or "common" in weak.stderr
    assert "Traceback" not in weak.stderr

    created = _run(["users", "create-admin", "Root@Example.com"], env, "a sturdy admin passphrase\n")
    assert created.returncode == 0, created.stderr
    assert "administrator Root@Example.com created" in created.stdout
    row = asyncio.run(_admin_row(postgres_url))
    assert row is not None
    role, status, verified, password_hash = row
    assert (role, status, verified) == ("admin", "active", True)
    assert password_hash.startswith("$argon2id$")

    again = _run(["users", "create-admin", "root@example.com"], env, "a sturdy admin passphrase\n")
    assert again.returncode == 2
    assert "already registered" in again.stderr.lower() or "email" in again.stderr.lower()
