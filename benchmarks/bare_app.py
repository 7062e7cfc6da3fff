"""The baseline for the HTTP load harness: a bare Litestar app with one JSON route.

It has nothing of Pictor's (no middleware, no services, no database): what it serves
per second is the ceiling that Litestar and granian give on this machine, so Pictor's
throughput is reported as a ratio of it. Served by `benchmarks/http_load.py` as
`python -m granian --interface asgi benchmarks.bare_app:app`.
"""

from __future__ import annotations

from litestar import Litestar, get


@get("/health/live")
async def live() -> dict[str, str]:
    """The same shape as Pictor's liveness answer, so both serialise a small JSON body."""
    return {"status": "pass"}


app = Litestar([live])
