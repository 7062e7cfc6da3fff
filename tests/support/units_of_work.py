"""Running work in a unit of work from a test: committed, or read and rolled back."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from core.ports import Database, UnitOfWork

T = TypeVar("T")


async def committed(db: Database, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    """Run `work` in a unit of work and commit it."""
    async with db.unit_of_work() as uow:
        result = await work(uow)
        await uow.commit()
    return result


async def read(db: Database, work: Callable[[UnitOfWork], Awaitable[T]]) -> T:
    """Run `work` in a unit of work that is rolled back: what another unit of work sees now."""
    async with db.unit_of_work() as uow:
        return await work(uow)


async def still_waiting(task: asyncio.Task[Any]) -> bool:
    """Whether `task` is still blocked after a moment (e.g. on a row lock another unit holds)."""
    await asyncio.sleep(0.1)  # long enough for an unlocked read to have finished
    return not task.done()
