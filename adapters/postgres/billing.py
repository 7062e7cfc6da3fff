"""The billing repositories on PostgreSQL (migration 0004): subscriptions, charges, usage and quota
reservations.

Each repository works on its unit of work's connection, inside its transaction; rows map to the core
Structs explicitly and timestamps come back in UTC. The quota's check-and-increment is one
conditional upsert of the period's row: PostgreSQL locks the row and evaluates the condition on its
latest version, so processes racing for the last images take turns and never overspend.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from psycopg import errors

from adapters.postgres.row_values import aware, check_limit
from core.billing.charges import Charge, ChargeKind
from core.billing.subscriptions import Subscription, SubscriptionStatus
from core.billing.usage import (
    QuotaReservation,
    ReservationOutcome,
    ReservationResult,
    ReservationStatus,
    UsagePeriod,
)
from core.errors import DomainError, ErrorCode
from core.identifiers import is_id

if TYPE_CHECKING:
    from adapters.postgres.database import PostgresUnitOfWork

_SUBSCRIPTION_COLUMNS = (
    "user_id, plan, status, current_period_start, current_period_end, cancel_at_period_end,"
    " scheduled_plan, trial_end, created_at, updated_at"
)
_CHARGE_COLUMNS = "id, user_id, plan, kind, amount_cents, currency, period_start, period_end, created_at"
_PERIOD_COLUMNS = "user_id, period_start, period_end, images_used, in_flight, thresholds_reached"
_RESERVATION_COLUMNS = "id, user_id, period_start, images, status, created_at, finished_at"
# Word for word the expression of the index `subscriptions_by_due_at`, so the claim can use it.
_DUE_AT = (
    "CASE WHEN status = 'trialing' THEN LEAST(current_period_end, trial_end) ELSE current_period_end END"
)
_CURRENCY = re.compile(r"^[A-Z]{3}$")
# A refused reservation is re-tried when the period changed between the attempt and the look at why
# (a release committed meanwhile); past this many attempts it counts as busy.
_RESERVE_ATTEMPTS: Final = 3


class PostgresSubscriptionRepository:
    """Implements `core.ports.SubscriptionRepository` on the `subscriptions` table."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, subscription: Subscription) -> None:
        _check_subscription(subscription)
        try:
            cursor = await self._uow.connection.execute(
                f"""
                INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS})
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (user_id) DO NOTHING
                """,
                (
                    uuid.UUID(subscription.user_id),
                    subscription.plan,
                    SubscriptionStatus(subscription.status).value,
                    subscription.current_period_start,
                    subscription.current_period_end,
                    subscription.cancel_at_period_end,
                    subscription.scheduled_plan,
                    subscription.trial_end,
                    aware(subscription.created_at, "created_at"),
                    aware(subscription.updated_at, "updated_at"),
                ),
            )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {subscription.user_id} to own the subscription") from error
        if cursor.rowcount == 0:
            raise DomainError(
                ErrorCode.CONFLICT, "The user already has a subscription", user_id=subscription.user_id
            )

    async def get(self, user_id: str) -> Subscription | None:
        return await self._one(user_id, lock=False)

    async def get_for_update(self, user_id: str) -> Subscription | None:
        return await self._one(user_id, lock=True)

    async def update(self, subscription: Subscription) -> None:
        _check_subscription(subscription)
        id_ = _uuid_or_none(subscription.user_id)
        if id_ is None:
            return
        await self._uow.connection.execute(
            """
            UPDATE subscriptions
            SET plan = %s, status = %s, current_period_start = %s, current_period_end = %s,
                cancel_at_period_end = %s, scheduled_plan = %s, trial_end = %s, updated_at = %s
            WHERE user_id = %s
            """,
            (
                subscription.plan,
                SubscriptionStatus(subscription.status).value,
                subscription.current_period_start,
                subscription.current_period_end,
                subscription.cancel_at_period_end,
                subscription.scheduled_plan,
                subscription.trial_end,
                aware(subscription.updated_at, "updated_at"),
                id_,
            ),
        )

    async def claim_due(self, now: datetime, limit: int) -> list[Subscription]:
        check_limit(limit)
        cursor = await self._uow.connection.execute(
            f"""
            SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions
            WHERE ({_DUE_AT}) <= %s
            ORDER BY ({_DUE_AT}), user_id
            LIMIT %s
            FOR UPDATE SKIP LOCKED
            """,
            (aware(now, "now"), limit),
        )
        return [_subscription(row) for row in await cursor.fetchall()]

    async def _one(self, user_id: str, *, lock: bool) -> Subscription | None:
        id_ = _uuid_or_none(user_id)
        if id_ is None:
            return None
        query = f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE user_id = %s"
        cursor = await self._uow.connection.execute(f"{query} FOR UPDATE" if lock else query, (id_,))
        row = await cursor.fetchone()
        return None if row is None else _subscription(row)


