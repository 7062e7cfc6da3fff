"""Settling the heap: start-up objects frozen out of the collector's sight, larger thresholds."""

from __future__ import annotations

import gc

from entrypoints.heap import GC_THRESHOLDS, settle_heap


def test_settling_freezes_what_exists_and_raises_the_thresholds() -> None:
    before = gc.get_threshold()
    try:
        built_at_start = [object() for _ in range(100)]
        settle_heap()
        assert gc.get_freeze_count() >= len(built_at_start)
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.unfreeze()  # the test process goes on as it was
        gc.set_threshold(*before)
