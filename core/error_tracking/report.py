"""What `GET /admin/errors` shows: the window's error cells with counts, rates and the latest
correlation ids, the totals and each alert rule's state."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Final

import msgspec

from core.accounts.principal import Principal
from core.error_tracking.model import ErrorCount, SourceKind, totals_of
from core.error_tracking.rules import AlertCheck, AlertRules, evaluate
from core.errors import DomainError, ErrorCode
from core.ports import Clock, ErrorLog

DEFAULT_LIMIT: Final = 50
MAX_LIMIT: Final = 500


class ErrorRow(msgspec.Struct, frozen=True, kw_only=True):
    """One error cell over the window. `rate` is its share of its route's responses or of its job
    function's runs; `per_minute` its frequency."""

    kind: SourceKind
    route: str | None  # "GET /v1/generations/{generation_id}" (HTTP)
    job: str | None  # the job function (jobs)
    queue: str | None
    code: str
    category: str
    status: int | None  # HTTP status
    count: int
    rate: float
    per_minute: float
    last_seen_at: datetime | None
    last_correlation_ids: tuple[str, ...]


class QueueFigures(msgspec.Struct, frozen=True, kw_only=True):
    queue: str
    finished: int
    failed: int
    failure_rate: float


class HttpFigures(msgspec.Struct, frozen=True, kw_only=True):
    responses: int
    server_errors: int
    server_error_rate: float


class ErrorReport(msgspec.Struct, frozen=True, kw_only=True):
    window_seconds: int
    since: datetime
    until: datetime
    http: HttpFigures
    queues: tuple[QueueFigures, ...]
    alerts: tuple[AlertCheck, ...]
    errors: tuple[ErrorRow, ...]  # by count, largest first


async def error_report(
    admin: Principal,
    *,
    log: ErrorLog,
    clock: Clock,
    rules: AlertRules,
    kind: SourceKind | None = None,
    limit: int | None = None,
) -> ErrorReport:
    """The window's errors (of one `kind` when given, at most `limit` rows). Administrators in
    person only, as the rest of administration."""
    admin.require_session()
    admin.require_admin()
    size = DEFAULT_LIMIT if limit is None else limit
    if not 1 <= size <= MAX_LIMIT:
        raise DomainError(ErrorCode.BAD_REQUEST, f"limit must be between 1 and {MAX_LIMIT}")
    now = clock.now()
    window = rules.window.buckets(now)
    recent = await log.recent(window)
    totals = totals_of(recent.traffic, recent.errors)
    runs = {count.source: count.total for count in recent.traffic}
    minutes = rules.window.covered_seconds / 60
    rows = tuple(
        _row(error, runs.get(error.source, 0), minutes)
        for error in recent.errors
        if kind is None or error.source.kind is kind
    )
    return ErrorReport(
        window_seconds=rules.window.covered_seconds,
        since=now - timedelta(seconds=rules.window.covered_seconds),
        until=now,
        http=HttpFigures(
            responses=totals.http.total, server_errors=totals.http.failed, server_error_rate=totals.http.rate
        ),
        queues=tuple(
            QueueFigures(queue=queue, finished=t.total, failed=t.failed, failure_rate=t.rate)
            for queue, t in sorted(totals.jobs.items())
        ),
        alerts=tuple(evaluate(rules, totals)),
        errors=rows[:size],
    )


def _row(error: ErrorCount, runs: int, minutes: float) -> ErrorRow:
    http = error.source.kind is SourceKind.HTTP
    return ErrorRow(
        kind=error.source.kind,
        route=error.source.name if http else None,
        job=None if http else error.source.name,
        queue=None if http else error.source.queue,
        code=error.code,
        category=error.category,
        status=error.status if http else None,
        count=error.count,
        rate=error.count / max(runs, error.count),
        per_minute=error.count / minutes,
        last_seen_at=error.last_at,
        last_correlation_ids=error.correlation_ids,
    )
