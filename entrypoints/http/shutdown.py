"""Graceful shutdown, HTTP side: readiness fails as soon as shutdown begins.

`pictor serve` (the parent of the server processes) creates the drain file when it receives
SIGTERM, waits `shutdown_drain_seconds` so load balancers see readiness fail, then tells the
server to stop; the server finishes in-flight requests before exiting. The app's own shutdown
hook also marks it draining, for servers started without the CLI.
"""

from __future__ import annotations

import os
from pathlib import Path


class ShutdownState:
    def __init__(self, drain_file: Path | None = None) -> None:
        self._drain_file = str(drain_file) if drain_file else None
        self._draining = False

    @property
    def draining(self) -> bool:
        if self._draining:
            return True
        if self._drain_file is not None and os.path.exists(self._drain_file):
            self._draining = True
        return self._draining

    def begin(self) -> None:
        self._draining = True
