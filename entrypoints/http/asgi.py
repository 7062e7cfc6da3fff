"""What the ASGI server loads: `granian --factory entrypoints.http.asgi:app_from_env`."""

from __future__ import annotations

from litestar import Litestar

from entrypoints.http.app import create_app
from entrypoints.logging_setup import configure_logging
from entrypoints.settings import load_settings
from entrypoints.worker import embedded_worker_lifespan


def app_from_env() -> Litestar:
    settings = load_settings()
    configure_logging(settings.log_level, settings.log_format)
    lifespans = [embedded_worker_lifespan(settings)] if settings.runs_embedded_worker else []
    return create_app(settings, extra_lifespans=lifespans)