class PostgresChargeRepository:
    """Implements `core.ports.ChargeRepository` on the `charges` table."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, charge: Charge) -> None:
        # The table's CHECKs, as ValueErrors that leave the transaction usable (like the memory fake).
        if charge.amount_cents < 0:
            raise ValueError("amount_cents must not be negative")
        if not _CURRENCY.match(charge.currency):
            raise ValueError(f"currency {charge.currency!r} is not an ISO 4217 code")
        try:
            cursor = await self._uow.connection.execute(
                f"""
                INSERT INTO charges ({_CHARGE_COLUMNS})
                VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                ON CONFLICT (id) DO NOTHING
                """,
                (
                    uuid.UUID(charge.id),
                    uuid.UUID(charge.user_id),
                    charge.plan,
                    ChargeKind(charge.kind).value,
                    charge.amount_cents,
                    charge.currency,
                    aware(charge.period_start, "period_start"),
                    aware(charge.period_end, "period_end"),
                    aware(charge.created_at, "created_at"),
                ),
            )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {charge.user_id} to charge") from error
        if cursor.rowcount == 0:
            raise DomainError(ErrorCode.CONFLICT, "Charge already exists", charge_id=charge.id)

    async def list_for_user(self, user_id: str, *, limit: int) -> list[Charge]:
        check_limit(limit)
        owner = _uuid_or_none(user_id)
        if owner is None:
            return []
        cursor = await self._uow.connection.execute(
            f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE user_id = %s ORDER BY id DESC LIMIT %s",
            (owner, limit),
        )
        return [_charge(row) for row in await cursor.fetchall()]


class PostgresUsageRepository:
    """Implements `core.ports.UsageRepository` on `usage_periods` and `quota_reservations`."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def reserve(
        self,
        reservation: QuotaReservation,
        *,
        period_end: datetime,
        images_limit: int,
        max_in_flight: int,
    ) -> ReservationResult:
        _check_new_reservation(reservation, period_end)
        conn = self._uow.connection
        id_, user_id = uuid.UUID(reservation.id), uuid.UUID(reservation.user_id)
        # The reservation's row first: a retried reservation is recognized before any limit is
        # checked, and a concurrent one with the same id waits here for the first one's outcome.
        try:
            inserted = await conn.execute(
                f"""
                INSERT INTO quota_reservations ({_RESERVATION_COLUMNS})
                VALUES (%s, %s, %s, %s, 'reserved', %s, NULL)
                ON CONFLICT (id) DO NOTHING
                """,
                (id_, user_id, reservation.period_start, reservation.images, reservation.created_at),
            )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {reservation.user_id} to reserve for") from error
        if inserted.rowcount == 0:
            return ReservationResult(
                outcome=ReservationOutcome.ALREADY_RESERVED, usage=await self._period_of(id_, period_end)
            )

        limits = {
            "user_id": user_id,
            "period_start": reservation.period_start,
            "period_end": period_end,
            "images": reservation.images,
            "images_limit": images_limit,
            "max_in_flight": max_in_flight,
        }
        outcome = ReservationOutcome.CONCURRENCY_LIMIT
        usage: UsagePeriod | None = None
        for _ in range(_RESERVE_ATTEMPTS):
            # The check and the increment in one statement: it creates the period's row with this
            # reservation in it, or else locks the existing row and adds to it only if both limits
            # still hold on the row's latest version.
            cursor = await conn.execute(
                f"""
                INSERT INTO usage_periods AS p (user_id, period_start, period_end, images_used, in_flight)
                SELECT %(user_id)s, %(period_start)s, %(period_end)s, %(images)s::integer, 1
                WHERE %(images)s::integer <= %(images_limit)s::integer AND 0 < %(max_in_flight)s::integer
                ON CONFLICT (user_id, period_start) DO UPDATE
                SET images_used = p.images_used + EXCLUDED.images_used, in_flight = p.in_flight + 1
                WHERE p.images_used + EXCLUDED.images_used <= %(images_limit)s::integer
                  AND p.in_flight < %(max_in_flight)s::integer
                RETURNING {_PERIOD_COLUMNS}
                """,
                limits,
            )
            row = await cursor.fetchone()
            if row is not None:
                return ReservationResult(outcome=ReservationOutcome.RESERVED, usage=_usage_period(row))
            # Refused: tell which limit held, from the row as it stands now.
            usage = await self.get(reservation.user_id, reservation.period_start)
            refusal = _refusal(usage, reservation.images, images_limit, max_in_flight)
            if refusal is not None:
                outcome = refusal
                break
        # Nothing of a refused reservation stays (nobody else could see the row before it goes).
        await conn.execute("DELETE FROM quota_reservations WHERE id = %s", (id_,))
        return ReservationResult(
            outcome=outcome,
            usage=usage or _empty_period(reservation.user_id, reservation.period_start, period_end),
        )

    async def release(self, reservation_id: str, *, refund: bool, at: datetime) -> QuotaReservation | None:
        finished_at = aware(at, "at")
        id_ = _uuid_or_none(reservation_id)
        if id_ is None:
            return None
        status = ReservationStatus.REFUNDED if refund else ReservationStatus.SETTLED
        # One statement: the reservation ends only if it is still `reserved` (a concurrent release
        # waits for its row lock, then finds it ended), and its period gives back what it held.
        cursor = await self._uow.connection.execute(
            f"""
            WITH ended AS (
                UPDATE quota_reservations SET status = %(status)s, finished_at = %(finished_at)s
                WHERE id = %(id)s AND status = 'reserved'
                RETURNING {_RESERVATION_COLUMNS}
            ), given_back AS (
                UPDATE usage_periods AS p
                SET in_flight = p.in_flight - 1,
                    images_used = p.images_used - CASE WHEN %(refund)s::boolean THEN ended.images ELSE 0 END
                FROM ended
                WHERE p.user_id = ended.user_id AND p.period_start = ended.period_start
            )
            SELECT {_RESERVATION_COLUMNS} FROM ended
            """,
            {"status": status.value, "finished_at": finished_at, "id": id_, "refund": refund},
        )
        row = await cursor.fetchone()
        return None if row is None else _reservation(row)

    async def get(self, user_id: str, period_start: datetime) -> UsagePeriod | None:
        id_ = _uuid_or_none(user_id)
        if id_ is None:
            return None
        cursor = await self._uow.connection.execute(
            f"SELECT {_PERIOD_COLUMNS} FROM usage_periods WHERE user_id = %s AND period_start = %s",
            (id_, aware(period_start, "period_start")),
        )
        row = await cursor.fetchone()
        return None if row is None else _usage_period(row)

    async def get_reservation(self, reservation_id: str) -> QuotaReservation | None:
        id_ = _uuid_or_none(reservation_id)
        if id_ is None:
            return None
        cursor = await self._uow.connection.execute(
            f"SELECT {_RESERVATION_COLUMNS} FROM quota_reservations WHERE id = %s", (id_,)
        )
        row = await cursor.fetchone()
        return None if row is None else _reservation(row)

    async def mark_threshold(self, user_id: str, period_start: datetime, percent: int) -> bool:
        id_ = _uuid_or_none(user_id)
        if id_ is None:
            return False
        # A concurrent marker waits for the row, then finds the percentage there: one of them wins.
        cursor = await self._uow.connection.execute(
            """
            UPDATE usage_periods
            SET thresholds_reached = array_append(thresholds_reached, %(percent)s::integer)
            WHERE user_id = %(user_id)s AND period_start = %(period_start)s
              AND NOT (%(percent)s::integer = ANY (thresholds_reached))
            """,
            {"percent": percent, "user_id": id_, "period_start": aware(period_start, "period_start")},
        )
        return cursor.rowcount == 1

    async def _period_of(self, reservation_id: uuid.UUID, period_end: datetime) -> UsagePeriod:
        """The usage of the period an existing reservation belongs to."""
        cursor = await self._uow.connection.execute(
            """
            SELECT r.user_id, r.period_start, p.period_end, p.images_used, p.in_flight,
                   p.thresholds_reached
            FROM quota_reservations AS r
            LEFT JOIN usage_periods AS p ON p.user_id = r.user_id AND p.period_start = r.period_start
            WHERE r.id = %s
            """,
            (reservation_id,),
        )
        row = await cursor.fetchone()
        if row is None:
            raise RuntimeError(f"reservation {reservation_id} vanished within its conflict")
        user_id, period_start, found_end = row[0], row[1], row[2]
        if found_end is None:  # unreachable while reservations are only written by `reserve`
            return _empty_period(str(user_id), period_start.astimezone(UTC), period_end)
        return _usage_period(row)


