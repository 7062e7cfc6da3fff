"""The InvalidationBus on Valkey pub/sub: one channel per namespace, JSON messages."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Final

import msgspec
from valkey.asyncio import Valkey
from valkey.exceptions import ValkeyError

from core.cache_tags import Invalidation

logger = logging.getLogger(__name__)

_POLL_SECONDS: Final = 1.0
_PING_EVERY_SECONDS: Final = 5.0  # a half-open connection is noticed within about this long
_RETRY_SECONDS: Final = (0.1, 0.25, 0.5, 1.0, 2.0)


class ValkeyInvalidationBus:
    """Implements `core.ports.InvalidationBus` with PUBLISH/SUBSCRIBE on `channel`.

    Pub/sub delivers to connected subscribers only; a listener that reconnects yields a `reset`
    first, since whatever was published meanwhile is gone.
    """

    def __init__(self, client: Valkey, *, channel: str) -> None:
        self._client = client
        self._channel = channel
        self._connected = False

    @property
    def connected(self) -> bool:
        return self._connected

    async def publish(self, invalidation: Invalidation) -> None:
        await self._client.publish(self._channel, msgspec.json.encode(invalidation))

    async def listen(self) -> AsyncIterator[Invalidation]:
        failures = 0
        while True:
            pubsub = self._client.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(self._channel)
                failures = 0
                self._connected = True
                yield Invalidation(reset=True)  # no await between: the listener clears before serving
                last_ping = asyncio.get_running_loop().time()
                while True:
                    message = await pubsub.get_message(timeout=_POLL_SECONDS)
                    if message is not None and message.get("type") == "message":
                        yield _decode(message["data"])
                    now = asyncio.get_running_loop().time()
                    if now - last_ping >= _PING_EVERY_SECONDS:
                        await pubsub.ping()
                        last_ping = now
            except (TimeoutError, ValkeyError, OSError) as error:
                self._connected = False
                delay = _RETRY_SECONDS[min(failures, len(_RETRY_SECONDS) - 1)]
                failures += 1
                logger.warning("invalidation bus: %s; resubscribing in %.2fs", error, delay)
                await asyncio.sleep(delay)
            finally:
                self._connected = False
                with contextlib.suppress(ValkeyError, OSError):
                    await pubsub.aclose()  # type: ignore[no-untyped-call]

    async def ping(self) -> None:
        if not self._connected:
            raise ConnectionError("not subscribed to the invalidation channel")


def _decode(data: bytes | str) -> Invalidation:
    try:
        return msgspec.json.decode(data, type=Invalidation)
    except msgspec.DecodeError:
        logger.error("invalidation bus: undecodable message; dropping every cached principal")
        return Invalidation(reset=True)
