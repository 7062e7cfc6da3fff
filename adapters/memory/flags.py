"""The in-memory fake of the feature flag repository, held to the same contract as the PostgreSQL
one (migration 0007).

Rows are Flags in an `adapters.memory.tables` table, by key; a deleted flag is a `None` in its slot
(the same as absent to every reader). Changing a key (put, delete, get_for_update) takes its row
lock, so a second writer of the same key waits for the first unit of work to end and then sees its
outcome, as PostgreSQL's primary key and row locks make it.
"""

from __future__ import annotations

import msgspec

from adapters.memory.row_values import utc, utc_or_none
from adapters.memory.tables import Table, TableView, Transaction
from core.flags.model import Flag, FlagKind, is_flag_key


class FlagTables:
    """The committed rows of the feature flag table of one `MemoryDatabase`."""

    def __init__(self) -> None:
        self.flags: Table[str, Flag | None] = Table("feature_flags")


class MemoryFeatureFlagRepository:
    """Implements `core.ports.FeatureFlagRepository` in memory."""

    def __init__(self, flags: TableView[str, Flag | None]) -> None:
        self._flags = flags
        self._transaction: Transaction = flags.transaction

    async def list(self) -> list[Flag]:
        self._transaction.require_active()
        return sorted((row for row in self._flags.rows() if row is not None), key=lambda row: row.key)

    async def get(self, key: str) -> Flag | None:
        self._transaction.require_active()
        return self._flags.get(key)

    async def get_for_update(self, key: str) -> Flag | None:
        self._transaction.require_active()
        await self._lock(key)
        return self._flags.get(key)

    async def put(self, flag: Flag) -> bool:
        self._transaction.require_active()
        stored = _stored(flag)
        await self._lock(stored.key)
        before = self._flags.get(stored.key)
        if before is not None:  # a replacement keeps the row's creation time
            stored = msgspec.structs.replace(stored, created_at=before.created_at)
        self._flags.put(stored.key, stored)
        return before is None

    async def delete(self, key: str) -> bool:
        self._transaction.require_active()
        if self._flags.get(key) is None:
            return False
        await self._lock(key)
        if self._flags.get(key) is None:  # as committed while we waited
            return False
        self._flags.put(key, None)
        return True

    async def _lock(self, key: str) -> None:
        lock = self._flags.row_lock(key)
        await self._transaction.wait_until_free(lock)
        self._transaction.take(lock)


def _stored(flag: Flag) -> Flag:
    """The flag as the table keeps it, or ValueError for what its CHECKs would refuse."""
    if not is_flag_key(flag.key):
        raise ValueError(f"{flag.key!r} is not a flag key")
    kind = FlagKind(flag.kind)  # ValueError for anything but a kind
    if isinstance(flag.rollout, bool) or not 0 <= flag.rollout <= 100:
        raise ValueError("rollout must be within 0..100")
    return msgspec.structs.replace(
        flag,
        kind=kind,
        expires_at=utc_or_none(flag.expires_at, "expires_at"),
        created_at=utc(flag.created_at, "created_at"),
        updated_at=utc(flag.updated_at, "updated_at"),
    )
