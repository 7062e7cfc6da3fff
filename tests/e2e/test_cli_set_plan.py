"""`pictor users set-plan` for real, on PostgreSQL: the plan changes at once, mistakes are messages."""

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


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _plans(url: str) -> tuple[str, str, str] | None:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT u.plan, s.plan, s.status FROM users u JOIN subscriptions s ON s.user_id = u.id"
            " WHERE u.email_normalized = %s",
            ("ann@example.com",),
        )
        return await cursor.fetchone()


async def _audited(url: str) -> list[tuple[str | None, dict[str, str]]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT actor_id::text, details FROM audit_log WHERE action = 'user.plan_changed'"
        )
        return list(await cursor.fetchall())


def test_set_plan_changes_the_plan_and_explains_mistakes(postgres_url: str, tmp_path: Path) -> None:
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
    created = _run(["users", "create-admin", "ann@example.com"], env, "a sturdy admin passphrase\n")
    assert created.returncode == 0, created.stderr
    assert asyncio.run(_plans(postgres_url)) == ("free", "free", "active")

    changed = _run(["users", "set-plan", "Ann@Example.com", "team"], env)

    assert changed.returncode == 0, changed.stderr
    assert "Ann@Example.com is on the team plan (active)" in changed.stdout
    assert asyncio.run(_plans(postgres_url)) == ("team", "team", "active")
    assert asyncio.run(_audited(postgres_url)) == [(None, {"before": "free", "after": "team"})]

    for args, message in (
        (["users", "set-plan", "ann@example.com", "gold"], "No plan 'gold'"),
        (["users", "set-plan", "bob@example.com", "pro"], "No user with the address bob@example.com"),
        (["users", "set-plan", "not an address", "pro"], "invalid"),
    ):
        refused = _run(args, env)
        assert refused.returncode == 2, refused.stdout
        assert message in refused.stderr and "Traceback" not in refused.stderr
    assert asyncio.run(_plans(postgres_url)) == ("team", "team", "active")
