"""Schema migrations: numbered `.sql` files in `adapters/postgres/migrations/`, applied in order.

Each file runs in its own transaction together with its row in `schema_migrations` (version, name,
checksum, applied_at), so a file is either fully applied and recorded or not at all. A session-level
advisory lock serializes concurrent migrators (two processes starting at once apply each file exactly
once). A file changed after it was applied is an error that names it: fix forward with a new file.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from psycopg import AsyncConnection
from psycopg_pool import AsyncConnectionPool

MIGRATIONS_PACKAGE = "adapters.postgres"
MIGRATIONS_DIRECTORY = "migrations"
_FILE_NAME = re.compile(r"\A(?P<version>\d{4})_(?P<label>[a-z0-9_]+)\.sql\Z")

MigrationTarget = str | AsyncConnectionPool[Any] | AsyncConnection[Any]

# One lock per schema: tests migrate many schemas of one database side by side.
_LOCK_KEY = "hashtextextended('pictor.schema_migrations:' || current_schema(), 0)"


class MigrationError(Exception):
    """A migration could not be applied, or the recorded history does not match the files."""


@dataclass(frozen=True, slots=True)
class Migration:
    """One numbered SQL file. `name` is the file name without `.sql`, e.g. `0001_outbox`."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Traversable | Path | None = None) -> list[Migration]:
    """The migration files in `directory` (default: the ones shipped in this package), by version."""
    folder = directory if directory is not None else files(MIGRATIONS_PACKAGE).joinpath(MIGRATIONS_DIRECTORY)
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        if not entry.name.endswith(".sql"):
            continue
        match = _FILE_NAME.match(entry.name)
        if match is None:
            # A misnamed file would otherwise be skipped silently and never applied.
            raise MigrationError(f"migration file {entry.name!r} is not named NNNN_lower_snake.sql")
        version = int(match["version"])
        if version in found:
            raise MigrationError(f"migrations {found[version].name} and {entry.name} share version {version}")
        found[version] = Migration(version, entry.name.removesuffix(".sql"), entry.read_text("utf-8"))
    return [found[version] for version in sorted(found)]


async def apply_migrations(
    target: MigrationTarget, *, migrations: Sequence[Migration] | None = None
) -> list[str]:
    """Apply the pending migrations in order; returns the names applied (empty when up to date).

    `target` is a database URL, a pool, or an autocommit connection; the search_path of its
    connections decides the schema. Raises MigrationError naming the file that failed or changed.
    """
    wanted = load_migrations() if migrations is None else sorted(migrations, key=lambda m: m.version)
    applied_now: list[str] = []
    async with _connection(target) as conn:
        # Migrations may run longer than the pool's statement timeout; RESET restores the session
        # default (which includes any `-c statement_timeout` from the connection options).
        await conn.execute("SET statement_timeout = 0")
        await conn.execute(f"SELECT pg_advisory_lock({_LOCK_KEY})")
        try:
            await conn.execute(
                """
                CREATE TABLE IF NOT EXISTS schema_migrations (
                    version    integer     PRIMARY KEY,
                    name       text        NOT NULL,
                    checksum   text        NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now()
                )
                """
            )
            for migration in _pending(wanted, await _applied(conn)):
                try:
                    async with conn.transaction():
                        await conn.execute(migration.sql.encode())
                        await conn.execute(
                            "INSERT INTO schema_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                            (migration.version, migration.name, migration.checksum),
                        )
                except Exception as error:
                    raise MigrationError(f"migration {migration.name} failed: {error}") from error
                applied_now.append(migration.name)
        finally:
            await conn.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY})")
            await conn.execute("RESET statement_timeout")
    return applied_now


async def pending_migrations(
    target: MigrationTarget, *, migrations: Sequence[Migration] | None = None
) -> list[str]:
    """Names of the migrations not applied yet, in order; for the start-up check.

    Raises MigrationError when an applied file has changed since. Creates nothing.
    """
    wanted = load_migrations() if migrations is None else sorted(migrations, key=lambda m: m.version)
    async with _connection(target) as conn:
        cursor = await conn.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
        row = await cursor.fetchone()
        applied = await _applied(conn) if row is not None and row[0] else {}
    return [migration.name for migration in _pending(wanted, applied)]


async def _applied(conn: AsyncConnection[Any]) -> dict[int, tuple[str, str]]:
    cursor = await conn.execute("SELECT version, name, checksum FROM schema_migrations")
    return {version: (name, checksum) for version, name, checksum in await cursor.fetchall()}


def _pending(wanted: Sequence[Migration], applied: dict[int, tuple[str, str]]) -> list[Migration]:
    pending: list[Migration] = []
    for migration in wanted:
        recorded = applied.get(migration.version)
        if recorded is None:
            pending.append(migration)
        elif recorded != (migration.name, migration.checksum):
            raise MigrationError(
                f"migration {migration.name} differs from the one applied as {recorded[0]} "
                f"(checksum {recorded[1][:12]}…, file {migration.checksum[:12]}…): "
                "applied migrations must not change; add a new one instead"
            )
    # Versions recorded but unknown here belong to a newer release sharing the database: not ours.
    return pending


@asynccontextmanager
async def _connection(target: MigrationTarget) -> AsyncIterator[AsyncConnection[Any]]:
    if isinstance(target, str):
        async with await AsyncConnection.connect(target, autocommit=True) as conn:
            yield conn
    elif isinstance(target, AsyncConnectionPool):
        async with target.connection() as conn:
            _require_autocommit(conn)
            yield conn
    else:
        _require_autocommit(target)
        yield target


def _require_autocommit(conn: AsyncConnection[Any]) -> None:
    if not conn.autocommit:
        # Inside an implicit transaction each migration's `transaction()` would only be a savepoint.
        raise MigrationError("migrations need an autocommit connection")
