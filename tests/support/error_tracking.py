"""An app registry for error-tracking tests: a manual clock, and a tracking loop that never runs
by itself (tests call `run_once` or `flush`, so every step happens exactly when they say)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import svcs

from adapters.memory.clock import ManualClock
from core.ports import Clock
from entrypoints.error_tracking import ErrorTracking
from entrypoints.settings import Settings
from entrypoints.wiring import service_registry


def driven_by_hand(
    settings: Settings, environ: Mapping[str, str], clock: ManualClock
) -> Callable[[], AbstractAsyncContextManager[svcs.Registry]]:
    @asynccontextmanager
    async def registry() -> AsyncIterator[svcs.Registry]:
        async with service_registry(settings, environ=environ) as services:
            services.register_value(Clock, clock)
            tracking = ErrorTracking(services, settings, interval_seconds=3600)
            services.register_value(ErrorTracking, tracking, on_registry_close=tracking.aclose)
            yield services

    return registry
