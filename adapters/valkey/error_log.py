"""The ErrorLog port on Valkey: per-bucket hashes with TTLs, and a script for the cooldown claims.

A bucket (`{prefix}errors:{bucket_seconds}:{start}:…`, the width in the name so that a changed
window never reads buckets of another width) is four keys, all expiring `keep_seconds` after the
bucket's last write:

- `sum`: hash of the alert figures: `http`, `http_failed`, `job␟<queue>`, `job_failed␟<queue>`.
  The alert check reads only these, every second or so in every process: a few small hashes.
- `traffic`: hash of responses per route and runs per job function, for `/admin/errors`' rates.
- `codes`: hash of counts per error cell (kind␟name␟queue␟code␟category␟status).
- `seen`: sorted set of `cell␞correlation id` scored by the time counted (µs), trimmed to the
  latest `MAX_SEEN` members: the latest correlation ids of each cell, and when it was last seen.

Adding a batch is one pipelined round trip (HINCRBYs, ZADD, trims, EXPIREs; not a transaction:
each increment is atomic, and a reader seeing half a batch sees it whole a moment later). Reading
a window is one round trip too. The cooldown is one key per alert holding its end (ms), claimed by
a script that compares it with the caller's `now`, so every process and the memory fake follow the
same rule (`core.error_tracking.rules.claim_cooldown`) on the same clock; the key expires with the
cooldown, as a `SET NX PX` would.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from valkey.asyncio import Valkey

from core.error_tracking.model import (
    ErrorBatch,
    ErrorCount,
    RecentErrors,
    Source,
    SourceKind,
    Totals,
    TrafficCount,
    WindowBuckets,
    WindowTotals,
    merge_errors,
    merge_traffic,
)

FIELD_SEPARATOR: Final = "\x1f"  # never in a route, name or code (the tally replaces control characters)
ID_SEPARATOR: Final = "\x1e"
MAX_SEEN: Final = 1000  # correlation ids kept per bucket (each batch adds at most 5 per cell)

# KEYS[1] the alert's cooldown key. ARGV[1] now (ms), ARGV[2] the cooldown (ms).
# 1 and the new end stored when no cooldown holds past now, else 0.
_CLAIM: Final = """
local held = tonumber(redis.call('GET', KEYS[1]))
local now = tonumber(ARGV[1])
if held ~= nil and now < held then
  return 0
