"""In-memory fakes of the billing repositories, held to the same contract as the PostgreSQL ones.

They mirror the tables of migration 0004: one subscription per user, charges newest first, one
usage row per user and period, and reservations that end once. The quota reservation takes the
locks PostgreSQL would (the reservation id's unique slot, then the period's row) and checks and
increments under them with no await in between, so it is as atomic as the conditional UPDATE.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime

import msgspec

from adapters.memory.row_values import canonical_or_none, check_limit, utc
from adapters.memory.tables import Table, TableView, Transaction
from core.accounts.users import User
from core.billing.charges import Charge
from core.billing.subscriptions import Subscription, SubscriptionStatus
from core.billing.usage import (
    QuotaReservation,
    ReservationOutcome,
    ReservationResult,
    ReservationStatus,
    UsagePeriod,
)
from core.errors import DomainError, ErrorCode

PeriodKey = tuple[str, datetime]  # (user id, period start in UTC)

_CURRENCY = re.compile(r"^[A-Z]{3}$")


class BillingTables:
    """The committed rows of the billing tables of one `MemoryDatabase`."""

    def __init__(self) -> None:
        self.subscriptions: Table[str, Subscription] = Table("subscriptions")
        self.charges: Table[str, Charge] = Table("charges")
        self.usage_periods: Table[PeriodKey, UsagePeriod] = Table("usage_periods")
        self.reservations: Table[str, QuotaReservation] = Table("quota_reservations")


class MemorySubscriptionRepository:
    """Implements `core.ports.SubscriptionRepository` in memory."""

    def __init__(self, subscriptions: TableView[str, Subscription], users: TableView[str, User]) -> None:
        self._subscriptions = subscriptions
        self._users = users
        self._transaction = subscriptions.transaction

    async def add(self, subscription: Subscription) -> None:
        self._transaction.require_active()
        stored = _stored_subscription(subscription)
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {subscription.user_id} to own the subscription")
        lock = self._subscriptions.row_lock(stored.user_id)
        await self._transaction.wait_until_free(lock)
        if self._subscriptions.get(stored.user_id) is not None:
            raise DomainError(
                ErrorCode.CONFLICT, "The user already has a subscription", user_id=stored.user_id
            )
        self._transaction.take(lock)
        self._subscriptions.put(stored.user_id, stored)

    async def get(self, user_id: str) -> Subscription | None:
        self._transaction.require_active()
        id_ = canonical_or_none(user_id)
        return None if id_ is None else self._subscriptions.get(id_)

    async def get_for_update(self, user_id: str) -> Subscription | None:
        self._transaction.require_active()
        id_ = canonical_or_none(user_id)
        if id_ is None:
            return None
        lock = self._subscriptions.row_lock(id_)
        await self._transaction.wait_until_free(lock)
        self._transaction.take(lock)
        return self._subscriptions.get(id_)

    async def update(self, subscription: Subscription) -> None:
        self._transaction.require_active()
        stored = _stored_subscription(subscription)
        await self._subscriptions.update_where(
            stored.user_id,
            lambda _: True,
            lambda current: msgspec.structs.replace(stored, created_at=current.created_at),
        )

    async def claim_due(self, now: datetime, limit: int) -> list[Subscription]:
        self._transaction.require_active()
        at = utc(now, "now")
        check_limit(limit)
        due = sorted(
            (row for row in self._subscriptions.rows() if _due_at(row) <= at),
            key=lambda row: (_due_at(row), row.user_id),
        )
        claimed: list[Subscription] = []
        for row in due:
            if len(claimed) == limit:
                break
            # SKIP LOCKED: `take` refuses a lock another unit of work holds, and takes it otherwise.
            # A row nobody else holds has no uncommitted change, so `row` is its current state.
            try:
                self._transaction.take(self._subscriptions.row_lock(row.user_id))
            except RuntimeError:
                continue
            claimed.append(row)
        return claimed


class MemoryChargeRepository:
    """Implements `core.ports.ChargeRepository` in memory; charges are never changed once added."""

    def __init__(self, charges: TableView[str, Charge], users: TableView[str, User]) -> None:
        self._charges = charges
        self._users = users
        self._transaction = charges.transaction

    async def add(self, charge: Charge) -> None:
        self._transaction.require_active()
        stored = msgspec.structs.replace(
            charge,
            id=str(uuid.UUID(charge.id)),
            user_id=str(uuid.UUID(charge.user_id)),
            period_start=utc(charge.period_start, "period_start"),
            period_end=utc(charge.period_end, "period_end"),
            created_at=utc(charge.created_at, "created_at"),
        )
        # The table's CHECKs.
        if stored.amount_cents < 0:
            raise ValueError("amount_cents must not be negative")
        if not _CURRENCY.match(stored.currency):
            raise ValueError(f"currency {stored.currency!r} is not an ISO 4217 code")
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {charge.user_id} to charge")
        lock = self._charges.row_lock(stored.id)
        await self._transaction.wait_until_free(lock)
        if self._charges.get(stored.id) is not None:
            raise DomainError(ErrorCode.CONFLICT, "Charge already exists", charge_id=stored.id)
        self._transaction.take(lock)
        self._charges.put(stored.id, stored)

    async def list_for_user(self, user_id: str, *, limit: int) -> list[Charge]:
        self._transaction.require_active()
        check_limit(limit)
        owner = canonical_or_none(user_id)
        mine = [charge for charge in self._charges.rows() if charge.user_id == owner]
        return sorted(mine, key=lambda charge: charge.id, reverse=True)[:limit]


class MemoryUsageRepository:
    """Implements `core.ports.UsageRepository` in memory."""

    def __init__(
        self,
        periods: TableView[PeriodKey, UsagePeriod],
        reservations: TableView[str, QuotaReservation],
        users: TableView[str, User],
    ) -> None:
        self._periods = periods
        self._reservations = reservations
        self._users = users
        self._transaction = periods.transaction

    async def reserve(
        self,
        reservation: QuotaReservation,
        *,
        period_end: datetime,
        images_limit: int,
        max_in_flight: int,
    ) -> ReservationResult:
        self._transaction.require_active()
        stored = msgspec.structs.replace(
            reservation,
            id=str(uuid.UUID(reservation.id)),
            user_id=str(uuid.UUID(reservation.user_id)),
            period_start=utc(reservation.period_start, "period_start"),
            created_at=utc(reservation.created_at, "created_at"),
            finished_at=None,
        )
        end = utc(period_end, "period_end")
        if stored.status != ReservationStatus.RESERVED:
            raise ValueError("a new reservation must be `reserved`")
        if stored.images < 1:
            raise ValueError("a reservation needs at least one image")
        if end <= stored.period_start:
            raise ValueError("period_end must be after period_start")
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {reservation.user_id} to reserve for")
        key = (stored.user_id, stored.period_start)
        reservation_lock, period_lock = self._reservations.row_lock(stored.id), self._periods.row_lock(key)
        # The reservation's unique slot first, then the period's row: the order PostgreSQL takes them.
        await self._transaction.wait_until_free(reservation_lock, period_lock)
        # From here to the end, no await: the check and the increment are one step.
        earlier = self._reservations.get(stored.id)
        if earlier is not None:
            usage = self._periods.get((earlier.user_id, earlier.period_start)) or _empty_period(
                earlier.user_id, earlier.period_start, end
            )
            return ReservationResult(outcome=ReservationOutcome.ALREADY_RESERVED, usage=usage)
        self._transaction.take(reservation_lock)
        current = self._periods.get(key)
        if current is not None:
            self._transaction.take(period_lock)  # PostgreSQL locks the row even when the check fails
        usage = current or _empty_period(stored.user_id, stored.period_start, end)
        if usage.images_used + stored.images > images_limit:
            return ReservationResult(outcome=ReservationOutcome.QUOTA_EXCEEDED, usage=usage)
        if usage.in_flight >= max_in_flight:
            return ReservationResult(outcome=ReservationOutcome.CONCURRENCY_LIMIT, usage=usage)
        self._transaction.take(period_lock)
        reserved = msgspec.structs.replace(
            usage, images_used=usage.images_used + stored.images, in_flight=usage.in_flight + 1
        )
        self._periods.put(key, reserved)
        self._reservations.put(stored.id, stored)
        return ReservationResult(outcome=ReservationOutcome.RESERVED, usage=reserved)

    async def release(self, reservation_id: str, *, refund: bool, at: datetime) -> QuotaReservation | None:
        self._transaction.require_active()
        finished_at = utc(at, "at")
        id_ = canonical_or_none(reservation_id)
        if id_ is None:
            return None
        status = ReservationStatus.REFUNDED if refund else ReservationStatus.SETTLED
        ended = await self._reservations.update_where(
            id_,
            lambda row: row.status is ReservationStatus.RESERVED,
            lambda row: msgspec.structs.replace(row, status=status, finished_at=finished_at),
        )
        if ended is None:
            return None
        given_back = ended.images if refund else 0
        await self._periods.update_where(
            (ended.user_id, ended.period_start),
            lambda _: True,
            lambda period: msgspec.structs.replace(
                period, images_used=period.images_used - given_back, in_flight=period.in_flight - 1
            ),
        )
        return ended

    async def get(self, user_id: str, period_start: datetime) -> UsagePeriod | None:
        self._transaction.require_active()
        id_ = canonical_or_none(user_id)
        start = utc(period_start, "period_start")
        return None if id_ is None else self._periods.get((id_, start))

    async def get_reservation(self, reservation_id: str) -> QuotaReservation | None:
        self._transaction.require_active()
        id_ = canonical_or_none(reservation_id)
        return None if id_ is None else self._reservations.get(id_)

    async def mark_threshold(self, user_id: str, period_start: datetime, percent: int) -> bool:
        self._transaction.require_active()
        id_ = canonical_or_none(user_id)
        start = utc(period_start, "period_start")
        if id_ is None:
            return False
        marked = await self._periods.update_where(
            (id_, start),
            lambda period: percent not in period.thresholds_reached,
            lambda period: msgspec.structs.replace(
                period, thresholds_reached=tuple(sorted((*period.thresholds_reached, percent)))
            ),
        )
        return marked is not None


def billing_repositories(
    transaction: Transaction, tables: BillingTables, users: TableView[str, User]
) -> tuple[MemorySubscriptionRepository, MemoryChargeRepository, MemoryUsageRepository]:
    """The three repositories of one unit of work; `users` is that unit of work's view of the users
    (the foreign keys: a subscription, charge or reservation needs its user, even one added in the
    same unit of work)."""
    return (
        MemorySubscriptionRepository(transaction.view(tables.subscriptions), users),
        MemoryChargeRepository(transaction.view(tables.charges), users),
        MemoryUsageRepository(
            transaction.view(tables.usage_periods), transaction.view(tables.reservations), users
        ),
    )


def _stored_subscription(subscription: Subscription) -> Subscription:
    stored = msgspec.structs.replace(
        subscription,
        user_id=str(uuid.UUID(subscription.user_id)),
        status=SubscriptionStatus(subscription.status),
        current_period_start=utc(subscription.current_period_start, "current_period_start"),
        current_period_end=utc(subscription.current_period_end, "current_period_end"),
        trial_end=None if subscription.trial_end is None else utc(subscription.trial_end, "trial_end"),
        created_at=utc(subscription.created_at, "created_at"),
        updated_at=utc(subscription.updated_at, "updated_at"),
    )
    if stored.current_period_end <= stored.current_period_start:
        raise ValueError("current_period_end must be after current_period_start")
    return stored


def _due_at(subscription: Subscription) -> datetime:
    """When the roll-over should look at the subscription (the index of migration 0004)."""
    if subscription.status is SubscriptionStatus.TRIALING and subscription.trial_end is not None:
        return min(subscription.current_period_end, subscription.trial_end)
    return subscription.current_period_end


def _empty_period(user_id: str, period_start: datetime, period_end: datetime) -> UsagePeriod:
    return UsagePeriod(
        user_id=user_id, period_start=period_start, period_end=period_end, images_used=0, in_flight=0
    )
