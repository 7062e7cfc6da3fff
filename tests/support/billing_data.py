"""Rows and databases the billing repository tests share (contract and concurrency tests)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec

from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from core.accounts.users import Role, User, UserStatus
from core.billing.charges import Charge, ChargeKind
from core.billing.subscriptions import Subscription, SubscriptionStatus
from core.billing.usage import QuotaReservation, ReservationStatus
from core.ports import Database

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
PERIOD_START = datetime(2026, 3, 1, tzinfo=UTC)
PERIOD_END = datetime(2026, 4, 1, tzinfo=UTC)


@asynccontextmanager
async def open_database(url: str | None, *, max_connections: int = 4) -> AsyncIterator[Database]:
    """The in-memory database when `url` is None; else PostgreSQL at `url`, migrated, on a pool."""
    if url is None:
        yield MemoryDatabase()
        return
    from adapters.postgres import PostgresDatabase, apply_migrations, open_pool

    await apply_migrations(url)
    pool = await open_pool(url, min_size=1, max_size=max_connections, name="billing-tests")
    try:
        yield PostgresDatabase(pool)
    finally:
        await pool.close()


def make_user(ids: SequentialIds, normalized: str) -> User:
    return User(
        id=ids.new_id(),
        email=normalized,
        email_normalized=normalized,
        display_name=None,
        role=Role.USER,
        status=UserStatus.ACTIVE,
        email_verified=True,
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        plan="free",
        created_at=T0,
        updated_at=T0,
    )


async def add_users(db: Database, *users: User) -> None:
    async with db.unit_of_work() as uow:
        for user in users:
            await uow.users.add(user)
        await uow.commit()


def make_subscription(user: User, **changes: Any) -> Subscription:
    subscription = Subscription(
        user_id=user.id,
        plan="pro",
        status=SubscriptionStatus.ACTIVE,
        current_period_start=PERIOD_START,
        current_period_end=PERIOD_END,
        created_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(subscription, **changes)


def make_charge(ids: SequentialIds, user: User, **changes: Any) -> Charge:
    charge = Charge(
        id=ids.new_id(),
        user_id=user.id,
        plan="pro",
        kind=ChargeKind.RENEWAL,
        amount_cents=1900,
        currency="USD",
        period_start=PERIOD_START,
        period_end=PERIOD_END,
        created_at=T0,
    )
    return msgspec.structs.replace(charge, **changes)


def make_reservation(ids: SequentialIds, user: User, images: int = 1, **changes: Any) -> QuotaReservation:
    reservation = QuotaReservation(
        id=ids.new_id(),
        user_id=user.id,
        period_start=PERIOD_START,
        images=images,
        status=ReservationStatus.RESERVED,
        created_at=T0,
    )
    return msgspec.structs.replace(reservation, **changes)


def later(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)
