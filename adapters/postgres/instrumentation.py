"""Query timing, slow-query logging and pool gauges for the PostgreSQL adapter.

Every statement run through a pool made by `adapters.postgres.pool.open_pool` goes through
`InstrumentedCursor`, which observes its duration in `pictor_db_query_duration_seconds` and logs it
on `pictor.db` when it is slower than the pool's threshold. Pool gauges are refreshed from
`pool.get_stats()` by `record_pool_stats` (call it on scrape, or run `report_pool_stats` as a task);
plain gauges rather than a scrape-time collector, because they keep working in Prometheus
multiprocess mode.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import weakref
from collections.abc import Iterable
from typing import Any, ClassVar, Self, TypeVar, cast

from prometheus_client import REGISTRY, CollectorRegistry, Gauge, Histogram
from psycopg import AsyncCursor, sql
from psycopg.abc import Params, Query
from psycopg_pool import AsyncConnectionPool

logger = logging.getLogger("pictor.db")

Row = TypeVar("Row")
M = TypeVar("M", Histogram, Gauge)

# Known first keywords become the `operation` label; anything else is "other", so the label's
# cardinality stays bounded whatever SQL is sent.
SQL_OPERATIONS = frozenset(
    {
        "select",
        "insert",
        "update",
        "delete",
        "with",
        "merge",
        "values",
        "create",
        "alter",
        "drop",
        "truncate",
        "lock",
        "copy",
        "begin",
        "commit",
        "rollback",
        "set",
        "show",
        "listen",
        "notify",
    }
)
SQL_TEXT_LOG_LIMIT = 300

_LEADING_NOISE = re.compile(r"\A(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.DOTALL)
_FIRST_WORD = re.compile(r"[A-Za-z]+")
_WHITESPACE = re.compile(r"\s+")

# Seconds; from a sub-millisecond primary-key read to a query that hits the statement timeout.
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def query_operation(text: str) -> str:
    """The statement's first SQL keyword, lower-cased, or "other" when it is not a known one."""
    start = _LEADING_NOISE.match(text)
    match = _FIRST_WORD.match(text, start.end() if start else 0)
    if match is None:
        return "other"
    word = match.group().lower()
    return word if word in SQL_OPERATIONS else "other"


