"""Automatic pipelining: commands issued in the same event-loop turn share one round trip.

Under load an API process has dozens of requests in flight, each wanting one command (its rate
limit decision). Sent one by one, every command pays the client's whole per-call cost: a
connection checked out of the pool, a timeout armed, a write and a read syscall, a wake-up.
Queued for one turn of the event loop and sent as one pipeline (not a transaction: each command
still runs atomically on its own), they pay it once. Each caller still waits for exactly one
network round trip, so latency does not grow; throughput per core does.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from valkey.asyncio import Valkey
from valkey.exceptions import NoScriptError

MAX_BATCH: Final = 256  # a bigger turn is split: one huge reply would hold up every caller in it

Command = tuple[Any, ...]


class AutoPipeline:
    def __init__(self, client: Valkey) -> None:
        self._client = client
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        self._scheduled = False
        self._in_flight: set[asyncio.Task[None]] = set()

    async def execute(self, *command: Any) -> Any:
        """The reply to `command`, sent with whatever else was queued in this turn of the loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._pending.append((command, future))
        if not self._scheduled:
            self._scheduled = True
            loop.call_soon(self._flush)  # runs after the callbacks already ready: they can join
        return await future

    def _flush(self) -> None:
        self._scheduled = False
        pending, self._pending = self._pending, []
        for start in range(0, len(pending), MAX_BATCH):
            task = asyncio.ensure_future(self._send(pending[start : start + MAX_BATCH]))
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _send(self, batch: list[tuple[Command, asyncio.Future[Any]]]) -> None:
        try:
            if len(batch) == 1:
                replies: list[Any] = []
                try:
                    replies.append(await self._client.execute_command(*batch[0][0]))  # type: ignore[no-untyped-call]
                except NoScriptError as error:  # the caller reloads its script and retries
                    replies.append(error)
            else:
                pipeline = self._client.pipeline(transaction=False)
                for command, _ in batch:
                    pipeline.execute_command(*command)
                replies = await pipeline.execute(raise_on_error=False)
        except Exception as error:  # the connection failed: every caller in the batch hears it
            for _, future in batch:
                if not future.done():
                    future.set_exception(error)
            return
        except BaseException:  # cancelled (the loop is closing): so are the callers
            for _, future in batch:
                future.cancel()
            raise
        for (_, future), reply in zip(batch, replies, strict=True):
            if future.done():  # the caller was cancelled meanwhile
                continue
            if isinstance(reply, Exception):
                future.set_exception(reply)
            else:
                future.set_result(reply)