end
redis.call('SET', KEYS[1], string.format('%.0f', now + tonumber(ARGV[2])), 'PX', ARGV[2])
return 1
"""


class ValkeyErrorLog:
    """Implements `core.ports.ErrorLog` on Valkey (or Redis)."""

    def __init__(self, client: Valkey, *, key_prefix: str = "pictor:") -> None:
        self._client = client
        self._prefix = key_prefix
        self._claim = client.register_script(_CLAIM)

    async def add(self, batch: ErrorBatch) -> None:
        if batch.empty:
            return
        sum_key, traffic_key, codes_key, seen_key = self._keys(batch.bucket_seconds, batch.bucket_start)
        pipe = self._client.pipeline(transaction=False)
        for name, value in _sum_fields(batch.totals()).items():
            pipe.hincrby(sum_key, name, value)
        for traffic in batch.traffic:
            pipe.hincrby(traffic_key, _source_field(traffic.source), traffic.total)
        seen: dict[str, float] = {}
        at = _microseconds(batch.at)
        for error in batch.errors:
            cell = _cell_field(error)
            pipe.hincrby(codes_key, cell, error.count)
            # The latest id scores highest; ids differ by a microsecond within a batch.
            for age, correlation_id in enumerate(error.correlation_ids):
                seen[f"{cell}{ID_SEPARATOR}{correlation_id}"] = at - age
        if seen:
            pipe.zadd(seen_key, seen)
            pipe.zremrangebyrank(seen_key, 0, -MAX_SEEN - 1)
        for key in (sum_key, traffic_key, codes_key, seen_key):
            pipe.expire(key, batch.keep_seconds)
        await pipe.execute()

    async def totals(self, window: WindowBuckets) -> WindowTotals:
        pipe = self._client.pipeline(transaction=False)
        for start in window.starts:
            pipe.hgetall(self._keys(window.bucket_seconds, start)[0])
        totals = WindowTotals()
        for fields in await pipe.execute():
            totals += _parse_sums(fields)
        return totals

    async def recent(self, window: WindowBuckets) -> RecentErrors:
        pipe = self._client.pipeline(transaction=False)
        for start in window.starts:
            _, traffic_key, codes_key, seen_key = self._keys(window.bucket_seconds, start)
            pipe.hgetall(traffic_key)
            pipe.hgetall(codes_key)
            pipe.zrange(seen_key, 0, -1, withscores=True)
        replies = await pipe.execute()
        traffic: list[TrafficCount] = []
        errors: list[ErrorCount] = []
        for i in range(0, len(replies), 3):
            traffic_fields, code_fields, seen = replies[i : i + 3]
            traffic.extend(
                TrafficCount(source=_parse_source(_text(field)), total=int(value))
                for field, value in traffic_fields.items()
            )
            errors.extend(_parse_errors(code_fields, seen))
        return RecentErrors(traffic=merge_traffic(traffic), errors=merge_errors(errors))

    async def claim_alert(self, alert: str, now: datetime, cooldown_seconds: float) -> bool:
        cooldown_ms = max(1, math.ceil(cooldown_seconds * 1000))
        now_ms = math.floor(now.timestamp() * 1000)
        claimed = await self._claim(
            keys=[f"{self._prefix}alert_cooldown:{alert}"], args=[now_ms, cooldown_ms]
        )
        return int(claimed) == 1

    async def ping(self) -> None:
        await self._client.ping()

    def _keys(self, bucket_seconds: int, start: int) -> tuple[str, str, str, str]:
        base = f"{self._prefix}errors:{bucket_seconds}:{start}:"
        return base + "sum", base + "traffic", base + "codes", base + "seen"


def _sum_fields(totals: WindowTotals) -> dict[str, int]:
    fields = {"http": totals.http.total, "http_failed": totals.http.failed}
    for queue, figures in totals.jobs.items():
        fields[f"job{FIELD_SEPARATOR}{queue}"] = figures.total
        fields[f"job_failed{FIELD_SEPARATOR}{queue}"] = figures.failed
    return {name: value for name, value in fields.items() if value}


def _parse_sums(fields: dict[bytes, bytes]) -> WindowTotals:
    http = Totals()
    jobs: dict[str, Totals] = {}
    for raw_name, raw_value in fields.items():
        name, value = _text(raw_name), int(raw_value)
        if name == "http":
            http += Totals(total=value)
        elif name == "http_failed":
            http += Totals(failed=value)
        else:
            what, _, queue = name.partition(FIELD_SEPARATOR)
            figures = Totals(failed=value) if what == "job_failed" else Totals(total=value)
            jobs[queue] = jobs.get(queue, Totals()) + figures
    return WindowTotals(http=http, jobs=jobs)


def _source_field(source: Source) -> str:
    return FIELD_SEPARATOR.join((source.kind.value, source.name, source.queue))


def _parse_source(field: str) -> Source:
    kind, name, queue = field.split(FIELD_SEPARATOR)
    return Source(kind=SourceKind(kind), name=name, queue=queue)


def _cell_field(error: ErrorCount) -> str:
    return FIELD_SEPARATOR.join((_source_field(error.source), error.code, error.category, str(error.status)))


def _parse_errors(codes: dict[bytes, bytes], seen: Sequence[tuple[bytes, float]]) -> list[ErrorCount]:
    latest: dict[str, list[tuple[float, str]]] = {}
    for member, score in seen:
        cell, _, correlation_id = _text(member).partition(ID_SEPARATOR)
        latest.setdefault(cell, []).append((score, correlation_id))
    errors: list[ErrorCount] = []
    for raw_cell, raw_count in codes.items():
        cell = _text(raw_cell)
        kind, name, queue, code, category, status = cell.split(FIELD_SEPARATOR)
        ids = sorted(latest.get(cell, ()), reverse=True)
        errors.append(
            ErrorCount(
                source=Source(kind=SourceKind(kind), name=name, queue=queue),
                code=code,
                category=category,
                status=int(status),
                count=int(raw_count),
                correlation_ids=tuple(correlation_id for _, correlation_id in ids),
                last_at=_from_microseconds(ids[0][0]) if ids else None,
            )
        )
    return errors


_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND: Final = timedelta(microseconds=1)


def _microseconds(at: datetime) -> float:
    # Exact integer arithmetic (a float timestamp can be a microsecond off); below 2**53, so the
    # score holds it exactly.
    return float((at - _EPOCH) // _MICROSECOND)


def _from_microseconds(value: float) -> datetime:
    return _EPOCH + int(value) * _MICROSECOND


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
