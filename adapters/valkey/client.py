"""Build the asyncio Valkey client the Valkey adapters share, from a URL."""

from __future__ import annotations

from urllib.parse import urlsplit, urlunsplit

from valkey.asyncio import BlockingConnectionPool, Valkey

# Older valkey-py releases only know the redis schemes; the wire protocol is the same.
_SCHEMES = {"redis": "redis", "rediss": "rediss", "valkey": "redis", "valkeys": "rediss"}


def normalize_valkey_url(url: str) -> str:
    """`url` with a `valkey://`/`valkeys://` scheme spelled as the equivalent `redis` one.

    Raises ValueError (without echoing the URL, which may hold a password) for other schemes.
    """
    parts = urlsplit(url)
    scheme = _SCHEMES.get(parts.scheme.lower())
    if scheme is None:
        raise ValueError(f"Valkey URL scheme must be one of {sorted(_SCHEMES)}, got {parts.scheme!r}")
    return urlunsplit(parts._replace(scheme=scheme))


def create_valkey_client(
    url: str,
    *,
    socket_timeout: float = 1.0,
    connect_timeout: float = 1.0,
    health_check_interval: int = 30,
    max_connections: int = 50,
    pool_timeout: float = 1.0,
    client_name: str | None = "pictor",
) -> Valkey:
    """A client for `url` (`redis://`, `rediss://`, `valkey://`, `valkeys://`; db as the path).

    Timeouts are short because every caller on the hot path has a fallback: a cache that does not
    answer within a second is as good as down. The pool blocks up to `pool_timeout` for a free
    connection instead of opening unbounded ones under load. Query-string options in the URL
    (e.g. `?socket_timeout=2`) override these arguments. Close it with `await client.aclose()`.
    """
    pool = BlockingConnectionPool.from_url(
        normalize_valkey_url(url),
        max_connections=max_connections,
        timeout=pool_timeout,
        socket_timeout=socket_timeout,
        socket_connect_timeout=connect_timeout,
        health_check_interval=health_check_interval,
        client_name=client_name,
    )
    return Valkey.from_pool(pool)
