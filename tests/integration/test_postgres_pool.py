"""The PostgreSQL pool: connection settings, query metrics, slow-query log and pool gauges."""

from __future__ import annotations

import logging

import psycopg
import pytest
from prometheus_client import CollectorRegistry
from psycopg import sql
from psycopg.pq import TransactionStatus

from adapters.postgres import PostgresDatabase, open_pool
from adapters.postgres.instrumentation import (
    database_metrics,
    forget_pool_stats,
    query_operation,
    record_pool_stats,
    shorten_sql,
)
from adapters.postgres.pool import pool_conninfo
from core.errors import DomainError, ErrorCode


def sample(registry: CollectorRegistry, name: str, labels: dict[str, str]) -> float:
    return registry.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("text", "operation"),
    [
        ("SELECT 1", "select"),
        ("  \n\tinsert into t values (1)", "insert"),
        ("-- why\nUPDATE t SET a = 1", "update"),
        ("/* multi\nline */ DELETE FROM t", "delete"),
        ("WITH x AS (SELECT 1) SELECT * FROM x", "with"),
        ("(SELECT 1)", "other"),
        ("VACUUM t", "other"),
        ("", "other"),
    ],
)
def test_query_operation_is_the_first_known_keyword(text: str, operation: str) -> None:
    assert query_operation(text) == operation


def test_shorten_sql_flattens_and_truncates() -> None:
    assert shorten_sql("SELECT\n    a,\n    b\nFROM t") == "SELECT a, b FROM t"
    shortened = shorten_sql("SELECT " + "x, " * 500 + "y", limit=50)
    assert len(shortened) == 50
    assert shortened.endswith("…")


def test_conninfo_keeps_existing_options_and_adds_the_statement_timeout() -> None:
    conninfo = pool_conninfo(
        "postgresql://u@h:5432/d?options=-csearch_path%3Dtenant", statement_timeout_ms=1500
    )
    options = psycopg.conninfo.conninfo_to_dict(conninfo)["options"]
    assert options == "-csearch_path=tenant -c statement_timeout=1500"
    assert pool_conninfo("postgresql://u@h/d", statement_timeout_ms=None) == "postgresql://u@h/d"


async def test_connections_are_autocommit_with_a_statement_timeout_and_the_url_options(
    postgres_url: str,
) -> None:
    pool = await open_pool(postgres_url, min_size=1, max_size=2, statement_timeout_ms=1234, name="settings")
    try:
        async with pool.connection() as conn:
            assert conn.autocommit
            cursor = await conn.execute("SHOW statement_timeout")
            assert await cursor.fetchone() == ("1234ms",)
            cursor = await conn.execute("SELECT current_schema()")
            schema = await cursor.fetchone()
            # No implicit transaction is left open by a read (no COMMIT round trip on return).
            assert conn.info.transaction_status is TransactionStatus.IDLE
    finally:
        await pool.close()
    assert schema is not None
    assert schema[0] in postgres_url


async def test_the_server_cancels_statements_past_the_timeout(postgres_url: str) -> None:
    pool = await open_pool(postgres_url, min_size=1, max_size=1, statement_timeout_ms=50, name="timeout")
    try:
        async with pool.connection() as conn:
            with pytest.raises(psycopg.errors.QueryCanceled):
                await conn.execute("SELECT pg_sleep(10)")
    finally:
        await pool.close()


async def test_every_query_is_timed_by_operation(postgres_url: str) -> None:
    registry = CollectorRegistry()
    pool = await open_pool(postgres_url, min_size=1, max_size=1, name="timed", registry=registry)
    name = "pictor_db_query_duration_seconds_count"
    try:
        async with pool.connection() as conn:
            await conn.execute("CREATE TABLE timed (n int)")
            async with conn.transaction():
                await conn.execute("INSERT INTO timed VALUES (%s)", (1,))
                await conn.cursor().executemany("INSERT INTO timed VALUES (%s)", [(2,), (3,)])
            await conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("timed")))
            await conn.execute(b"SELECT 1")
            with pytest.raises(psycopg.errors.UndefinedTable):
                await conn.execute("SELECT * FROM missing")
    finally:
        await pool.close()

    assert sample(registry, name, {"operation": "create"}) == 1
    assert sample(registry, name, {"operation": "insert"}) == 2
    assert sample(registry, name, {"operation": "select"}) >= 3  # + whatever the pool ran itself
    assert sample(registry, "pictor_db_query_duration_seconds_sum", {"operation": "insert"}) > 0


