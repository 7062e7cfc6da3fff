"""Graceful shutdown, HTTP side: readiness fails as soon as shutdown begins.

`pictor serve` (the parent of the server processes) creates the drain file when it receives
SIGTERM, waits `shutdown_drain_seconds` so load balancers see readiness fail, then tells the
server to stop; the server finishes in-flight requests before exiting. The app's own shutdown
hook also marks it draining, for servers started without the CLI.
"""

from __future__ import annotations

import ctypes
import os
import signal
from pathlib import Path

DRAIN_FILE_VARIABLE = "PICTOR_DRAIN_FILE"  # set by `pictor serve` for its server processes


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


def die_with_parent(signum: int = signal.SIGTERM) -> None:
    """Ask Linux to send `signum` to this process when its parent dies (no-op elsewhere).

    The server runs in its own session so that Ctrl-C reaches `pictor serve` (which drains
    first) and not the server directly; this keeps it from outliving a `pictor serve` that was
    killed outright, and its workers from outliving the server.
    """
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signum, 0, 0, 0)
    except (OSError, AttributeError):
        return


_PR_SET_PDEATHSIG = 1
