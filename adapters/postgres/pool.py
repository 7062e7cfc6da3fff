"""The PostgreSQL connection pool: autocommit connections, a server-side statement timeout, timed queries.

Connections are in autocommit mode because psycopg's default (an implicit transaction) costs a
COMMIT round trip on every checkout (DESIGN.md §11); code that writes opens `conn.transaction()`.
"""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry
from psycopg import AsyncConnection
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import AsyncConnectionPool

from adapters.postgres.instrumentation import QueryObserver, database_metrics, instrumented_cursor_class

PostgresPool = AsyncConnectionPool[AsyncConnection[Any]]


def pool_conninfo(url: str, *, statement_timeout_ms: int | None) -> str:
    """`url` as a conninfo string whose `options` also set the server-side statement timeout.

    Options already in the URL (e.g. `-csearch_path=...`) are kept; ours is appended.
    """
    if not statement_timeout_ms:
        return url
    existing = str(conninfo_to_dict(url).get("options") or "").strip()
    timeout = f"-c statement_timeout={int(statement_timeout_ms)}"
    return make_conninfo(url, options=f"{existing} {timeout}".strip())


async def open_pool(
    url: str,
    *,
    min_size: int = 5,
    max_size: int = 20,
    acquire_timeout: float = 5.0,
    max_idle: float = 300.0,
    statement_timeout_ms: int | None = 30_000,
    slow_query_seconds: float = 1.0,
    open_timeout: float = 10.0,
    name: str = "pictor",
    registry: CollectorRegistry | None = None,
) -> PostgresPool:
    """Open a pool on `url` and wait until its `min_size` connections are ready; the caller closes it.

    `acquire_timeout` bounds the wait for a free connection (psycopg_pool.PoolTimeout past it);
    `statement_timeout_ms` is enforced by the server on every statement (None or 0: no limit);
    statements slower than `slow_query_seconds` are logged on `pictor.db`. Metrics go to
    `registry` (default: prometheus-client's global registry), gauges labelled by `name`.
    """
    observer = QueryObserver(
        database_metrics(registry), slow_query_seconds=slow_query_seconds, pool_name=name
    )
    pool: PostgresPool = AsyncConnectionPool(
        pool_conninfo(url, statement_timeout_ms=statement_timeout_ms),
        connection_class=AsyncConnection,
        kwargs={"autocommit": True, "cursor_factory": instrumented_cursor_class(observer)},
        min_size=min_size,
        max_size=max_size,
        timeout=acquire_timeout,
        max_idle=max_idle,
        name=name,
        open=False,
    )
    try:
        await pool.open(wait=True, timeout=open_timeout)
    except BaseException:
        # A pool that failed to fill still runs its reconnect workers: stop them.
        await pool.close()
        raise
    return pool
