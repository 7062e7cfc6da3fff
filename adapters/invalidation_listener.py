"""A process's caches hear invalidations through a bus: one background task per cache applies
every message it receives until the cache closes."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from adapters.background_tasks import cancel_and_wait
from core.cache_tags import Invalidation
from core.ports import InvalidationBus

logger = logging.getLogger("pictor.cache")


class InvalidationListener:
    """Hands every invalidation from `bus` to `apply`. A listener that fails (a bug in a bus) is
    restarted after a second, and `apply` gets a reset first: messages may have been missed."""

    def __init__(self, bus: InvalidationBus, apply: Callable[[Invalidation], None], *, name: str) -> None:
        self._bus = bus
        self._apply = apply
        self._name = name
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._listen(), name=self._name)

    async def aclose(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)

    async def _listen(self) -> None:
        while True:
            try:
                async for invalidation in self._bus.listen():
                    self._apply(invalidation)
            except asyncio.CancelledError:
                raise
            except Exception:  # a bug in a bus must not silently freeze the cache
                logger.exception("%s: the invalidation listener failed; restarting", self._name)
                self._apply(Invalidation(reset=True))
                await asyncio.sleep(1.0)