def _refusal(
    usage: UsagePeriod | None, images: int, images_limit: int, max_in_flight: int
) -> ReservationOutcome | None:
    """Which limit refuses a reservation of `images` against `usage`; None if none does (now)."""
    used, in_flight = (0, 0) if usage is None else (usage.images_used, usage.in_flight)
    if used + images > images_limit:
        return ReservationOutcome.QUOTA_EXCEEDED
    if in_flight >= max_in_flight:
        return ReservationOutcome.CONCURRENCY_LIMIT
    return None


def _check_subscription(subscription: Subscription) -> None:
    aware(subscription.current_period_start, "current_period_start")
    aware(subscription.current_period_end, "current_period_end")
    if subscription.trial_end is not None:
        aware(subscription.trial_end, "trial_end")
    if subscription.current_period_end <= subscription.current_period_start:
        raise ValueError("current_period_end must be after current_period_start")


def _check_new_reservation(reservation: QuotaReservation, period_end: datetime) -> None:
    aware(reservation.period_start, "period_start")
    aware(reservation.created_at, "created_at")
    aware(period_end, "period_end")
    if reservation.status != ReservationStatus.RESERVED:
        raise ValueError("a new reservation must be `reserved`")
    if reservation.images < 1:
        raise ValueError("a reservation needs at least one image")
    if period_end <= reservation.period_start:
        raise ValueError("period_end must be after period_start")


