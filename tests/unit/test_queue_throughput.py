"""Throughput from per-bucket finish counts: the rule every JobQueue adapter shares."""

from __future__ import annotations

from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.queue.conventions import (
    THROUGHPUT_BUCKET_SECONDS,
    THROUGHPUT_RETENTION_SECONDS,
    finished_per_minute,
    throughput_bucket,
    throughput_window,
)

NOW = 1_700_000_003.5  # a moment inside a bucket, not on its edge

windows = st.floats(min_value=THROUGHPUT_BUCKET_SECONDS, max_value=THROUGHPUT_RETENTION_SECONDS)


def _counts(finish_times: list[float]) -> dict[int, int]:
    return dict(Counter(throughput_bucket(t) for t in finish_times))


@given(window=windows, ages=st.lists(st.floats(min_value=0, max_value=1.0), max_size=50))
def test_finishes_well_inside_the_window_count_in_full(window: float, ages: list[float]) -> None:
    # Finished at most window - bucket seconds ago: no bucket straddles the window's start.
    times = [NOW - age * (window - THROUGHPUT_BUCKET_SECONDS) for age in ages]
    rate = finished_per_minute(_counts(times), now=NOW, window_seconds=window)
    assert rate == pytest.approx(len(times) * 60 / window)


@given(window=windows, ages=st.lists(st.floats(min_value=0, max_value=2 * 3600), max_size=50))
def test_the_estimate_is_off_by_at_most_the_bucket_at_the_windows_start(
    window: float, ages: list[float]
) -> None:
    times = [NOW - age for age in ages]
    start = NOW - window
    inside = sum(1 for t in times if t > start)
    straddling = sum(1 for t in times if throughput_bucket(t) == throughput_bucket(start))
    estimate = finished_per_minute(_counts(times), now=NOW, window_seconds=window) * window / 60
    assert inside - straddling - 1e-9 <= estimate <= inside + straddling + 1e-9


@given(window=windows, ages=st.lists(st.floats(min_value=0, max_value=2 * 3600), max_size=50))
def test_only_the_windows_buckets_are_read(window: float, ages: list[float]) -> None:
    counts = _counts([NOW - age for age in ages])
    wanted = throughput_window(NOW, window)
    read = {bucket: count for bucket, count in counts.items() if bucket in wanted}
    assert finished_per_minute(read, now=NOW, window_seconds=window) == pytest.approx(
        finished_per_minute(counts, now=NOW, window_seconds=window)
    )


def test_the_oldest_bucket_counts_pro_rata() -> None:
    now = 1000.0
    # Window (940, 1000]: bucket 93 spans [930, 940), outside; bucket 94 [940, 950), fully inside.
    assert finished_per_minute({93: 6, 94: 6}, now=now, window_seconds=60) == pytest.approx(6)
    # Window (935, 1000]: half of bucket 93 lies inside.
    assert finished_per_minute({93: 6}, now=now, window_seconds=65) == pytest.approx(3 * 60 / 65)
    # The current bucket has only run for a part of its length: all it holds is inside.
    assert finished_per_minute({100: 4}, now=1003.0, window_seconds=60) == pytest.approx(4)


@pytest.mark.parametrize("window", [0, -1, THROUGHPUT_RETENTION_SECONDS + 1])
def test_a_window_outside_what_is_kept_is_refused(window: float) -> None:
    with pytest.raises(ValueError):
        finished_per_minute({}, now=NOW, window_seconds=window)
    with pytest.raises(ValueError):
        throughput_window(NOW, window)
