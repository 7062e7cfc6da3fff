"""Schema migrations against a fresh PostgreSQL schema."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import psycopg
import pytest

from adapters.postgres import open_pool
from adapters.postgres.migrations import (
    Migration,
    MigrationError,
    apply_migrations,
    load_migrations,
    pending_migrations,
)

FIRST = Migration(1, "0001_first", "CREATE TABLE first (id int PRIMARY KEY);")
SECOND = Migration(2, "0002_second", "CREATE TABLE second (id int);\nINSERT INTO second VALUES (1), (2);")


async def recorded(url: str) -> list[tuple[int, str, str]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT version, name, checksum FROM schema_migrations ORDER BY version")
        return await cursor.fetchall()


async def table_exists(url: str, table: str) -> bool:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        row = await cursor.fetchone()
        return bool(row and row[0])


def test_the_shipped_migrations_load_in_order() -> None:
    migrations = load_migrations()
    assert migrations[0].name == "0001_outbox"
    assert [m.version for m in migrations] == sorted({m.version for m in migrations})
    assert all(m.sql.strip() for m in migrations)


def test_loading_refuses_misnamed_and_duplicate_files(tmp_path: Path) -> None:
    (tmp_path / "0001_a.sql").write_text("SELECT 1;")
    (tmp_path / "README.md").write_text("not a migration")
    assert [m.name for m in load_migrations(tmp_path)] == ["0001_a"]

    (tmp_path / "0001_b.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match="share version 1"):
        load_migrations(tmp_path)

    (tmp_path / "0001_b.sql").unlink()
    (tmp_path / "2_Bad-Name.sql").write_text("SELECT 1;")
    with pytest.raises(MigrationError, match=re.escape("2_Bad-Name.sql")):
        load_migrations(tmp_path)


async def test_apply_on_a_fresh_schema_then_again_is_a_no_op(postgres_url: str) -> None:
    shipped = [m.name for m in load_migrations()]
    assert await pending_migrations(postgres_url) == shipped
    assert not await table_exists(postgres_url, "schema_migrations")  # the check creates nothing

    assert await apply_migrations(postgres_url) == shipped
    assert await apply_migrations(postgres_url) == []
    assert await pending_migrations(postgres_url) == []

    rows = await recorded(postgres_url)
    assert [name for _, name, _ in rows] == shipped
    assert [checksum for _, _, checksum in rows] == [m.checksum for m in load_migrations()]
    assert await table_exists(postgres_url, "outbox")


async def test_pending_lists_only_what_is_missing(postgres_url: str) -> None:
    await apply_migrations(postgres_url, migrations=[FIRST])
    assert await pending_migrations(postgres_url, migrations=[FIRST, SECOND]) == ["0002_second"]
    assert await apply_migrations(postgres_url, migrations=[SECOND, FIRST]) == ["0002_second"]
    assert [version for version, _, _ in await recorded(postgres_url)] == [1, 2]


async def test_concurrent_migrators_apply_each_file_once(postgres_url: str) -> None:
    results = await asyncio.gather(
        *(apply_migrations(postgres_url, migrations=[FIRST, SECOND]) for _ in range(3))
    )

    assert sorted(results, key=len) == [[], [], ["0001_first", "0002_second"]]
    assert [version for version, _, _ in await recorded(postgres_url)] == [1, 2]


async def test_a_failing_migration_rolls_back_and_is_not_recorded(postgres_url: str) -> None:
    broken = Migration(2, "0002_broken", "CREATE TABLE half_done (id int);\nSELECT 1 / 0;")

    with pytest.raises(MigrationError, match="0002_broken") as raised:
        await apply_migrations(postgres_url, migrations=[FIRST, broken])

    assert isinstance(raised.value.__cause__, psycopg.errors.DivisionByZero)
    assert [name for _, name, _ in await recorded(postgres_url)] == ["0001_first"]
    assert not await table_exists(postgres_url, "half_done")
    assert await pending_migrations(postgres_url, migrations=[FIRST, broken]) == ["0002_broken"]


async def test_a_changed_applied_migration_is_an_error_naming_it(postgres_url: str) -> None:
    await apply_migrations(postgres_url, migrations=[FIRST])
    edited = Migration(1, "0001_first", FIRST.sql + "\n-- edited afterwards\n")

    with pytest.raises(MigrationError, match="0001_first"):
        await pending_migrations(postgres_url, migrations=[edited, SECOND])
    with pytest.raises(MigrationError, match="0001_first"):
        await apply_migrations(postgres_url, migrations=[edited, SECOND])
    assert not await table_exists(postgres_url, "second")


async def test_apply_through_a_pool_with_a_statement_timeout(postgres_url: str) -> None:
    slow = Migration(1, "0001_slow", "SELECT pg_sleep(0.3); CREATE TABLE slow_done (id int);")
    pool = await open_pool(postgres_url, min_size=1, max_size=1, statement_timeout_ms=100, name="migrate")
    try:
        assert await apply_migrations(pool, migrations=[slow]) == ["0001_slow"]
        async with pool.connection() as conn:
            # The pool's own timeout is back in force on the connection afterwards.
            cursor = await conn.execute("SHOW statement_timeout")
            assert await cursor.fetchone() == ("100ms",)
            assert await pending_migrations(conn, migrations=[slow]) == []
    finally:
        await pool.close()
    assert await table_exists(postgres_url, "slow_done")


async def test_a_connection_inside_a_transaction_is_refused(postgres_url: str) -> None:
    async with await psycopg.AsyncConnection.connect(postgres_url) as conn:
        with pytest.raises(MigrationError, match="autocommit"):
            await apply_migrations(conn, migrations=[FIRST])
