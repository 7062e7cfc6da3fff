"""An in-process ErrorLog: the fake for tests and the embedded default when there is no Valkey
(one process: the counts and cooldowns are this process's alone)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from core.error_tracking.model import (
    ErrorBatch,
    ErrorCount,
    RecentErrors,
    TrafficCount,
    WindowBuckets,
    WindowTotals,
    merge_errors,
    merge_traffic,
)
from core.error_tracking.rules import claim_cooldown


@dataclass
class _Bucket:
    totals: WindowTotals = field(default_factory=WindowTotals)
    traffic: tuple[TrafficCount, ...] = ()
    errors: tuple[ErrorCount, ...] = ()
    keep_until: int = 0  # Unix seconds, measured on the times of the batches written


class MemoryErrorLog:
    """Implements `core.ports.ErrorLog` with dicts. Every method runs without awaiting in between,
    so claims are atomic within the event loop as the Valkey script's are across processes.

    A bucket is dropped once a batch is written more than its `keep_seconds` after the bucket's
    last write (time as the batches tell it, so tests can drive it with a manual clock).
    """

    def __init__(self) -> None:
        self._buckets: dict[tuple[int, int], _Bucket] = {}  # (bucket_seconds, start) -> counts
        self._cooldowns: dict[str, datetime] = {}  # alert -> end of its cooldown

    async def add(self, batch: ErrorBatch) -> None:
        if batch.empty:
            return
        written = int(batch.at.timestamp())
        self._forget_before(written)
        bucket = self._buckets.setdefault((batch.bucket_seconds, batch.bucket_start), _Bucket())
        bucket.totals += batch.totals()
        bucket.traffic = merge_traffic(bucket.traffic + batch.traffic)
        bucket.errors = merge_errors(bucket.errors + batch.errors)
        bucket.keep_until = max(bucket.keep_until, written + batch.keep_seconds)

    async def totals(self, window: WindowBuckets) -> WindowTotals:
        totals = WindowTotals()
        for bucket in self._in(window):
            totals += bucket.totals
        return totals

    async def recent(self, window: WindowBuckets) -> RecentErrors:
        buckets = self._in(window)
        return RecentErrors(
            traffic=merge_traffic(t for b in buckets for t in b.traffic),
            errors=merge_errors(e for b in buckets for e in b.errors),
        )

    async def claim_alert(self, alert: str, now: datetime, cooldown_seconds: float) -> bool:
        until = claim_cooldown(self._cooldowns.get(alert), now, cooldown_seconds)
        if until is None:
            return False
        self._cooldowns[alert] = until
        return True

    async def ping(self) -> None:
        return None

    def __len__(self) -> int:
        """How many buckets are held."""
        return len(self._buckets)

    def _in(self, window: WindowBuckets) -> list[_Bucket]:
        found = (self._buckets.get((window.bucket_seconds, start)) for start in window.starts)
        return [bucket for bucket in found if bucket is not None]

    def _forget_before(self, now: int) -> None:
        expired = [key for key, bucket in self._buckets.items() if bucket.keep_until < now]
        for key in expired:
            del self._buckets[key]
