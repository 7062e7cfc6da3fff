"""An in-process RateLimiter: the fake for tests and the embedded default for a single process."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Final

from core.rate_limit import RateLimit, RateLimitDecision, gcra, to_microseconds

# A key whose TAT is not after now is a full bucket, the same as no key: a sweep every so many
# hits drops those, so memory follows the keys in active use, not every key ever seen.
_SWEEP_EVERY_HITS: Final = 1024


class MemoryRateLimiter:
    """Implements `core.ports.RateLimiter` by applying `core.rate_limit.gcra` to a dict of TATs.

    Time comes from `monotonic` (seconds), so tests can drive it with a manual clock. Each call
    reads and writes the dict without awaiting in between, so decisions for one key are atomic
    within the event loop, as the Valkey script's are across processes.
    """

    def __init__(self, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._monotonic = monotonic
        self._tats: dict[str, int] = {}
        self._hits = 0

    async def hit(self, key: str, limit: RateLimit, cost: int = 1) -> RateLimitDecision:
        now = to_microseconds(self._monotonic())
        decision, tat = gcra(self._tats.get(key), now, limit, cost)
        if decision.allowed and tat is not None:
            self._tats[key] = tat
        self._hits += 1
        if self._hits % _SWEEP_EVERY_HITS == 0:
            self._sweep(now)
        return decision

    async def peek(self, key: str, limit: RateLimit) -> RateLimitDecision:
        decision, _ = gcra(self._tats.get(key), to_microseconds(self._monotonic()), limit)
        return decision

    async def reset(self, key: str) -> None:
        self._tats.pop(key, None)

    async def ping(self) -> None:
        return None

    def __len__(self) -> int:
        """How many keys hold state (including full buckets not swept yet)."""
        return len(self._tats)

    def _sweep(self, now: int) -> None:
        for key in [key for key, tat in self._tats.items() if tat <= now]:
            del self._tats[key]