async def test_slow_queries_are_logged_with_their_sql_but_not_their_parameters(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    fast = await open_pool(postgres_url, min_size=1, max_size=1, name="fast", registry=registry)
    try:
        with caplog.at_level(logging.WARNING, logger="pictor.db"):
            async with fast.connection() as conn:
                await conn.execute("SELECT %s::text AS fast_query", ("not slow",))
    finally:
        await fast.close()
    assert "fast_query" not in caplog.text

    slow = await open_pool(
        postgres_url, min_size=1, max_size=1, slow_query_seconds=0.0, name="slow", registry=registry
    )
    try:
        with caplog.at_level(logging.WARNING, logger="pictor.db"):
            async with slow.connection() as conn:
                await conn.execute("SELECT %s::text AS slow_query", ("s3cret-parameter",))
    finally:
        await slow.close()

    [record] = [r for r in caplog.records if r.name == "pictor.db" and "slow_query" in r.getMessage()]
    assert record.levelno == logging.WARNING
    assert "SELECT %s::text AS slow_query" in record.getMessage()
    assert "s3cret-parameter" not in caplog.text
    assert record.operation == "select"  # type: ignore[attr-defined]
    assert record.duration_seconds >= 0  # type: ignore[attr-defined]


async def test_pool_gauges_follow_the_pool_and_tolerate_several_pools(postgres_url: str) -> None:
    registry = CollectorRegistry()
    first = await open_pool(postgres_url, min_size=2, max_size=3, name="first", registry=registry)
    second = await open_pool(postgres_url, min_size=1, max_size=2, name="second", registry=registry)
    try:
        async with first.connection():
            record_pool_stats(first, registry)
            record_pool_stats(second, registry)
            assert sample(registry, "pictor_db_pool_size", {"pool": "first"}) == 2
            assert sample(registry, "pictor_db_pool_in_use", {"pool": "first"}) == 1
            assert sample(registry, "pictor_db_pool_available", {"pool": "first"}) == 1
            assert sample(registry, "pictor_db_pool_max", {"pool": "first"}) == 3
            assert sample(registry, "pictor_db_pool_waiting", {"pool": "first"}) == 0
            assert sample(registry, "pictor_db_pool_size", {"pool": "second"}) == 1
            assert sample(registry, "pictor_db_pool_in_use", {"pool": "second"}) == 0
        record_pool_stats(first, registry)
        assert sample(registry, "pictor_db_pool_in_use", {"pool": "first"}) == 0
    finally:
        await first.close()
        await second.close()
    forget_pool_stats("first", registry)
    assert registry.get_sample_value("pictor_db_pool_size", {"pool": "first"}) is None


def test_metrics_register_once_per_registry() -> None:
    registry = CollectorRegistry()
    assert database_metrics(registry) is database_metrics(registry)
    # As after a second import of the module: a new metrics object finds the registered collectors.
    from adapters.postgres.instrumentation import DatabaseMetrics

    again = DatabaseMetrics(registry)
    assert again.query_duration is database_metrics(registry).query_duration


async def test_ping_and_a_busy_pool(postgres_url: str) -> None:
    pool = await open_pool(postgres_url, min_size=1, max_size=1, acquire_timeout=0.2, name="busy")
    db = PostgresDatabase(pool, ping_timeout=0.2)
    try:
        await db.ping()
        async with db.unit_of_work():
            with pytest.raises(DomainError) as raised:
                async with db.unit_of_work():
                    pass
            with pytest.raises(TimeoutError):
                await db.ping()
        await db.ping()
    finally:
        await pool.close()
    assert raised.value.code is ErrorCode.SERVICE_UNAVAILABLE


async def test_a_unit_of_work_returns_its_connection_whatever_happens(postgres_url: str) -> None:
    pool = await open_pool(postgres_url, min_size=1, max_size=1, name="returns")
    db = PostgresDatabase(pool)
    try:
        async with db.unit_of_work() as uow:
            assert uow.connection.info.transaction_status is TransactionStatus.INTRANS
            await uow.commit()
        with pytest.raises(psycopg.errors.UndefinedTable):
            async with db.unit_of_work() as uow:
                await uow.connection.execute("SELECT * FROM missing")
        async with db.unit_of_work() as uow:  # the only connection is back, and usable
            cursor = await uow.connection.execute("SELECT 1")
            assert await cursor.fetchone() == (1,)
        assert pool.get_stats()["pool_available"] == 1
    finally:
        await pool.close()


async def test_opening_a_pool_on_an_unreachable_server_fails_and_cleans_up() -> None:
    with pytest.raises(psycopg.OperationalError):
        await open_pool(
            "postgresql://postgres@127.0.0.1:1/none?connect_timeout=1",
            min_size=1,
            max_size=1,
            open_timeout=0.5,
            name="unreachable",
        )
