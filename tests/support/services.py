"""Where the real services are, and what to do when one is not there.

Outside CI a test whose service is unreachable is skipped with the reason; with
PICTOR_REQUIRE_SERVICES=1 (set by .ci/run) the same situation fails the test instead.
"""

from __future__ import annotations

import functools
import os
import socket
import uuid
from urllib.parse import urlsplit

import pytest

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
DEFAULT_VALKEY_URL = "redis://127.0.0.1:6379/0"


def services_required() -> bool:
    return os.environ.get("PICTOR_REQUIRE_SERVICES", "") in {"1", "true", "yes"}


def unavailable(reason: str) -> None:
    """Skip (or, when services are required, fail) the current test."""
    if services_required():
        pytest.fail(f"required service unavailable: {reason}", pytrace=False)
    pytest.skip(reason)


def database_url() -> str:
    return os.environ.get("PICTOR_TEST_DATABASE_URL", DEFAULT_DATABASE_URL)


def valkey_url() -> str:
    return os.environ.get("PICTOR_TEST_VALKEY_URL", DEFAULT_VALKEY_URL)


@functools.cache
def _reachable(host: str, port: int) -> str | None:
    try:
        with socket.create_connection((host, port), timeout=2):
            return None
    except OSError as error:
        return f"{host}:{port} unreachable ({error})"


def _check(url: str, default_port: int) -> None:
    parts = urlsplit(url)
    problem = _reachable(parts.hostname or "127.0.0.1", parts.port or default_port)
    if problem:
        unavailable(f"{urlsplit(url).scheme} at {problem}")


def require_postgres() -> str:
    url = database_url()
    _check(url, 5432)
    return url


def require_valkey() -> str:
    url = valkey_url()
    _check(url, 6379)
    return url


def unique_name(prefix: str) -> str:
    """A name no other test uses: schemas, key prefixes, queue names, buckets."""
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
