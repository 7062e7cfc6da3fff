"""In-process single-flight: concurrent requests for one key share one piece of work."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    """Runs at most one `work()` per key at a time; every concurrent caller gets its outcome.

    The work runs in its own task and callers await it through `asyncio.shield`, so a caller
    that is cancelled (say, a client hung up) neither cancels the work nor fails the others.
    An exception from the work reaches every caller of that flight; the next call starts afresh.
    """

    def __init__(self) -> None:
        self._flights: dict[str, asyncio.Task[Any]] = {}

    def __len__(self) -> int:
        """How many flights are running now."""
        return len(self._flights)

    async def run(self, key: str, work: Callable[[], Awaitable[T]]) -> T:
        task = self._flights.get(key)
        if task is None:
            task = asyncio.ensure_future(work())
            self._flights[key] = task
            task.add_done_callback(lambda done: self._land(key, done))
        result: T = await asyncio.shield(task)
        return result

    def _land(self, key: str, task: asyncio.Task[Any]) -> None:
        if self._flights.get(key) is task:
            del self._flights[key]
        if not task.cancelled():
            # Mark the exception as seen: when every caller was cancelled nobody else will.
            task.exception()
