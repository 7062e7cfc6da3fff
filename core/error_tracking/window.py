"""The sliding window: time cut into fixed buckets, the window being the latest few of them.

Counts land in the bucket of the moment they are counted. A window of `count` buckets of
`bucket_seconds` ends with the bucket that holds `now`, so it reaches back between
`(count - 1) * bucket_seconds` and `count * bucket_seconds` seconds: the configured span, to one
bucket's precision, at the cost of a few counters per bucket instead of one entry per event.
Buckets are named by their start in Unix seconds, so every process agrees on them.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Final

import msgspec

from core.error_tracking.model import WindowBuckets

BUCKETS_PER_WINDOW: Final = 30  # the window moves in steps of a thirtieth of its span (10 s of 300 s)


class SlidingWindow(msgspec.Struct, frozen=True, kw_only=True):
    span_seconds: int
    bucket_seconds: int
    count: int

    @classmethod
    def of(cls, span_seconds: int, *, buckets: int = BUCKETS_PER_WINDOW) -> SlidingWindow:
        """A window over about `span_seconds`, in at most `buckets` buckets of whole seconds (more
        for a span under `buckets` seconds, where a bucket cannot be shorter than a second)."""
        if span_seconds < 1:
            raise ValueError("a window spans at least one second")
        if buckets < 1:
            raise ValueError("a window has at least one bucket")
        width = max(1, span_seconds // buckets)
        return cls(span_seconds=span_seconds, bucket_seconds=width, count=span_seconds // width)

    @property
    def covered_seconds(self) -> int:
        """The most the window's buckets cover (the oldest one whole)."""
        return self.count * self.bucket_seconds

    def bucket_of(self, at: datetime) -> int:
        """The start (Unix seconds) of the bucket that holds `at`."""
        second = math.floor(at.timestamp())
        return second - second % self.bucket_seconds

    def buckets(self, now: datetime) -> WindowBuckets:
        """The window's buckets at `now`, the newest (holding `now`) first."""
        newest = self.bucket_of(now)
        return WindowBuckets(
            bucket_seconds=self.bucket_seconds,
            starts=tuple(newest - i * self.bucket_seconds for i in range(self.count)),
        )

    def keep_seconds(self) -> int:
        """How long a bucket must outlive its last write: until it has left the window, plus a
        bucket for a reader that started just before."""
        return self.covered_seconds + 2 * self.bucket_seconds
