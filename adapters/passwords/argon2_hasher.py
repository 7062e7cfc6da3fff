"""The PasswordHasher port on argon2id (argon2-cffi), off the event loop and bounded."""

from __future__ import annotations

import asyncio
import os

from argon2 import PasswordHasher as _Argon2
from argon2 import Type
from argon2.exceptions import VerificationError

# OWASP's minimum for argon2id: 19 MiB, 2 passes, 1 lane. argon2-cffi's own default (64 MiB, 3, 4)
# costs several times more CPU per login for no gain we need.
OWASP_TIME_COST = 2
OWASP_MEMORY_COST_KIB = 19 * 1024
OWASP_PARALLELISM = 1


class Argon2PasswordHasher:
    """Implements `core.ports.PasswordHasher` with argon2id.

    Each hash or verification runs in a worker thread (argon2-cffi releases the GIL), and at
    most `max_concurrent` run at once: a burst of logins queues here instead of stalling the event
    loop or allocating `memory_cost_kib` for every waiting request at the same time. Passwords
    arrive NFKC-normalized (`core.accounts.passwords.normalize_password`).
    """

    def __init__(
        self,
        *,
        time_cost: int = OWASP_TIME_COST,
        memory_cost_kib: int = OWASP_MEMORY_COST_KIB,
        parallelism: int = OWASP_PARALLELISM,
        max_concurrent: int | None = None,
    ) -> None:
        limit = max_concurrent if max_concurrent is not None else (os.cpu_count() or 1)
        if limit < 1:
            raise ValueError("max_concurrent must be at least 1")
        self._hasher = _Argon2(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism, type=Type.ID
        )
        self._max_concurrent = limit
        # A semaphore belongs to the loop it first waits on: keep one per running loop, so a
        # hasher built before the loop (or shared by tests on several loops) still works.
        self._semaphore: asyncio.Semaphore | None = None
        self._semaphore_loop: asyncio.AbstractEventLoop | None = None

    @property
    def max_concurrent(self) -> int:
        return self._max_concurrent

    def _gate(self) -> asyncio.Semaphore:
        loop = asyncio.get_running_loop()
        if self._semaphore is None or self._semaphore_loop is not loop:
            self._semaphore = asyncio.Semaphore(self._max_concurrent)
            self._semaphore_loop = loop
        return self._semaphore

    async def hash(self, password: str) -> str:
        async with self._gate():
            return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        async with self._gate():
            return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash, password)
        except VerificationError:  # wrong password, or a hash argon2 rejects
            return False
        except ValueError:  # InvalidHashError: not an argon2 hash; UnicodeError: not even ASCII
            return False

    def needs_rehash(self, password_hash: str) -> bool:
        try:
            return self._hasher.check_needs_rehash(password_hash)
        except ValueError:
            # Unreadable: it cannot have today's parameters (and a login with it fails anyway).
            return True
