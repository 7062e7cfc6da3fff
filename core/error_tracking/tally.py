"""One process's counts since its last flush to the shared ErrorLog.

Counting is a dict increment (every HTTP response passes here, so no clock read, no allocation
beyond a key tuple, no IO); `drain` turns the counts into an ErrorBatch for the flush, and
`restore` puts a batch back when the flush failed, so an outage of the shared log loses nothing
(its counts land in a later bucket). Keys are bounded: route templates, job functions and codes
come from the code base, never from what a client sends.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime
from typing import Final

from core.error_tracking.model import (
    MAX_CORRELATION_IDS,
    ErrorBatch,
    ErrorCount,
    Source,
    SourceKind,
    TrafficCount,
)

MAX_LABEL_LENGTH: Final = 200  # a longer route, code or name is cut (keys and labels stay small)


class _Cell:
    __slots__ = ("count", "ids")

    def __init__(self) -> None:
        self.count = 0
        self.ids: deque[str] = deque(maxlen=MAX_CORRELATION_IDS)  # the latest last


# (kind, name, queue, code, category, status)
_CellKey = tuple[SourceKind, str, str, str, str, int]


class ErrorTally:
    """Counts of this process, by source and error cell. Not thread-safe: one event loop uses it."""

    __slots__ = ("_cells", "_jobs", "_requests")

    def __init__(self) -> None:
        self._requests: dict[tuple[str, str], int] = {}  # (method, route template) -> responses
        self._jobs: dict[tuple[str, str], int] = {}  # (queue, function) -> finished runs
        self._cells: dict[_CellKey, _Cell] = {}

    def count_response(self, method: str, route: str) -> None:
        """One HTTP response (any status) of `route` (a route template, never a raw path)."""
        key = (method, route)
        self._requests[key] = self._requests.get(key, 0) + 1

    def count_http_error(
        self, method: str, route: str, *, code: str, category: str, status: int, correlation_id: str
    ) -> None:
        """An error response (status 400 and above); count its response with `count_response` too."""
        self._count_error((SourceKind.HTTP, f"{method} {route}", "", code, category, status), correlation_id)

    def count_job(self, queue: str, function: str) -> None:
        """One finished run of a job (succeeded or failed)."""
        key = (queue, function)
        self._jobs[key] = self._jobs.get(key, 0) + 1

    def count_job_failure(
        self, queue: str, function: str, *, code: str, category: str, correlation_id: str
    ) -> None:
        """A run that raised; count the run with `count_job` too."""
        self._count_error((SourceKind.JOB, function, queue, code, category, 0), correlation_id)

    def _count_error(self, key: _CellKey, correlation_id: str) -> None:
        cell = self._cells.get(key)
        if cell is None:
            cell = self._cells[key] = _Cell()
        cell.count += 1
        cell.ids.append(correlation_id)

    @property
    def empty(self) -> bool:
        return not (self._requests or self._jobs or self._cells)

    def drain(self, *, bucket_seconds: int, bucket_start: int, at: datetime, keep_seconds: int) -> ErrorBatch:
        """Everything counted so far, as one batch in the given bucket; the tally starts over."""
        requests, jobs, cells = self._requests, self._jobs, self._cells
        self._requests, self._jobs, self._cells = {}, {}, {}
        traffic = [
            TrafficCount(source=Source(kind=SourceKind.HTTP, name=_label(f"{method} {route}")), total=n)
            for (method, route), n in requests.items()
        ]
        traffic += [
            TrafficCount(
                source=Source(kind=SourceKind.JOB, name=_label(function), queue=_label(queue)), total=n
            )
            for (queue, function), n in jobs.items()
        ]
        errors = tuple(
            ErrorCount(
                source=Source(kind=kind, name=_label(name), queue=_label(queue)),
                code=_label(code),
                category=_label(category),
                status=status,
                count=cell.count,
                correlation_ids=tuple(reversed(cell.ids)),
                last_at=at,
            )
            for (kind, name, queue, code, category, status), cell in cells.items()
        )
        return ErrorBatch(
            bucket_seconds=bucket_seconds,
            bucket_start=bucket_start,
            at=at,
            keep_seconds=keep_seconds,
            traffic=tuple(traffic),
            errors=errors,
        )

    def restore(self, batch: ErrorBatch) -> None:
        """Count a drained batch again (its flush failed). Counts made since stay; their correlation
        ids stay the latest."""
        for traffic in batch.traffic:
            source = traffic.source
            if source.kind is SourceKind.HTTP:
                method, _, route = source.name.partition(" ")
                key = (method, route)
                self._requests[key] = self._requests.get(key, 0) + traffic.total
            else:
                job = (source.queue, source.name)
                self._jobs[job] = self._jobs.get(job, 0) + traffic.total
        for error in batch.errors:
            source = error.source
            cell_key = (source.kind, source.name, source.queue, error.code, error.category, error.status)
            newer = self._cells.get(cell_key)
            cell = _Cell()
            cell.count = error.count + (newer.count if newer is not None else 0)
            cell.ids.extend(reversed(error.correlation_ids))  # the batch's oldest first
            if newer is not None:
                cell.ids.extend(newer.ids)
            self._cells[cell_key] = cell


def _label(text: str) -> str:
    """Text safe to use in keys and labels: no control characters (the shared log separates fields
    with them), bounded length."""
    if text.isprintable() and len(text) <= MAX_LABEL_LENGTH:
        return text
    return "".join(c if c.isprintable() else "?" for c in text)[:MAX_LABEL_LENGTH]
