"""The API's background metrics: the queue gauges, sampled while the app runs (never at scrape
time), and, in multiprocess mode, this process's live gauges forgotten when it stops."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import svcs
from litestar import Litestar

from core.ports import JobQueue
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.settings import Settings
from entrypoints.system_metrics import QueueStatsSampler, forget_this_process


def metrics_sampling_lifespan(settings: Settings) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    @asynccontextmanager
    async def lifespan(app: Litestar) -> AsyncIterator[None]:
        async with svcs.Container(registry_of(app)) as container:
            jobs = await container.aget(JobQueue)
        sampler = QueueStatsSampler(jobs, every_seconds=settings.metrics_sample_interval_seconds)
        try:
            async with sampler.running():
                yield
        finally:
            forget_this_process()

    return lifespan
