"""Predictable ids and tokens for tests."""

from __future__ import annotations

import random

from adapters.system import format_uuid


class SequentialIds:
    """Implements `core.ports.Ids` deterministically: ids are UUIDv7-shaped and increase."""

    def __init__(self, seed: int = 0) -> None:
        self._next = 1
        self._random = random.Random(seed)

    def new_id(self) -> str:
        value = (1_700_000_000_000 + self._next) << 80 | (0x7 << 76) | (0b10 << 62) | self._next
        self._next += 1
        return format_uuid(value)

    def token(self, nbytes: int = 32) -> str:
        return self._random.randbytes(nbytes).hex()

    def random(self) -> float:
        return self._random.random()

    def random_bytes(self, n: int) -> bytes:
        return self._random.randbytes(n)
