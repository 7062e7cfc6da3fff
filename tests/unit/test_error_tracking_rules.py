"""Error tracking's pure rules: the sliding window, the tally, merging, thresholds and cooldowns."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.error_tracking.alerts import build_alert
from core.error_tracking.model import (
    MAX_CORRELATION_IDS,
    ErrorCount,
    RecentErrors,
    Source,
    SourceKind,
    Totals,
    WindowTotals,
    merge_errors,
    totals_of,
)
from core.error_tracking.rules import (
    HTTP_5XX_RATE,
    AlertRules,
    claim_cooldown,
    crosses,
    evaluate,
    job_alert,
)
from core.error_tracking.tally import ErrorTally
from core.error_tracking.window import SlidingWindow

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)
instants = st.datetimes(
    min_value=datetime(2020, 1, 1), max_value=datetime(2040, 1, 1), timezones=st.just(UTC)
)


# --- the window ---


@given(span=st.integers(1, 86_400), buckets=st.integers(1, 60))
def test_a_window_is_whole_buckets_within_its_span(span: int, buckets: int) -> None:
    window = SlidingWindow.of(span, buckets=buckets)
    assert window.bucket_seconds >= 1
    assert window.covered_seconds <= span < window.covered_seconds + window.bucket_seconds
    assert window.count >= min(buckets, span)  # never fewer buckets than asked, span allowing


@given(span=st.integers(1, 86_400), now=instants)
def test_the_buckets_end_with_now_and_reach_back_over_the_span(span: int, now: datetime) -> None:
    window = SlidingWindow.of(span)
    starts = window.buckets(now).starts
    width = window.bucket_seconds
    assert len(starts) == window.count
    assert starts[0] <= now.timestamp() < starts[0] + width
    assert all(start % width == 0 for start in starts)
    assert all(a - b == width for a, b in itertools.pairwise(starts))
    # The window reaches back at least all but one bucket, and never a whole span.
    reach = window.covered_seconds - width
    for back in {0, reach // 2, reach}:
        assert window.bucket_of(now - timedelta(seconds=back)) in starts
    assert window.bucket_of(now - timedelta(seconds=window.covered_seconds)) not in starts
    assert window.keep_seconds() > window.covered_seconds


def test_a_five_minute_window_moves_in_ten_second_steps() -> None:
    window = SlidingWindow.of(300)
    assert (window.bucket_seconds, window.count) == (10, 30)
    assert window.buckets(T0 + timedelta(seconds=7)).starts[:2] == (
        int(T0.timestamp()),
        int(T0.timestamp()) - 10,
    )


def test_a_window_needs_a_span_and_buckets() -> None:
    with pytest.raises(ValueError):
        SlidingWindow.of(0)
    with pytest.raises(ValueError):
        SlidingWindow.of(60, buckets=0)


# --- the tally ---

http_events = st.tuples(
    st.sampled_from(["GET", "POST"]),
    st.sampled_from(["/v1/me", "/v1/generations/{generation_id}", "unmatched"]),
    st.sampled_from([200, 201, 404, 422, 500, 503]),
    st.text(alphabet="abcdef0123456789", min_size=4, max_size=8),
)
job_events = st.tuples(
    st.sampled_from(["generation", "webhooks"]),
    st.sampled_from(["render_generation", "deliver_webhook"]),
    st.booleans(),
    st.text(alphabet="abcdef0123456789", min_size=4, max_size=8),
)


def _count(tally: ErrorTally, http: list, jobs: list) -> None:
    for method, route, status, correlation_id in http:
        tally.count_response(method, route)
        if status >= 400:
            code = "internal_error" if status >= 500 else "not_found"
            tally.count_http_error(
                method, route, code=code, category="x", status=status, correlation_id=correlation_id
            )
    for queue, function, failed, correlation_id in jobs:
        tally.count_job(queue, function)
        if failed:
            tally.count_job_failure(
                queue, function, code="RuntimeError", category="server", correlation_id=correlation_id
            )


def _drain(tally: ErrorTally, at: datetime = T0):
    return tally.drain(bucket_seconds=10, bucket_start=1000, at=at, keep_seconds=320)


@given(http=st.lists(http_events, max_size=40), jobs=st.lists(job_events, max_size=40))
def test_a_drained_tally_holds_every_count_and_starts_over(http: list, jobs: list) -> None:
    tally = ErrorTally()
    _count(tally, http, jobs)
    batch = _drain(tally)

    totals = batch.totals()
    assert totals.http == Totals(total=len(http), failed=sum(1 for e in http if e[2] >= 500))
    for queue in {"generation", "webhooks"}:
        ran = [e for e in jobs if e[0] == queue]
        expected = Totals(total=len(ran), failed=sum(1 for e in ran if e[2]))
        assert totals.jobs.get(queue, Totals()) == expected
    # Each cell keeps the correlation ids of its latest occurrences, the latest first.
    for error in batch.errors:
        occurrences = [
            e[3]
            for e in http
            if error.source == Source(kind=SourceKind.HTTP, name=f"{e[0]} {e[1]}") and e[2] == error.status
        ] or [
            e[3] for e in jobs if e[2] and error.source == Source(kind=SourceKind.JOB, name=e[1], queue=e[0])
        ]
        assert error.count == len(occurrences)
        assert error.correlation_ids == tuple(reversed(occurrences))[:MAX_CORRELATION_IDS]
        assert error.last_at == T0
    assert tally.empty and _drain(tally).empty


@given(
    before=st.lists(http_events, max_size=20),
    after=st.lists(http_events, max_size=20),
    jobs=st.lists(job_events, max_size=20),
)
def test_a_restored_batch_loses_nothing_and_newer_ids_stay_first(
    before: list, after: list, jobs: list
) -> None:
    tally, reference = ErrorTally(), ErrorTally()
    _count(tally, before, jobs)
    failed_flush = _drain(tally)
    _count(tally, after, [])  # counted while the flush failed
    tally.restore(failed_flush)
    _count(reference, before, jobs)
    _count(reference, after, [])

    restored, expected = _drain(tally), _drain(reference)
    assert restored.totals() == expected.totals()
    assert sorted(restored.traffic, key=lambda t: t.source) == sorted(
        expected.traffic, key=lambda t: t.source
    )
    assert sorted(restored.errors, key=lambda e: e.cell) == sorted(expected.errors, key=lambda e: e.cell)


def test_labels_lose_control_characters_and_length() -> None:
    tally = ErrorTally()
    tally.count_job("q\x1fueue", "f" * 500)
    (traffic,) = _drain(tally).traffic
    assert traffic.source.queue == "q?ueue"
    assert len(traffic.source.name) == 200


# --- merging ---

cells = st.builds(
    ErrorCount,
    source=st.sampled_from(
        [Source(kind=SourceKind.HTTP, name="GET /v1/me"), Source(kind=SourceKind.JOB, name="f", queue="q")]
    ),
    code=st.sampled_from(["internal_error", "not_found"]),
    category=st.just("server"),
    status=st.sampled_from([0, 500]),
    count=st.integers(1, 50),
    correlation_ids=st.lists(st.text("abc", min_size=1, max_size=3), max_size=5, unique=True).map(tuple),
    last_at=st.integers(0, 10_000).map(lambda s: T0 + timedelta(seconds=s)),
)


@given(counts=st.lists(cells, max_size=30), split=st.integers(0, 30))
def test_merging_adds_up_whichever_way_the_counts_are_grouped(counts: list, split: int) -> None:
    merged = merge_errors(counts)
    in_two_steps = merge_errors(merge_errors(counts[:split]) + merge_errors(counts[split:]))
    assert {e.cell: e.count for e in merged} == {e.cell: e.count for e in in_two_steps}
    assert {e.cell: e.last_at for e in merged} == {e.cell: e.last_at for e in in_two_steps}
    assert sum(e.count for e in merged) == sum(c.count for c in counts)
    assert [e.count for e in merged] == sorted((e.count for e in merged), reverse=True)
    for error in merged:
        mine = [c for c in counts if c.cell == error.cell]
        assert error.last_at == max(c.last_at for c in mine)
        newest = max(mine, key=lambda c: c.last_at)
        assert (
            error.correlation_ids[: len(newest.correlation_ids)]
            == newest.correlation_ids[:MAX_CORRELATION_IDS]
        )
        assert len(error.correlation_ids) <= MAX_CORRELATION_IDS


# --- thresholds and cooldowns ---

rates = st.floats(0.0, 0.999, allow_nan=False)


@given(
    failed=st.integers(0, 1000), extra=st.integers(0, 1000), threshold=rates, min_volume=st.integers(1, 500)
)
def test_an_alert_needs_a_rate_above_its_threshold_on_enough_volume(
    failed: int, extra: int, threshold: float, min_volume: int
) -> None:
    totals = Totals(total=failed + extra, failed=failed)
    active = crosses(totals, threshold=threshold, min_volume=min_volume)
    assert active == (totals.total >= min_volume and totals.rate > threshold)
    if active:  # one more failure never calms it; one more success on the volume never triggers it
        assert crosses(
            Totals(total=totals.total + 1, failed=failed + 1), threshold=threshold, min_volume=min_volume
        )
    if not active and totals.total >= min_volume:
        assert not crosses(
            Totals(total=totals.total + 1, failed=failed), threshold=threshold, min_volume=min_volume
        )


def test_one_error_out_of_one_request_is_not_an_outage() -> None:
    assert not crosses(Totals(total=1, failed=1), threshold=0.05, min_volume=20)
    assert crosses(Totals(total=20, failed=2), threshold=0.05, min_volume=20)
    assert not crosses(Totals(total=20, failed=1), threshold=0.05, min_volume=20)  # exactly 5 %: not above


def _rules(**changes: object) -> AlertRules:
    rules = AlertRules(
        window=SlidingWindow.of(300),
        http_5xx_rate=0.05,
        job_failure_rate=0.25,
        min_volume=20,
        cooldown_seconds=900,
    )
    return msgspec.structs.replace(rules, **changes)


def test_every_queue_in_the_window_gets_its_own_rule() -> None:
    totals = WindowTotals(
        http=Totals(total=100, failed=2),
        jobs={"webhooks": Totals(total=40, failed=20), "email": Totals(total=5, failed=5)},
    )
    checks = evaluate(_rules(), totals)
    assert [(c.alert, c.queue, c.active) for c in checks] == [
        (HTTP_5XX_RATE, None, False),
        (job_alert("email"), "email", False),  # 100 % of 5 runs: below the minimum volume
        (job_alert("webhooks"), "webhooks", True),
    ]
    assert checks[2].rate == 0.5 and checks[2].threshold == 0.25


@pytest.mark.parametrize(
    "changes",
    [{"http_5xx_rate": 1.0}, {"job_failure_rate": -0.1}, {"min_volume": 0}, {"cooldown_seconds": 0}],
)
def test_rules_refuse_nonsense(changes: dict) -> None:
    with pytest.raises(ValueError):
        _rules(**changes)


@given(
    offsets=st.lists(st.integers(0, 100_000), max_size=40).map(sorted),
    cooldown=st.integers(1, 5_000),
)
def test_alerts_go_out_at_most_once_per_cooldown_and_whenever_it_allows(offsets: list, cooldown: int) -> None:
    held: datetime | None = None
    sent: list[datetime] = []
    for offset in offsets:
        now = T0 + timedelta(seconds=offset)
        until = claim_cooldown(held, now, cooldown)
        if until is None:
            assert sent and now < sent[-1] + timedelta(seconds=cooldown)  # refused only within a cooldown
        else:
            assert until == now + timedelta(seconds=cooldown)
            held = until
            sent.append(now)
    assert all(b - a >= timedelta(seconds=cooldown) for a, b in itertools.pairwise(sent))


def test_a_cooldown_ends_exactly_on_time() -> None:
    until = claim_cooldown(None, T0, 60)
    assert until == T0 + timedelta(seconds=60)
    assert claim_cooldown(until, T0 + timedelta(seconds=59.999), 60) is None
    assert claim_cooldown(until, T0 + timedelta(seconds=60), 60) == T0 + timedelta(seconds=120)


# --- the alert ---


def _cell(kind: SourceKind, name: str, code: str, status: int, count: int, queue: str = "") -> ErrorCount:
    return ErrorCount(
        source=Source(kind=kind, name=name, queue=queue),
        code=code,
        category="server",
        status=status,
        count=count,
        correlation_ids=(f"{code}-1", f"{code}-0"),
        last_at=T0,
    )


def test_an_alert_lists_the_errors_behind_it() -> None:
    recent = RecentErrors(
        errors=(
            _cell(SourceKind.HTTP, "GET /v1/me", "unauthenticated", 401, 50),
            _cell(SourceKind.HTTP, "POST /v1/generations", "internal_error", 500, 7),
            _cell(SourceKind.HTTP, "GET /v1/me", "service_unavailable", 503, 3),
            _cell(SourceKind.JOB, "deliver_webhook", "RuntimeError", 0, 9, queue="webhooks"),
        )
    )
    totals = totals_of((), recent.errors)
    (http, webhooks) = evaluate(
        _rules(min_volume=1), WindowTotals(http=Totals(total=100, failed=10), jobs=totals.jobs)
    )
    alert = build_alert(http, recent, rules=_rules(), id="a1", now=T0)
    assert [(e.source, e.code, e.status) for e in alert.top_errors] == [
        ("POST /v1/generations", "internal_error", 500),
        ("GET /v1/me", "service_unavailable", 503),
    ]
    assert alert.top_errors[0].last_correlation_ids == ("internal_error-1", "internal_error-0")
    assert alert.summary == "HTTP 5xx rate is 10.0% (10 of 100) over the last 300 s, above the 5.0% threshold"

    job = build_alert(webhooks, recent, rules=_rules(), id="a2", now=T0)
    assert job.alert == "job_failure_rate:webhooks" and job.queue == "webhooks"
    assert [(e.source, e.queue, e.status, e.count) for e in job.top_errors] == [
        ("deliver_webhook", "webhooks", None, 9)
    ]


def test_totals_count_5xx_responses_and_every_failed_job_as_failures() -> None:
    totals = totals_of(
        (),
        (
            _cell(SourceKind.HTTP, "GET /a", "not_found", 404, 4),
            _cell(SourceKind.HTTP, "GET /a", "internal_error", 500, 2),
            _cell(SourceKind.JOB, "f", "secret_missing", 0, 3, queue="q"),
        ),
    )
    assert totals.http == Totals(total=0, failed=2)
    assert totals.jobs == {"q": Totals(total=0, failed=3)}
