"""`pictor flags` for real, on PostgreSQL and Valkey, next to a running `pictor serve`: a flag set,
changed or deleted at the command line is served by the running server once the Valkey bus
delivers the change (its snapshot would otherwise live for an hour); mistakes are messages; every
change is audited without an actor.

The other subcommands run in this process (a `pictor` process costs a second to start): `list`,
`get` printing what `set --file` reads, the options, and `evaluate` explaining a user's value.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from adapters.memory.ids import SequentialIds
from adapters.postgres.migrations import apply_migrations
from core.errors import DomainError
from entrypoints.flags_cli import add_flags_commands
from entrypoints.settings import settings_from_mapping
from tests.e2e.processes import PictorProcess, clean_environ, free_port
from tests.support.accounts import PASSWORD
from tests.support.billing_data import add_users, make_user, open_database
from tests.support.services import unique_name

pytestmark = pytest.mark.e2e

WAIT_SECONDS = 10.0  # a bound on waiting for the server to serve a change, not an expectation


def _run(args: list[str], env: dict[str, str], stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", "flags", *args],
        input=stdin,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def _served(base: str, headers: dict[str, str], done: Callable[[dict[str, Any]], bool]) -> float:
    """Seconds until the server's GET /v1/flags satisfies `done`; fails after WAIT_SECONDS."""
    started = time.monotonic()
    while not done(httpx.get(f"{base}/v1/flags", headers=headers, timeout=10).json()["data"]):
        assert time.monotonic() - started < WAIT_SECONDS, "the running server never served the change"
        time.sleep(0.01)
    return time.monotonic() - started


async def _audited(url: str) -> list[tuple[str, str | None, str]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT action, actor_id, target_id FROM audit_log WHERE target_type = 'feature_flag' ORDER BY id"
        )
        return list(await cursor.fetchall())


def test_flags_set_at_the_command_line_reach_a_running_server(
    postgres_url: str, valkey_url: str, tmp_path: Path
) -> None:
    asyncio.run(apply_migrations(postgres_url))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_DATABASE_URL": postgres_url,
            "PICTOR_VALKEY_URL": valkey_url,
            "PICTOR_NAMESPACE": unique_name("flags").replace(":", "_").lower()[:30],
            "PICTOR_QUEUE_URL": "memory://",
            "PICTOR_STORAGE_URL": "memory://",
            "PICTOR_SECRET_URL_SIGNING_KEY": "e2e-signing-key",
            "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "e2e-webhook-key",
            "PICTOR_PORT": str(port),
            "PICTOR_DB_POOL_MIN": "1",
            "PICTOR_CACHE_TTL_SECONDS": "3600",  # only an invalidation can refresh the snapshot
            "PICTOR_LOG_LEVEL": "warning",
        }
    )
    server = PictorProcess(["serve"], env, tmp_path / "serve.log")
    try:
        server.wait_ready(base, timeout=60)
        email = "ann@beta.example.com"
        assert httpx.post(f"{base}/v1/auth/register", json={"email": email, "password": PASSWORD}).is_success
        token = httpx.post(f"{base}/v1/auth/login", json={"email": email, "password": PASSWORD}).json()[
            "token"
        ]
        ann = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{base}/v1/flags", headers=ann).json() == {"data": {}}  # loaded: now cached

        definition = tmp_path / "flag.json"
        definition.write_text(
            json.dumps(
                {
                    "description": "The beta program",
                    "enabled": True,
                    "rollout": 0,
                    "rules": [{"attribute": "email_domain", "values": ["beta.example.com"], "serve": True}],
                }
            )
        )
        assert _ok(_run(["set", "beta", "--file", str(definition)], env)).startswith("created beta")
        took = _served(base, ann, lambda flags: flags.get("beta") is True)
        print(f"\nthe running server served the CLI's new flag after {took:.3f}s")

        assert _ok(_run(["set", "beta", "--no-enabled"], env)).startswith("saved beta")  # options alone
        _served(base, ann, lambda flags: flags.get("beta") is False)

        invalid = _run(["set", "beta", "--rollout", "150", "--variant", "a=1000"], env)
        assert invalid.returncode == 2 and "Traceback" not in invalid.stderr
        assert "rollout: A percentage" in invalid.stderr and "variants: Only variant flags" in invalid.stderr

        assert _ok(_run(["delete", "beta"], env)) == "deleted beta\n"
        _served(base, ann, lambda flags: "beta" not in flags)

        assert asyncio.run(_audited(postgres_url)) == [
            ("feature_flag.created", None, "beta"),
            ("feature_flag.updated", None, "beta"),
            ("feature_flag.deleted", None, "beta"),
        ]
    finally:
        server.terminate()


