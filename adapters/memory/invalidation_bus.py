"""An in-process InvalidationBus: the fake, and the real thing when there is one process."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from core.cache_tags import Invalidation


class MemoryInvalidationBus:
    """Implements `core.ports.InvalidationBus` for listeners in this process."""

    def __init__(self) -> None:
        self._listeners: set[asyncio.Queue[Invalidation]] = set()
        self.connected_flag = True  # tests flip it to play a lost connection

    @property
    def connected(self) -> bool:
        return self.connected_flag

    async def publish(self, invalidation: Invalidation) -> None:
        for queue in self._listeners:
            queue.put_nowait(invalidation)

    async def listen(self) -> AsyncIterator[Invalidation]:
        queue: asyncio.Queue[Invalidation] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            yield Invalidation(reset=True)
            while True:
                yield await queue.get()
        finally:
            self._listeners.discard(queue)

    async def ping(self) -> None:
        if not self.connected_flag:
            raise ConnectionError("the invalidation bus is disconnected")
