"""Automatic pipelining: commands issued while another is on the wire share the next round trip.

Under load an API process has dozens of requests in flight, each wanting one command (its rate
limit decision). Sent one by one, every command pays the client's whole per-call cost: a
connection checked out of the pool, a timeout armed, a write and a read syscall, a wake-up.
Queued while a pipeline is out and then sent as one (not a transaction: each command still runs
atomically on its own), they pay it once. A caller waits for at most the round trip in flight and
its own, and throughput per core grows with the load.
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from valkey.asyncio import Valkey
from valkey.exceptions import NoScriptError

MAX_BATCH: Final = 256  # more waiting is split: one huge reply would hold up every caller in it

Command = tuple[Any, ...]


class AutoPipeline:
    """One pipeline on the wire at a time: commands that arrive while it is out wait for it and
    then go together. Idle, a command leaves on the next turn of the loop; busy, batches grow with
    the load (arrivals × round-trip time), which is exactly when sharing pays."""

    def __init__(self, client: Valkey) -> None:
        self._client = client
        self._pending: list[tuple[Command, asyncio.Future[Any]]] = []
        self._sender: asyncio.Task[None] | None = None

    async def execute(self, *command: Any) -> Any:
        """The reply to `command`, sent with whatever else is waiting for the wire."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((command, future))
        if self._sender is None:
            self._sender = asyncio.ensure_future(self._drain())
        return await future

    async def _drain(self) -> None:
        try:
            while self._pending:
                batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
                await self._send(batch)
        except BaseException:  # cancelled: nobody will send what is still waiting
            waiting, self._pending = self._pending, []
            for _, future in waiting:
                future.cancel()
            raise
        finally:
            self._sender = None

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
