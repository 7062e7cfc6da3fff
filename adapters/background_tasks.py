"""Stopping background tasks for good."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any


async def cancel_and_wait(task: asyncio.Task[Any]) -> None:
    """Cancel `task` and return once it has ended.

    A client library may swallow a cancellation that lands while it connects (on Python 3.11,
    `asyncio.wait_for` can), and the task then goes on: cancel again until it has really ended.
    """
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    with contextlib.suppress(asyncio.CancelledError):
        await task
