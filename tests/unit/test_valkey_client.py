"""Building the Valkey client from a configured URL."""

from __future__ import annotations

import pytest

from adapters.valkey.client import create_valkey_client, normalize_valkey_url


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("valkey://127.0.0.1:6379/2", "redis://127.0.0.1:6379/2"),
        ("valkeys://:secret@cache.internal:6380/0", "rediss://:secret@cache.internal:6380/0"),
        ("redis://localhost", "redis://localhost"),
        ("rediss://localhost?socket_timeout=3", "rediss://localhost?socket_timeout=3"),
        ("VALKEY://localhost", "redis://localhost"),
    ],
)
def test_valkey_schemes_map_to_their_redis_equivalents(url: str, expected: str) -> None:
    assert normalize_valkey_url(url) == expected


def test_an_unknown_scheme_is_refused_without_echoing_the_url() -> None:
    with pytest.raises(ValueError, match="'http'") as raised:
        normalize_valkey_url("http://user:hunter2@localhost:6379")
    assert "hunter2" not in str(raised.value)


async def test_the_client_takes_timeouts_and_url_options() -> None:
    client = create_valkey_client("valkey://127.0.0.1:6379/3?socket_timeout=2.5", connect_timeout=0.5)
    try:
        options = client.connection_pool.connection_kwargs
        assert options["db"] == 3
        assert options["socket_timeout"] == 2.5  # the URL wins over the default
        assert options["socket_connect_timeout"] == 0.5
        assert options["health_check_interval"] == 30
    finally:
        await client.aclose()