def test_list_get_options_and_evaluate(
    postgres_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": "memory://",
        "PICTOR_QUEUE_URL": "memory://",
        "PICTOR_STORAGE_URL": "memory://",
        "PICTOR_SECRET_URL_SIGNING_KEY": "k",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        "PICTOR_DB_POOL_MIN": "1",
    }
    parser = argparse.ArgumentParser()
    add_flags_commands(parser.add_subparsers(dest="command"))

    def pictor_flags(*argv: str, stdin: str = "") -> str:
        """`pictor flags ARGV` as `pictor` runs it, minus the process; what it printed."""
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        args = parser.parse_args(["flags", *argv])
        args.environ = env
        assert args.handler(settings_from_mapping(env), args) == 0
        return capsys.readouterr().out

    async def add_ann() -> None:
        async with open_database(postgres_url) as db:  # migrates the schema too
            await add_users(db, make_user(SequentialIds(), "ann@beta.example.com"))

    asyncio.run(add_ann())
    assert pictor_flags("list") == "no feature flags\n"

    rule = json.dumps({"attribute": "email_domain", "values": ["beta.example.com"], "serve": "grid"})
    created = pictor_flags(
        "set", "layout", "--kind", "variant", "--enabled", "--default", "classic",
        "--description", "Layouts", "--variant", "classic=0", "--variant", "grid=1000",
        "--rule", rule, "--expires-at", "2099-01-01T00:00:00Z",
    )  # fmt: skip
    assert created.startswith("created layout")
    pictor_flags("set", "dark-mode", "--default", "TRUE", "--rollout", "0")
    assert pictor_flags("list").splitlines() == [
        "dark-mode  boolean  off  rollout 0%",
        "layout  variant  on   rollout 100%  Layouts",
    ]

    shown = pictor_flags("get", "layout")
    flag = json.loads(shown)
    assert flag["variants"] == [{"name": "classic", "weight": 0}, {"name": "grid", "weight": 1000}]
    assert (flag["default"], flag["expires_at"], flag["stale"]) == ("classic", "2099-01-01T00:00:00Z", False)
    assert json.loads(pictor_flags("get", "dark-mode"))["default"] is True
    assert pictor_flags("set", "layout", "--file", "-", stdin=shown).startswith("saved layout")  # round trip
    assert json.loads(pictor_flags("get", "layout")) == flag  # nothing changed, not even the time

    explained = json.loads(pictor_flags("evaluate", "layout", "--user", "Ann@Beta.Example.com"))
    assert (explained["value"], explained["variant"], explained["reason"]) == (
        "grid",
        "grid",
        "TARGETING_MATCH",
    )
    cleared = json.loads(pictor_flags("set", "layout", "--no-rules", "--no-expiry").split("\n", 1)[1])
    assert (cleared["rules"], cleared["expires_at"]) == ([], None)
    explained = json.loads(pictor_flags("evaluate", "layout", "--user", "ann@beta.example.com"))
    assert explained["reason"] == "STATIC"

    args = parser.parse_args(["flags", "get", "nothing"])
    args.environ = env
    with pytest.raises(DomainError, match="No such feature flag"):  # `pictor` prints it and exits 2
        args.handler(settings_from_mapping(env), args)
    for bad in (["--variant", "grid=lots"], ["--rule", "{not json"], ["--expires-at", "soon"]):
        args = parser.parse_args(["flags", "set", "layout", *bad])
        args.environ = env
        assert args.handler(settings_from_mapping(env), args) == 2
        assert bad[0] in capsys.readouterr().err
    missing_file = parser.parse_args(["flags", "set", "layout", "--file", str(tmp_path / "none.json")])
    missing_file.environ = env
    assert missing_file.handler(settings_from_mapping(env), missing_file) == 2
    assert "cannot read" in capsys.readouterr().err