def shorten_sql(text: str, limit: int = SQL_TEXT_LOG_LIMIT) -> str:
    """The SQL on one line, cut to `limit` characters, for log lines."""
    flat = _WHITESPACE.sub(" ", text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


class DatabaseMetrics:
    """The adapter's Prometheus metrics, registered once per registry (see `database_metrics`)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.query_duration = _register(
            registry,
            Histogram(
                "pictor_db_query_duration_seconds",
                "Time spent executing SQL statements, by first keyword.",
                ["operation"],
                buckets=QUERY_BUCKETS,
                registry=None,
            ),
        )
        pool_gauges: list[tuple[str, str]] = [
            ("pictor_db_pool_size", "Connections the pool holds, in use or not."),
            ("pictor_db_pool_max", "The most connections the pool may open."),
            ("pictor_db_pool_available", "Idle connections ready to be checked out."),
            ("pictor_db_pool_in_use", "Connections checked out of the pool."),
            ("pictor_db_pool_waiting", "Callers waiting for a connection."),
        ]
        # "livesum": in multiprocess mode the figures of all live processes add up per pool.
        self.pool_size, self.pool_max, self.pool_available, self.pool_in_use, self.pool_waiting = (
            _register(registry, Gauge(name, doc, ["pool"], registry=None, multiprocess_mode="livesum"))
            for name, doc in pool_gauges
        )


_metrics_by_registry: weakref.WeakKeyDictionary[CollectorRegistry, DatabaseMetrics] = (
    weakref.WeakKeyDictionary()
)


def database_metrics(registry: CollectorRegistry | None = None) -> DatabaseMetrics:
    """The metrics in `registry` (default: prometheus-client's global one), created on first use."""
    target = REGISTRY if registry is None else registry
    metrics = _metrics_by_registry.get(target)
    if metrics is None:
        metrics = _metrics_by_registry[target] = DatabaseMetrics(target)
    return metrics


def _register(registry: CollectorRegistry, metric: M) -> M:
    """Register `metric`, or return the one already registered under its name.

    The fallback covers this module being imported a second time (a fresh `_metrics_by_registry`
    against a registry that already holds our metrics), which would otherwise raise
    "Duplicated timeseries".
    """
    try:
        registry.register(metric)
    except ValueError:
        existing = registry._names_to_collectors.get(metric._name)  # no public lookup exists
        if isinstance(existing, type(metric)):
            return existing
        raise
    return metric


class QueryObserver:
    """Where an instrumented cursor reports each statement: the histogram and the slow-query log."""

    def __init__(self, metrics: DatabaseMetrics, *, slow_query_seconds: float, pool_name: str) -> None:
        self.metrics = metrics
        self.slow_query_seconds = slow_query_seconds
        self.pool_name = pool_name

    def observe(self, text: str, seconds: float, *, failed: bool = False) -> None:
        operation = query_operation(text)
        self.metrics.query_duration.labels(operation).observe(seconds)
        if seconds >= self.slow_query_seconds:
            # Only the SQL text: parameters may carry personal data or secrets.
            logger.warning(
                "slow query: %.3f s (%s%s): %s",
                seconds,
                operation,
                ", failed" if failed else "",
                shorten_sql(text),
                extra={
                    "duration_seconds": round(seconds, 6),
                    "operation": operation,
                    "pool": self.pool_name,
                },
            )


class InstrumentedCursor(AsyncCursor[Row]):
    """A cursor that reports every `execute`/`executemany` to its class's `observer`.

    `AsyncConnection.execute` goes through the connection's cursor factory, so installing a
    subclass of this one (see `instrumented_cursor_class`) covers every client-side query.
    """

    __slots__ = ()
    observer: ClassVar[QueryObserver]

    async def execute(
        self,
        query: Query,
        params: Params | None = None,
        *,
        prepare: bool | None = None,
        binary: bool | None = None,
    ) -> Self:
        started = time.perf_counter()
        failed = True
        try:
            # Any: the base method's overloads split Template queries from the rest; we forward both.
            base_execute: Any = super().execute
            await base_execute(query, params, prepare=prepare, binary=binary)
            failed = False
        finally:
            self.observer.observe(self._query_text(query), time.perf_counter() - started, failed=failed)
        return self

    async def executemany(
        self, query: Query, params_seq: Iterable[Params], *, returning: bool = False
    ) -> None:
        started = time.perf_counter()
        failed = True
        try:
            await super().executemany(query, params_seq, returning=returning)
            failed = False
        finally:
            self.observer.observe(self._query_text(query), time.perf_counter() - started, failed=failed)

    def _query_text(self, query: Query) -> str:
        if isinstance(query, str):
            return query
        if isinstance(query, bytes):
            return query.decode(errors="replace")
        if isinstance(query, sql.Composable):
            try:
                return query.as_string(self)
            except Exception:  # a broken connection cannot quote identifiers: keep the metric anyway
                return "other"
        return "other"


def instrumented_cursor_class(observer: QueryObserver) -> type[AsyncCursor[Any]]:
    """A cursor class bound to `observer`, to pass as the connections' `cursor_factory`."""
    return cast(
        "type[AsyncCursor[Any]]",
        type("PictorCursor", (InstrumentedCursor,), {"__slots__": (), "observer": observer}),
    )


def record_pool_stats(pool: AsyncConnectionPool[Any], registry: CollectorRegistry | None = None) -> None:
    """Copy the pool's current figures (`pool.get_stats()`) into the pool gauges, labelled by name."""
    metrics = database_metrics(registry)
    stats = pool.get_stats()
    size = stats.get("pool_size", 0)
    available = stats.get("pool_available", 0)
    metrics.pool_size.labels(pool.name).set(size)
    metrics.pool_max.labels(pool.name).set(stats.get("pool_max", pool.max_size))
    metrics.pool_available.labels(pool.name).set(available)
    metrics.pool_in_use.labels(pool.name).set(max(size - available, 0))
    metrics.pool_waiting.labels(pool.name).set(stats.get("requests_waiting", 0))


def forget_pool_stats(pool_name: str, registry: CollectorRegistry | None = None) -> None:
    """Drop a closed pool's gauge series so they do not linger at their last values."""
    metrics = database_metrics(registry)
    for gauge in (
        metrics.pool_size,
        metrics.pool_max,
        metrics.pool_available,
        metrics.pool_in_use,
        metrics.pool_waiting,
    ):
        try:
            gauge.remove(pool_name)
        except KeyError:
            continue


async def report_pool_stats(
    pool: AsyncConnectionPool[Any],
    *,
    every_seconds: float = 5.0,
    registry: CollectorRegistry | None = None,
) -> None:
    """Refresh the pool gauges every `every_seconds` until cancelled (run it as a background task)."""
    while True:
        record_pool_stats(pool, registry)
        await asyncio.sleep(every_seconds)
