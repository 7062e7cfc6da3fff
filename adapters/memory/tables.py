"""Transactional in-memory tables: the machinery under the fakes of the account repositories.

A `Table` holds committed rows. Each unit of work reads and writes it through a `TableView`: its
own writes overlay the committed rows and stay invisible to others until `Transaction.commit()`;
`rollback()` drops them. Like PostgreSQL, a unit of work that changes a row (or inserts a key, or
claims a unique value) holds a lock on it until it ends, and another unit of work that wants the
same lock waits, then re-reads the row as committed meanwhile (`TableView.update_where`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class Locks:
    """Row locks and unique-value claims held by open units of work, by name → holder."""

    def __init__(self) -> None:
        self._holders: dict[Hashable, object] = {}
        self._released = asyncio.Condition()

    async def wait_until_free(self, owner: object, names: tuple[Hashable, ...]) -> None:
        """Return once no other holder has any of `names`.

        The caller takes them with `take()` before its next await, so nobody can slip in between.
        """

        def free() -> bool:
            return all(self._holders.get(name, owner) is owner for name in names)

        if not free():
            async with self._released:
                await self._released.wait_for(free)

    def take(self, owner: object, names: tuple[Hashable, ...]) -> None:
        for name in names:
            if self._holders.get(name, owner) is not owner:
                raise RuntimeError(f"lock {name!r} is held by another unit of work")
            self._holders[name] = owner

    async def release(self, owner: object) -> None:
        for name in [name for name, holder in self._holders.items() if holder is owner]:
            del self._holders[name]
        async with self._released:
            self._released.notify_all()


class Table(Generic[K, V]):
    """The committed rows of one table, by primary key."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.rows: dict[K, V] = {}


class Transaction:
    """A unit of work's state that its repositories share: open or not, its locks, its writes."""

    def __init__(self, locks: Locks) -> None:
        self._locks = locks
        self._views: list[TableView[Any, Any]] = []
        self.active = False

    def require_active(self) -> None:
        if not self.active:
            raise RuntimeError("the unit of work is not in a transaction (not entered, or already ended)")

    def view(self, table: Table[K, V]) -> TableView[K, V]:
        view = TableView(self, table)
        self._views.append(view)
        return view

    async def wait_until_free(self, *names: Hashable) -> None:
        """Wait until no other unit of work holds `names`. The caller re-reads what it depends on
        and, to go ahead, calls `take` before its next await."""
        await self._locks.wait_until_free(self, names)

    def take(self, *names: Hashable) -> None:
        """Hold `names` until this unit of work ends."""
        self._locks.take(self, names)

    def apply(self) -> None:
        """Make the writes the committed state (the unit of work is committing)."""
        for view in self._views:
            view.table.rows.update(view.written)
            view.written.clear()

    def discard(self) -> None:
        for view in self._views:
            view.written.clear()

    async def release(self) -> None:
        await self._locks.release(self)


class TableView(Generic[K, V]):
    """One unit of work's view of a table: the committed rows overlaid with its own writes."""

    def __init__(self, transaction: Transaction, table: Table[K, V]) -> None:
        self.transaction = transaction
        self.table = table
        self.written: dict[K, V] = {}

    def get(self, key: K) -> V | None:
        if key in self.written:
            return self.written[key]
        return self.table.rows.get(key)

    def rows(self) -> list[V]:
        return list({**self.table.rows, **self.written}.values())

    def row_lock(self, key: K) -> tuple[str, K]:
        return (self.table.name, key)

    def unique_claim(self, index: str, value: Hashable) -> tuple[str, str, Hashable]:
        """The lock on a value of a unique index, held by the unit of work inserting or changing it."""
        return (self.table.name, index, value)

    def put(self, key: K, row: V) -> None:
        """Write a row; the caller holds its lock."""
        self.written[key] = row

    async def update_where(self, key: K, matches: Callable[[V], bool], change: Callable[[V], V]) -> V | None:
        """`UPDATE … WHERE key = … AND matches(row)`: the changed row, or None when none matched.

        A row another unit of work has locked is waited for and re-checked as it stands then, so of
        two concurrent updaters of a matching row, the second sees the first's outcome.
        """
        row = self.get(key)
        if row is None or not matches(row):
            return None
        await self.transaction.wait_until_free(self.row_lock(key))
        row = self.get(key)
        if row is None or not matches(row):
            return None
        self.transaction.take(self.row_lock(key))
        changed = change(row)
        self.put(key, changed)
        return changed
