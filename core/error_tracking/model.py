"""What error tracking counts: traffic and errors per source, in batches and over a window.

A *source* is where work is done: an HTTP route (method and route template, never a raw path) or a
job function on a queue. Traffic is how much work a source did (responses answered, jobs finished);
an error is one (source, code, category, status) cell with its count and the correlation ids of its
latest occurrences, so an operator can find the log lines.

The merge functions here are the one definition of how batches add up: both ErrorLog adapters use
them, and the contract suite checks the adapters against them.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec

MAX_CORRELATION_IDS: Final = 5  # kept per error cell: enough to find the log lines, small to store


class SourceKind(StrEnum):
    HTTP = "http"
    JOB = "job"


class Source(msgspec.Struct, frozen=True, kw_only=True, order=True):
    """An HTTP route (`name` "GET /v1/generations/{generation_id}") or a job function (`name`
    "render_generation" with its `queue`)."""

    kind: SourceKind
    name: str
    queue: str = ""


class TrafficCount(msgspec.Struct, frozen=True, kw_only=True):
    """Responses a route answered, or jobs of a function that finished (succeeded or failed)."""

    source: Source
    total: int


class ErrorCount(msgspec.Struct, frozen=True, kw_only=True):
    """One error cell: how often `source` failed with `code` (HTTP: the problem's code and status;
    jobs: the DomainError's code, else the exception's class name, status 0)."""

    source: Source
    code: str
    category: str
    status: int = 0
    count: int
    correlation_ids: tuple[str, ...] = ()  # the latest first, at most MAX_CORRELATION_IDS
    last_at: datetime | None = None  # when the latest occurrence was counted, when known

    @property
    def cell(self) -> tuple[Source, str, str, int]:
        """The identity that counts add up under."""
        return (self.source, self.code, self.category, self.status)


class Totals(msgspec.Struct, frozen=True, kw_only=True):
    """Work done and how much of it failed (HTTP: 5xx responses; jobs: failed runs)."""

    total: int = 0
    failed: int = 0

    @property
    def rate(self) -> float:
        return self.failed / self.total if self.total else 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(total=self.total + other.total, failed=self.failed + other.failed)


class WindowTotals(msgspec.Struct, frozen=True, kw_only=True):
    """What the alert rules read: HTTP responses and 5xx, jobs and failures per queue."""

    http: Totals = Totals()
    jobs: dict[str, Totals] = {}

    def __add__(self, other: WindowTotals) -> WindowTotals:
        jobs = dict(self.jobs)
        for queue, totals in other.jobs.items():
            jobs[queue] = jobs.get(queue, Totals()) + totals
        return WindowTotals(http=self.http + other.http, jobs=jobs)


class ErrorBatch(msgspec.Struct, frozen=True, kw_only=True):
    """What one process counted since its last flush, all in the bucket starting at `bucket_start`
    (Unix seconds, a multiple of `bucket_seconds`), counted at `at`. The shared log keeps a bucket
    for `keep_seconds` after its last write."""

    bucket_seconds: int
    bucket_start: int
    at: datetime
    keep_seconds: int
    traffic: tuple[TrafficCount, ...] = ()
    errors: tuple[ErrorCount, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.traffic and not self.errors

    def totals(self) -> WindowTotals:
        return totals_of(self.traffic, self.errors)


class WindowBuckets(msgspec.Struct, frozen=True, kw_only=True):
    """The buckets of one window: starts in Unix seconds, the newest first."""

    bucket_seconds: int
    starts: tuple[int, ...]


class RecentErrors(msgspec.Struct, frozen=True, kw_only=True):
    """A window's traffic per source and its error cells, each merged over the window's buckets."""

    traffic: tuple[TrafficCount, ...] = ()
    errors: tuple[ErrorCount, ...] = ()


def totals_of(traffic: Iterable[TrafficCount], errors: Iterable[ErrorCount]) -> WindowTotals:
    """The alert rules' figures of some counts. Every error response and failed job is an error
    cell, so failures are read from the cells: HTTP statuses of 500 and above, every job cell."""
    http = Totals()
    jobs: dict[str, Totals] = {}
    for count in traffic:
        if count.source.kind is SourceKind.HTTP:
            http += Totals(total=count.total)
        else:
            queue = count.source.queue
            jobs[queue] = jobs.get(queue, Totals()) + Totals(total=count.total)
    for error in errors:
        if error.source.kind is SourceKind.HTTP:
            if error.status >= 500:
                http += Totals(failed=error.count)
        else:
            queue = error.source.queue
            jobs[queue] = jobs.get(queue, Totals()) + Totals(failed=error.count)
    return WindowTotals(http=http, jobs=jobs)


def merge_traffic(counts: Iterable[TrafficCount]) -> tuple[TrafficCount, ...]:
    """One count per source, summed; sorted by source."""
    totals: dict[Source, int] = {}
    for count in counts:
        totals[count.source] = totals.get(count.source, 0) + count.total
    return tuple(TrafficCount(source=source, total=total) for source, total in sorted(totals.items()))


def merge_errors(counts: Iterable[ErrorCount]) -> tuple[ErrorCount, ...]:
    """One count per cell: counts summed, the latest `last_at`, and the correlation ids of the
    latest occurrences (those of later counts first, at most MAX_CORRELATION_IDS, no repeats).
    Sorted by count, largest first, then by cell."""
    merged: dict[tuple[Source, str, str, int], ErrorCount] = {}
    for count in sorted(counts, key=_latest_first):
        previous = merged.get(count.cell)
        if previous is None:
            merged[count.cell] = msgspec.structs.replace(
                count, correlation_ids=_unique(count.correlation_ids)[:MAX_CORRELATION_IDS]
            )
            continue
        ids = _unique(previous.correlation_ids + count.correlation_ids)[:MAX_CORRELATION_IDS]
        merged[count.cell] = msgspec.structs.replace(
            previous, count=previous.count + count.count, correlation_ids=ids
        )
    return tuple(sorted(merged.values(), key=lambda e: (-e.count, e.cell)))


def _latest_first(count: ErrorCount) -> tuple[bool, float]:
    # Counts without a time (none in practice) come last: their ids are the least recent known.
    return (count.last_at is None, -(count.last_at.timestamp() if count.last_at is not None else 0.0))


def _unique(ids: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(ids))