def _subscription(row: Sequence[Any]) -> Subscription:
    (
        user_id,
        plan,
        status,
        period_start,
        period_end,
        cancel_at_period_end,
        scheduled_plan,
        trial_end,
        created_at,
        updated_at,
    ) = row
    return Subscription(
        user_id=str(user_id),
        plan=plan,
        status=SubscriptionStatus(status),
        current_period_start=period_start.astimezone(UTC),
        current_period_end=period_end.astimezone(UTC),
        cancel_at_period_end=cancel_at_period_end,
        scheduled_plan=scheduled_plan,
        trial_end=None if trial_end is None else trial_end.astimezone(UTC),
        created_at=created_at.astimezone(UTC),
        updated_at=updated_at.astimezone(UTC),
    )


def _charge(row: Sequence[Any]) -> Charge:
    id_, user_id, plan, kind, amount_cents, currency, period_start, period_end, created_at = row
    return Charge(
        id=str(id_),
        user_id=str(user_id),
        plan=plan,
        kind=ChargeKind(kind),
        amount_cents=amount_cents,
        currency=currency,
        period_start=period_start.astimezone(UTC),
        period_end=period_end.astimezone(UTC),
        created_at=created_at.astimezone(UTC),
    )


def _usage_period(row: Sequence[Any]) -> UsagePeriod:
    user_id, period_start, period_end, images_used, in_flight, thresholds_reached = row
    return UsagePeriod(
        user_id=str(user_id),
        period_start=period_start.astimezone(UTC),
        period_end=period_end.astimezone(UTC),
        images_used=images_used,
        in_flight=in_flight,
        thresholds_reached=tuple(sorted(thresholds_reached)),
    )


def _reservation(row: Sequence[Any]) -> QuotaReservation:
    id_, user_id, period_start, images, status, created_at, finished_at = row
    return QuotaReservation(
        id=str(id_),
        user_id=str(user_id),
        period_start=period_start.astimezone(UTC),
        images=images,
        status=ReservationStatus(status),
        created_at=created_at.astimezone(UTC),
        finished_at=None if finished_at is None else finished_at.astimezone(UTC),
    )


def _empty_period(user_id: str, period_start: datetime, period_end: datetime) -> UsagePeriod:
    return UsagePeriod(
        user_id=str(uuid.UUID(user_id)),
        period_start=period_start.astimezone(UTC),
        period_end=period_end.astimezone(UTC),
        images_used=0,
        in_flight=0,
    )


def _uuid_or_none(text: str) -> uuid.UUID | None:
    return uuid.UUID(text) if is_id(text) else None
