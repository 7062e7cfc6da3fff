"""The baselines for the HTTP load harness: a bare Litestar app with two JSON routes.

It has nothing of Pictor's (no middleware, no services, no database): what it serves
per second is the ceiling that Litestar and granian give on this machine, so Pictor's
throughput is reported as a ratio of it. Served by `benchmarks/http_load.py` as
`python -m granian --interface asgi benchmarks.bare_app:app`.

- `GET /health/live` returns a constant.
- `GET /valkey` does one Valkey GET per request (`BARE_VALKEY_URL`, default the local server)
  through the same client Pictor uses: the floor for any route that makes one network round
  trip, such as a rate limit shared across processes (DESIGN.md §11).
"""

from __future__ import annotations

import os
from typing import Any

from litestar import Litestar, get

from adapters.valkey.client import create_valkey_client

_clients: dict[str, Any] = {}


@get("/health/live")
async def live() -> dict[str, str]:
    """The same shape as Pictor's liveness answer, so both serialise a small JSON body."""
    return {"status": "pass"}


@get("/valkey")
async def valkey_get() -> dict[str, str | None]:
    client = _clients.get("valkey")
    if client is None:
        client = _clients["valkey"] = create_valkey_client(
            os.environ.get("BARE_VALKEY_URL", "redis://127.0.0.1:6379/0")
        )
    value = await client.get("pictor-bench:bare")
    return {"status": "pass", "value": value.decode() if value is not None else None}


app = Litestar([live, valkey_get])
