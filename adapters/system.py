"""The real clock and randomness."""

from __future__ import annotations

import os
import secrets
import threading
import time
from datetime import UTC, datetime


class SystemClock:
    """Implements `core.ports.Clock` with the operating system's clocks."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()


class SystemIds:
    """Implements `core.ports.Ids`: UUIDv7 ids (RFC 9562) and tokens from the OS's CSPRNG."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last_ms = 0
        self._counter = 0

    def new_id(self) -> str:
        return format_uuid(self.new_id_int())

    def new_id_int(self) -> int:
        # 48-bit Unix milliseconds, then a 12-bit counter seeded randomly each millisecond so ids
        # made in the same millisecond by this process still sort in creation order (RFC 9562 §6.2).
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._last_ms:
                self._last_ms = ms
                self._counter = secrets.randbits(11)
            else:
                self._counter += 1
                if self._counter > 0xFFF:  # counter overflow: borrow the next millisecond
                    self._last_ms += 1
                    self._counter = secrets.randbits(11)
            ms, counter = self._last_ms, self._counter
        rand_b = int.from_bytes(os.urandom(8)) & ((1 << 62) - 1)
        return (ms << 80) | (0x7 << 76) | (counter << 64) | (0b10 << 62) | rand_b

    def token(self, nbytes: int = 32) -> str:
        return secrets.token_urlsafe(nbytes)

    def random(self) -> float:
        return secrets.SystemRandom().random()

    def random_bytes(self, n: int) -> bytes:
        return os.urandom(n)


def format_uuid(value: int) -> str:
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
