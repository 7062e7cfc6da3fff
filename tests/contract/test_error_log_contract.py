"""The ErrorLog port's contract, run against the in-memory log and Valkey.

Batches from several processes add up per bucket; a window reads only its own buckets (and only
buckets of its width); merged cells keep the latest correlation ids; cooldown claims follow
`claim_cooldown` on the caller's clock and are atomic. A Hypothesis property holds each adapter's
figures equal to the pure fold of the batches. Then what only one adapter does: Valkey's key TTLs
and its one-round-trip reads, the memory log's forgetting of old buckets.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from adapters.memory.error_log import MemoryErrorLog
from core.error_tracking.model import (
    ErrorBatch,
    ErrorCount,
    Source,
    SourceKind,
    Totals,
    TrafficCount,
    WindowBuckets,
    WindowTotals,
    merge_errors,
    merge_traffic,
    totals_of,
)
from core.error_tracking.window import SlidingWindow
from core.ports import ErrorLog

WINDOW = SlidingWindow.of(60)  # 30 buckets of 2 s
T0 = datetime(2026, 5, 4, 10, 0, 0, 123456, tzinfo=UTC)
ME = Source(kind=SourceKind.HTTP, name="GET /v1/me")
GENERATE = Source(kind=SourceKind.HTTP, name="POST /v1/generations")
RENDER = Source(kind=SourceKind.JOB, name="render_generation", queue="generation")
DELIVER = Source(kind=SourceKind.JOB, name="deliver_webhook", queue="webhooks")


@pytest.fixture(params=["memory", "valkey"])
async def error_log(request: pytest.FixtureRequest) -> AsyncIterator[ErrorLog]:
    if request.param == "memory":
        yield MemoryErrorLog()
        return
    from adapters.valkey.cache import escape_glob
    from adapters.valkey.client import create_valkey_client
    from adapters.valkey.error_log import ValkeyErrorLog

    url, prefix = request.getfixturevalue("valkey_url"), request.getfixturevalue("key_prefix")
    client = create_valkey_client(url)
    try:
        yield ValkeyErrorLog(client, key_prefix=prefix)
    finally:
        async for key in client.scan_iter(match=escape_glob(prefix) + "*", count=500):
            await client.unlink(key)
        await client.aclose()


def error(source: Source, code: str, status: int, count: int, *ids: str, at: datetime = T0) -> ErrorCount:
    category = "server" if status >= 500 or source.kind is SourceKind.JOB else "client"
    return ErrorCount(
        source=source,
        code=code,
        category=category,
        status=status,
        count=count,
        correlation_ids=ids,
        last_at=at,
    )


def batch(at: datetime, traffic: dict[Source, int], *errors: ErrorCount) -> ErrorBatch:
    return ErrorBatch(
        bucket_seconds=WINDOW.bucket_seconds,
        bucket_start=WINDOW.bucket_of(at),
        at=at,
        keep_seconds=WINDOW.keep_seconds(),
        traffic=tuple(TrafficCount(source=s, total=n) for s, n in traffic.items()),
        errors=tuple(e if e.last_at == at else _at(e, at) for e in errors),
    )


def _at(count: ErrorCount, at: datetime) -> ErrorCount:
    return ErrorCount(
        source=count.source,
        code=count.code,
        category=count.category,
        status=count.status,
        count=count.count,
        correlation_ids=count.correlation_ids,
        last_at=at,
    )


async def test_ping(error_log: ErrorLog) -> None:
    await error_log.ping()


async def test_an_empty_window_reads_as_nothing(error_log: ErrorLog) -> None:
    window = WINDOW.buckets(T0)
    assert await error_log.totals(window) == WindowTotals()
    recent = await error_log.recent(window)
    assert (recent.traffic, recent.errors) == ((), ())
    await error_log.add(batch(T0, {}))  # an empty batch is a no-op


async def test_batches_of_several_processes_add_up_over_the_window(error_log: ErrorLog) -> None:
    later = T0 + timedelta(seconds=7)  # another bucket of the same window
    await error_log.add(
        batch(
            T0,
            {ME: 90, RENDER: 10},
            error(ME, "internal_error", 500, 4, "r4", "r3"),
            error(RENDER, "RenderFailed", 0, 2, "j2"),
        )
    )
    await error_log.add(batch(T0, {ME: 10, GENERATE: 5}, error(GENERATE, "validation_failed", 422, 5, "g1")))
    await error_log.add(batch(later, {ME: 100, DELIVER: 3}, error(ME, "internal_error", 500, 1, "r5")))

    totals = await error_log.totals(WINDOW.buckets(later))
    assert totals.http == Totals(total=205, failed=5)  # 422s are errors, not 5xx
    assert totals.jobs == {"generation": Totals(total=10, failed=2), "webhooks": Totals(total=3, failed=0)}

    recent = await error_log.recent(WINDOW.buckets(later))
    assert {t.source: t.total for t in recent.traffic} == {ME: 200, GENERATE: 5, RENDER: 10, DELIVER: 3}
    assert [(e.source, e.code, e.status, e.count) for e in recent.errors] == [
        (ME, "internal_error", 500, 5),
        (GENERATE, "validation_failed", 422, 5),
        (RENDER, "RenderFailed", 0, 2),
    ]
    me = recent.errors[0]
    assert me.correlation_ids == ("r5", "r4", "r3")  # the latest first, across buckets
    assert me.last_at == later
    assert me.category == "server"
    assert recent.errors[2].last_at == T0


async def test_a_window_reads_only_its_own_buckets(error_log: ErrorLog) -> None:
    await error_log.add(batch(T0, {ME: 10}, error(ME, "internal_error", 500, 10, "old")))
    reach = WINDOW.covered_seconds - WINDOW.bucket_seconds  # the farthest a window surely reaches
    recently = T0 + timedelta(seconds=reach)
    await error_log.add(batch(recently, {ME: 4}, error(ME, "not_found", 404, 1, "new")))
    assert (await error_log.totals(WINDOW.buckets(recently))).http == Totals(total=14, failed=10)

    later = T0 + timedelta(seconds=WINDOW.covered_seconds)  # T0's bucket has just left the window
    assert (await error_log.totals(WINDOW.buckets(later))).http == Totals(total=4, failed=0)
    recent = await error_log.recent(WINDOW.buckets(later))
    assert [(e.code, e.correlation_ids) for e in recent.errors] == [("not_found", ("new",))]
    # A window of another bucket width never reads these buckets.
    assert await error_log.totals(SlidingWindow.of(600).buckets(recently)) == WindowTotals()


async def test_a_cell_keeps_its_five_latest_correlation_ids(error_log: ErrorLog) -> None:
    for i in range(4):
        at = T0 + timedelta(milliseconds=100 * i)
        await error_log.add(
            batch(at, {ME: 2}, error(ME, "internal_error", 500, 2, f"id{2 * i + 1}", f"id{2 * i}"))
        )
    (cell,) = (await error_log.recent(WINDOW.buckets(T0 + timedelta(seconds=1)))).errors
    assert cell.count == 8
    assert cell.correlation_ids == ("id7", "id6", "id5", "id4", "id3")
    assert cell.last_at == T0 + timedelta(milliseconds=300)


async def test_names_with_separators_of_their_own_survive(error_log: ErrorLog) -> None:
    odd = Source(kind=SourceKind.HTTP, name="GET /v1/x/{id:str} é|,;:")
    await error_log.add(batch(T0, {odd: 1}, error(odd, "weird code", 503, 1, "c|1")))
    recent = await error_log.recent(WINDOW.buckets(T0))
    assert recent.traffic[0].source == odd
    assert (recent.errors[0].source, recent.errors[0].code, recent.errors[0].correlation_ids) == (
        odd,
        "weird code",
        ("c|1",),
    )


async def test_an_alert_is_claimed_once_per_cooldown(error_log: ErrorLog) -> None:
    assert await error_log.claim_alert("http_5xx_rate", T0, 600)
    assert not await error_log.claim_alert("http_5xx_rate", T0 + timedelta(seconds=1), 600)
    assert not await error_log.claim_alert("http_5xx_rate", T0 + timedelta(seconds=599.9), 600)
    assert await error_log.claim_alert("job_failure_rate:webhooks", T0, 600)  # alerts are independent
    assert await error_log.claim_alert("http_5xx_rate", T0 + timedelta(seconds=600), 600)  # ends on time
    assert not await error_log.claim_alert("http_5xx_rate", T0 + timedelta(seconds=601), 600)


async def test_of_concurrent_claims_one_wins(error_log: ErrorLog) -> None:
    claims = await asyncio.gather(*(error_log.claim_alert("http_5xx_rate", T0, 60) for _ in range(20)))
    assert sorted(claims) == [False] * 19 + [True]


# --- the property: each adapter's figures are the pure fold of what was added ---

sources = st.sampled_from([ME, GENERATE, RENDER, DELIVER])
cells = st.tuples(sources, st.sampled_from(["internal_error", "not_found", "Boom"]), st.integers(1, 9))
batches = st.lists(
    st.tuples(
        st.integers(0, 80),  # seconds after T0
        st.dictionaries(sources, st.integers(1, 50), max_size=4),
        st.lists(cells, max_size=4),
    ),
    max_size=6,
)


def _errors(cells: list[tuple[Source, str, int]], at: datetime, tag: int) -> tuple[ErrorCount, ...]:
    made: dict[tuple[Source, str], ErrorCount] = {}
    for source, code, count in cells:
        status = 0 if source.kind is SourceKind.JOB else (500 if code == "internal_error" else 404)
        made[(source, code)] = error(source, code, status, count, f"b{tag}", at=at)  # one cell per batch
    return tuple(made.values())


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(added=batches, read_after=st.integers(0, 60))
async def test_the_figures_are_the_fold_of_the_batches_in_the_window(
    error_log: ErrorLog, added: list, read_after: int
) -> None:
    # Each example gets its own slice of time, so examples sharing the fixture never meet.
    base = T0 + timedelta(days=_example_day())
    written: list[ErrorBatch] = []
    for tag, (offset, traffic, cells) in enumerate(added):
        at = base + timedelta(seconds=offset)
        made = batch(at, traffic, *_errors(cells, at, tag))
        await error_log.add(made)
        written.append(made)
    # Read after the last write, as the alert check does (never in the past of what it wrote).
    last = max((offset for offset, _, _ in added), default=0)
    window = WINDOW.buckets(base + timedelta(seconds=last + read_after))
    inside = [b for b in written if b.bucket_start in window.starts]

    expected_traffic = merge_traffic(t for b in inside for t in b.traffic)
    expected_errors = merge_errors(e for b in inside for e in b.errors)
    assert await error_log.totals(window) == totals_of(expected_traffic, expected_errors)
    recent = await error_log.recent(window)
    assert recent.traffic == expected_traffic
    assert {e.cell: (e.count, e.last_at) for e in recent.errors} == {
        e.cell: (e.count, e.last_at) for e in expected_errors
    }


_days = iter(range(1, 1_000_000))


def _example_day() -> int:
    return next(_days)


# --- adapter specifics ---


async def test_the_memory_log_forgets_buckets_that_left_their_keep_time() -> None:
    log = MemoryErrorLog()
    first = WindowBuckets(bucket_seconds=WINDOW.bucket_seconds, starts=(WINDOW.bucket_of(T0),))
    await log.add(batch(T0, {ME: 1}))
    await log.add(batch(T0 + timedelta(seconds=WINDOW.keep_seconds()), {ME: 1}))
    assert (await log.totals(first)).http.total == 1  # kept until its keep time has passed
    await log.add(batch(T0 + timedelta(seconds=WINDOW.keep_seconds() + 1), {ME: 1}))
    assert (await log.totals(first)).http.total == 0
    later = {WINDOW.bucket_of(T0 + timedelta(seconds=WINDOW.keep_seconds() + s)) for s in (0, 1)}
    assert len(log) == len(later)


@pytest.mark.services
async def test_valkey_buckets_expire_and_a_read_is_one_round_trip(valkey_url: str, key_prefix: str) -> None:
    from adapters.valkey.cache import escape_glob
    from adapters.valkey.client import create_valkey_client
    from adapters.valkey.error_log import ValkeyErrorLog

    client = create_valkey_client(valkey_url)
    try:
        log = ValkeyErrorLog(client, key_prefix=key_prefix)
        await log.add(
            batch(
                T0,
                {ME: 3, RENDER: 1},
                error(ME, "internal_error", 500, 1, "x"),
                error(RENDER, "E", 0, 1, "y"),
            )
        )
        keys = [key async for key in client.scan_iter(match=escape_glob(key_prefix) + "*")]
        assert {key.decode().rsplit(":", 1)[1] for key in keys} == {"sum", "traffic", "codes", "seen"}
        for key in keys:
            assert 0 < await client.ttl(key) <= WINDOW.keep_seconds()
        await log.claim_alert("http_5xx_rate", T0, 30)
        ttl = await client.pttl(f"{key_prefix}alert_cooldown:http_5xx_rate")
        assert 0 < ttl <= 30_000

        sent: list[object] = []
        original = client.connection_pool.get_connection

        async def counting(*args: object, **kwargs: object) -> object:
            sent.append(args)
            return await original(*args, **kwargs)

        client.connection_pool.get_connection = counting  # type: ignore[method-assign]
        await log.totals(WINDOW.buckets(T0))
        await log.recent(WINDOW.buckets(T0))
        await log.add(batch(T0, {ME: 1}, error(ME, "internal_error", 500, 1, "z")))
        assert len(sent) == 3  # one connection use, so one round trip, each
    finally:
        async for key in client.scan_iter(match=escape_glob(key_prefix) + "*", count=500):
            await client.unlink(key)
        await client.aclose()
