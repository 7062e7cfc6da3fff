"""What the ASGI server loads: `granian --factory entrypoints.http.asgi:app_from_env`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from litestar import Litestar

from entrypoints.heap import settle_heap
from entrypoints.http.app import create_app
from entrypoints.http.embedded_worker import embedded_worker_lifespan
from entrypoints.http.shutdown import DRAIN_FILE_VARIABLE, die_with_parent
from entrypoints.logging_setup import configure_logging
from entrypoints.settings import load_environment, settings_from_mapping
from entrypoints.wiring import service_registry


@asynccontextmanager
async def settled_heap(_: Litestar) -> AsyncIterator[None]:
    """Once the app has started: see entrypoints.heap."""
    settle_heap()
    yield


def app_from_env() -> Litestar:
    die_with_parent()  # a server worker never outlives the server that started it
    environ = load_environment()
    settings = settings_from_mapping(environ)
    configure_logging(settings.log_level, settings.log_format)
    lifespans = [embedded_worker_lifespan(settings)] if settings.runs_embedded_worker else []
    lifespans.append(settled_heap)  # last: after the registry and the worker have started
    drain_file = environ.get(DRAIN_FILE_VARIABLE)
    return create_app(
        settings,
        registry_factory=lambda: service_registry(settings, environ=environ),
        extra_lifespans=lifespans,
        drain_file=Path(drain_file) if drain_file else None,
    )
