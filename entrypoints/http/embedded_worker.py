"""A job worker inside the API process, sharing the app's registry (embedded and in-memory set-ups)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar

from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import Settings
from entrypoints.worker import served_queues, start_worker


def embedded_worker_lifespan(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        worker = await start_worker(registry_of(app), settings, served_queues(None))
        try:
            yield
        finally:
            await worker.stop()  # running jobs finish or go back to the queue

    return lifespan
