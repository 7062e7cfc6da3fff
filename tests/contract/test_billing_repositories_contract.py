"""The billing repositories' contract (subscriptions, charges, usage and quota reservations).

Run against PostgreSQL (fresh schema, migrated) and the in-memory fake through the unit of work that
hands them out, so the fake is held to the real tables: row locks, the roll-over's skip-locked
claims, the quota's atomic check-and-increment, reservations that end exactly once.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import TypeVar

import msgspec
import pytest

from adapters.memory.ids import SequentialIds
from core.accounts.users import User
from core.billing.charges import ChargeKind
from core.billing.subscriptions import Subscription, SubscriptionStatus
from core.billing.usage import (
    QuotaReservation,
    ReservationOutcome,
    ReservationResult,
    ReservationStatus,
    UsagePeriod,
)
from core.errors import DomainError, ErrorCode
from core.ports import Database, UnitOfWork
from tests.support.billing_data import (
    PERIOD_END,
    PERIOD_START,
    T0,
    add_users,
    later,
    make_charge,
    make_reservation,
    make_subscription,
    make_user,
)
from tests.support.units_of_work import committed, read

T = TypeVar("T")
NOT_A_UUID = "not-a-uuid"


async def reserve(
    db: Database, reservation: QuotaReservation, *, images_limit: int = 10, max_in_flight: int = 5
) -> ReservationResult:
    return await committed(
        db,
        lambda uow: uow.usage.reserve(
            reservation, period_end=PERIOD_END, images_limit=images_limit, max_in_flight=max_in_flight
        ),
    )


async def usage_of(db: Database, user: User) -> UsagePeriod | None:
    return await read(db, lambda uow: uow.usage.get(user.id, PERIOD_START))


def period(user: User, images_used: int, in_flight: int, thresholds: tuple[int, ...] = ()) -> UsagePeriod:
    return UsagePeriod(
        user_id=user.id,
        period_start=PERIOD_START,
        period_end=PERIOD_END,
        images_used=images_used,
        in_flight=in_flight,
        thresholds_reached=thresholds,
    )


# Subscriptions


async def test_a_subscription_reads_back_as_written_in_utc(db: Database, ada: User) -> None:
    plus_two = timezone(timedelta(hours=2))
    subscription = make_subscription(
        ada,
        status=SubscriptionStatus.TRIALING,
        current_period_start=datetime(2026, 3, 1, 2, 0, tzinfo=plus_two),
        current_period_end=datetime(2026, 3, 15, 2, 0, tzinfo=plus_two),
        trial_end=datetime(2026, 3, 15, 2, 0, tzinfo=plus_two),
        cancel_at_period_end=True,
        scheduled_plan="free",
    )
    await committed(db, lambda uow: uow.subscriptions.add(subscription))

    stored = await read(db, lambda uow: uow.subscriptions.get(ada.id))
    assert stored == Subscription(
        user_id=ada.id,
        plan="pro",
        status=SubscriptionStatus.TRIALING,
        current_period_start=datetime(2026, 3, 1, tzinfo=UTC),
        current_period_end=datetime(2026, 3, 15, tzinfo=UTC),
        cancel_at_period_end=True,
        scheduled_plan="free",
        trial_end=datetime(2026, 3, 15, tzinfo=UTC),
        created_at=T0,
        updated_at=T0,
    )
    assert stored.status is SubscriptionStatus.TRIALING
    assert stored.current_period_start.utcoffset() == timedelta(0)


async def test_unknown_and_malformed_user_ids_have_no_subscription(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    await committed(db, lambda uow: uow.subscriptions.add(make_subscription(ada)))
    async with db.unit_of_work() as uow:
        assert await uow.subscriptions.get(ids.new_id()) is None
        assert await uow.subscriptions.get(NOT_A_UUID) is None
        assert await uow.subscriptions.get_for_update(NOT_A_UUID) is None
        assert await uow.subscriptions.get(ada.id) is not None  # the transaction is still usable


async def test_a_second_subscription_is_a_conflict(db: Database, ada: User) -> None:
    await committed(db, lambda uow: uow.subscriptions.add(make_subscription(ada)))
    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.subscriptions.add(make_subscription(ada, plan="team"))
        assert raised.value.code is ErrorCode.CONFLICT
    assert (await read(db, lambda uow: uow.subscriptions.get(ada.id))) == make_subscription(ada)


async def test_a_subscription_needs_its_user_even_one_added_in_the_same_unit_of_work(
    db: Database, ids: SequentialIds
) -> None:
    ghost = make_user(ids, "ghost@example.com")
    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError):
            await uow.subscriptions.add(make_subscription(ghost))

    newcomer = make_user(ids, "new@example.com")
    async with db.unit_of_work() as uow:
        await uow.users.add(newcomer)
        await uow.subscriptions.add(make_subscription(newcomer, plan="free"))
        await uow.commit()
    assert await read(db, lambda uow: uow.subscriptions.get(newcomer.id)) == make_subscription(
        newcomer, plan="free"
    )


async def test_update_replaces_the_subscription_but_keeps_created_at(db: Database, ada: User) -> None:
    await committed(db, lambda uow: uow.subscriptions.add(make_subscription(ada)))
    changed = make_subscription(
        ada,
        plan="team",
        status=SubscriptionStatus.PAST_DUE,
        current_period_start=PERIOD_END,
        current_period_end=PERIOD_END + timedelta(days=7),
        cancel_at_period_end=True,
        scheduled_plan="pro",
        trial_end=T0,
        created_at=T0 + timedelta(days=99),  # not a column update writes
        updated_at=T0 + timedelta(days=1),
    )
    await committed(db, lambda uow: uow.subscriptions.update(changed))
    assert await read(db, lambda uow: uow.subscriptions.get(ada.id)) == msgspec.structs.replace(
        changed, created_at=T0
    )


async def test_subscription_writes_are_discarded_by_rollback(db: Database, ada: User) -> None:
    await committed(db, lambda uow: uow.subscriptions.add(make_subscription(ada)))
    async with db.unit_of_work() as uow:
        await uow.subscriptions.update(make_subscription(ada, plan="team"))
        assert (await uow.subscriptions.get(ada.id)) == make_subscription(ada, plan="team")
        assert (await read(db, lambda other: other.subscriptions.get(ada.id))) == make_subscription(ada)
        await uow.rollback()
    assert (await read(db, lambda uow: uow.subscriptions.get(ada.id))) == make_subscription(ada)


async def test_get_for_update_makes_a_second_writer_wait_and_see_the_first_ones_change(
    db: Database, ada: User
) -> None:
    await committed(db, lambda uow: uow.subscriptions.add(make_subscription(ada)))

    async with db.unit_of_work() as first:
        locked = await first.subscriptions.get_for_update(ada.id)
        assert locked is not None

        async def second_writer() -> Subscription | None:
            async with db.unit_of_work() as second:
                return await second.subscriptions.get_for_update(ada.id)

        waiting = asyncio.create_task(second_writer())
        await asyncio.sleep(0.1)  # long enough for an unlocked read to have finished
        assert not waiting.done()
        await first.subscriptions.update(msgspec.structs.replace(locked, plan="team"))
        await first.commit()

    seen = await waiting
    assert seen is not None and seen.plan == "team"  # the committed change, not a stale copy


async def test_claim_due_returns_due_subscriptions_earliest_first(db: Database, ids: SequentialIds) -> None:
    now = datetime(2026, 4, 1, tzinfo=UTC)
    users = [make_user(ids, f"u{n}@example.com") for n in range(6)]
    await add_users(db, *users)
    late, on_time, trial_over, converted, not_yet, trial_running = users
    subscriptions = [
        make_subscription(late, current_period_end=now - timedelta(days=3)),
        make_subscription(on_time, current_period_end=now),  # an end at `now` is due
        make_subscription(
            trial_over,
            status=SubscriptionStatus.TRIALING,
            current_period_end=now + timedelta(days=9),
            trial_end=now - timedelta(days=1),
        ),
        # A trial end kept on a converted subscription no longer counts.
        make_subscription(
            converted, current_period_end=now + timedelta(days=5), trial_end=now - timedelta(days=9)
        ),
        make_subscription(not_yet, current_period_end=now + timedelta(microseconds=1)),
        make_subscription(
            trial_running,
            status=SubscriptionStatus.TRIALING,
            current_period_end=now + timedelta(days=2),
            trial_end=now + timedelta(days=2),
        ),
    ]

    async def add_all(uow: UnitOfWork) -> None:
        for subscription in subscriptions:
            await uow.subscriptions.add(subscription)

    await committed(db, add_all)

    claimed = await read(db, lambda uow: uow.subscriptions.claim_due(now, 10))
    assert [row.user_id for row in claimed] == [late.id, trial_over.id, on_time.id]
    assert claimed[0] == subscriptions[0]
    assert [row.user_id for row in await read(db, lambda uow: uow.subscriptions.claim_due(now, 2))] == [
        late.id,
        trial_over.id,
    ]
    assert await read(db, lambda uow: uow.subscriptions.claim_due(now, 0)) == []


async def test_concurrent_claimers_skip_each_others_subscriptions(db: Database, ids: SequentialIds) -> None:
    now = datetime(2026, 4, 1, tzinfo=UTC)
    users = [make_user(ids, f"u{n}@example.com") for n in range(5)]
    await add_users(db, *users)

    async def add_all(uow: UnitOfWork) -> None:
        for n, user in enumerate(users):
            await uow.subscriptions.add(
                make_subscription(user, current_period_end=now - timedelta(hours=5 - n))
            )

    await committed(db, add_all)
    ordered = [user.id for user in users]

    async with db.unit_of_work() as first, db.unit_of_work() as second:
        first_claim = await first.subscriptions.claim_due(now, 2)
        second_claim = await second.subscriptions.claim_due(now, 2)  # does not wait: skips
        assert [row.user_id for row in first_claim] == ordered[:2]
        assert [row.user_id for row in second_claim] == ordered[2:4]
        # A third claimer gets what is left.
        async with db.unit_of_work() as third:
            assert [row.user_id for row in await third.subscriptions.claim_due(now, 10)] == ordered[4:]
        # The first roll-over moves its subscriptions on; the second gives up.
        for row in first_claim:
            moved = msgspec.structs.replace(
                row, current_period_start=PERIOD_END, current_period_end=now + timedelta(days=30)
            )
            await first.subscriptions.update(moved)
        await first.commit()
        await second.rollback()

    claimed_after = await read(db, lambda uow: uow.subscriptions.claim_due(now, 10))
    assert [row.user_id for row in claimed_after] == ordered[2:]


async def test_a_subscription_held_by_get_for_update_is_not_claimed(db: Database, ada: User) -> None:
    now = datetime(2026, 4, 1, tzinfo=UTC)
    await committed(db, lambda uow: uow.subscriptions.add(make_subscription(ada, current_period_end=now)))
    async with db.unit_of_work() as holder:
        assert await holder.subscriptions.get_for_update(ada.id) is not None
        assert await read(db, lambda uow: uow.subscriptions.claim_due(now, 10)) == []
    assert len(await read(db, lambda uow: uow.subscriptions.claim_due(now, 10))) == 1


# Charges


async def test_charges_list_newest_first_per_user(db: Database, ada: User, ids: SequentialIds) -> None:
    grace = make_user(ids, "grace@example.com")
    await add_users(db, grace)
    first = make_charge(ids, ada, kind=ChargeKind.PRORATION, amount_cents=633, created_at=later(1))
    theirs = make_charge(ids, grace)
    second = make_charge(ids, ada, amount_cents=4900, plan="team", created_at=later(2))
    third = make_charge(ids, ada, amount_cents=0, created_at=later(3))

    async def add_all(uow: UnitOfWork) -> None:
        for charge in (first, theirs, second, third):
            await uow.charges.add(charge)

    await committed(db, add_all)

    assert await read(db, lambda uow: uow.charges.list_for_user(ada.id, limit=10)) == [third, second, first]
    assert await read(db, lambda uow: uow.charges.list_for_user(ada.id, limit=2)) == [third, second]
    assert await read(db, lambda uow: uow.charges.list_for_user(grace.id, limit=10)) == [theirs]
    assert await read(db, lambda uow: uow.charges.list_for_user(NOT_A_UUID, limit=10)) == []
    listed = await read(db, lambda uow: uow.charges.list_for_user(ada.id, limit=1))
    assert listed[0].kind is ChargeKind.RENEWAL and listed[0].created_at.utcoffset() == timedelta(0)


async def test_a_reused_charge_id_is_a_conflict_and_bad_charges_are_refused(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    charge = make_charge(ids, ada)
    await committed(db, lambda uow: uow.charges.add(charge))
    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.charges.add(msgspec.structs.replace(charge, amount_cents=1))
        assert raised.value.code is ErrorCode.CONFLICT
        with pytest.raises(ValueError):
            await uow.charges.add(make_charge(ids, ada, amount_cents=-1))
        with pytest.raises(ValueError):
            await uow.charges.add(make_charge(ids, ada, currency="usd"))
    assert await read(db, lambda uow: uow.charges.list_for_user(ada.id, limit=10)) == [charge]


# Usage and quota reservations


async def test_a_reservation_counts_its_images_and_reads_back(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    assert await usage_of(db, ada) is None
    reservation = make_reservation(ids, ada, images=4)

    result = await reserve(db, reservation)

    assert result == ReservationResult(outcome=ReservationOutcome.RESERVED, usage=period(ada, 4, 1))
    assert await usage_of(db, ada) == period(ada, 4, 1)
    assert await read(db, lambda uow: uow.usage.get_reservation(reservation.id)) == reservation
    assert await read(db, lambda uow: uow.usage.get_reservation(NOT_A_UUID)) is None
    assert await read(db, lambda uow: uow.usage.get(NOT_A_UUID, PERIOD_START)) is None


async def test_the_same_reservation_again_changes_nothing(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    reservation = make_reservation(ids, ada, images=4)
    await reserve(db, reservation)

    again = await reserve(db, msgspec.structs.replace(reservation, images=9), images_limit=4)

    assert again == ReservationResult(outcome=ReservationOutcome.ALREADY_RESERVED, usage=period(ada, 4, 1))
    assert await read(db, lambda uow: uow.usage.get_reservation(reservation.id)) == reservation


async def test_the_quota_holds_at_exactly_its_limit(db: Database, ada: User, ids: SequentialIds) -> None:
    attempts = [make_reservation(ids, ada, images=images) for images in (4, 4, 3, 2, 1)]
    outcomes = [(await reserve(db, attempt, images_limit=10)).outcome for attempt in attempts]

    reserved, exceeded = ReservationOutcome.RESERVED, ReservationOutcome.QUOTA_EXCEEDED
    assert outcomes == [reserved, reserved, exceeded, reserved, exceeded]  # 8 + 3 > 10; 8 + 2 = 10
    assert await usage_of(db, ada) == period(ada, 10, 3)
    kept = await _reservations(db, *(attempt.id for attempt in attempts))
    assert kept == [attempts[0], attempts[1], None, attempts[3], None]  # refusals leave no row


async def test_a_first_reservation_larger_than_the_quota_creates_nothing(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    reservation = make_reservation(ids, ada, images=11)
    result = await reserve(db, reservation, images_limit=10)
    assert result == ReservationResult(outcome=ReservationOutcome.QUOTA_EXCEEDED, usage=period(ada, 0, 0))
    assert await usage_of(db, ada) is None
    assert await read(db, lambda uow: uow.usage.get_reservation(reservation.id)) is None


async def test_running_generations_are_capped_and_a_full_quota_says_so_first(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    first, second = make_reservation(ids, ada), make_reservation(ids, ada)
    assert (await reserve(db, first, max_in_flight=2)).outcome is ReservationOutcome.RESERVED
    assert (await reserve(db, second, max_in_flight=2)).outcome is ReservationOutcome.RESERVED

    busy = await reserve(db, make_reservation(ids, ada), max_in_flight=2)
    assert busy == ReservationResult(outcome=ReservationOutcome.CONCURRENCY_LIMIT, usage=period(ada, 2, 2))
    too_many = await reserve(db, make_reservation(ids, ada, images=9), max_in_flight=2)
    assert too_many.outcome is ReservationOutcome.QUOTA_EXCEEDED  # waiting would not help

    await committed(db, lambda uow: uow.usage.release(first.id, refund=False, at=later(5)))
    third = await reserve(db, make_reservation(ids, ada), max_in_flight=2)
    assert third == ReservationResult(outcome=ReservationOutcome.RESERVED, usage=period(ada, 3, 2))


async def test_settling_keeps_the_images_and_refunding_gives_them_back(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    settled, refunded = make_reservation(ids, ada, images=3), make_reservation(ids, ada, images=2)
    await reserve(db, settled)
    await reserve(db, refunded)
    assert await usage_of(db, ada) == period(ada, 5, 2)

    ended = await committed(db, lambda uow: uow.usage.release(settled.id, refund=False, at=later(10)))
    assert ended == msgspec.structs.replace(settled, status=ReservationStatus.SETTLED, finished_at=later(10))
    assert await usage_of(db, ada) == period(ada, 5, 1)

    given_back = await committed(db, lambda uow: uow.usage.release(refunded.id, refund=True, at=later(20)))
    assert given_back == msgspec.structs.replace(
        refunded, status=ReservationStatus.REFUNDED, finished_at=later(20)
    )
    assert await usage_of(db, ada) == period(ada, 3, 0)
    assert await _reservations(db, settled.id, refunded.id) == [ended, given_back]


async def test_a_reservation_ends_only_once(db: Database, ada: User, ids: SequentialIds) -> None:
    reservation = make_reservation(ids, ada, images=3)
    await reserve(db, reservation)
    await committed(db, lambda uow: uow.usage.release(reservation.id, refund=True, at=later(1)))

    assert (
        await committed(db, lambda uow: uow.usage.release(reservation.id, refund=True, at=later(2))) is None
    )
    assert (
        await committed(db, lambda uow: uow.usage.release(reservation.id, refund=False, at=later(3))) is None
    )
    assert await committed(db, lambda uow: uow.usage.release(ids.new_id(), refund=True, at=later(4))) is None
    assert await committed(db, lambda uow: uow.usage.release(NOT_A_UUID, refund=True, at=later(5))) is None
    assert await usage_of(db, ada) == period(ada, 0, 0)
    stored = await read(db, lambda uow: uow.usage.get_reservation(reservation.id))
    assert stored is not None and (stored.status, stored.finished_at) == (
        ReservationStatus.REFUNDED,
        later(1),
    )


async def test_of_two_concurrent_releases_one_counts(db: Database, ada: User, ids: SequentialIds) -> None:
    reservation = make_reservation(ids, ada, images=3)
    await reserve(db, reservation)

    async with db.unit_of_work() as first:
        assert await first.usage.release(reservation.id, refund=True, at=later(1)) is not None

        async def second_release() -> QuotaReservation | None:
            return await committed(
                db, lambda uow: uow.usage.release(reservation.id, refund=True, at=later(2))
            )

        waiting = asyncio.create_task(second_release())
        await asyncio.sleep(0.1)
        assert not waiting.done()  # it waits for the first release's row lock
        await first.commit()

    assert await waiting is None
    assert await usage_of(db, ada) == period(ada, 0, 0)


async def test_a_rolled_back_reservation_leaves_no_trace(db: Database, ada: User, ids: SequentialIds) -> None:
    await reserve(db, make_reservation(ids, ada, images=2))
    reservation = make_reservation(ids, ada, images=5)
    async with db.unit_of_work() as uow:
        result = await uow.usage.reserve(reservation, period_end=PERIOD_END, images_limit=10, max_in_flight=5)
        assert result.usage == period(ada, 7, 2)
        assert await read(db, lambda other: other.usage.get(ada.id, PERIOD_START)) == period(ada, 2, 1)
        await uow.rollback()

    assert await usage_of(db, ada) == period(ada, 2, 1)
    assert await read(db, lambda uow: uow.usage.get_reservation(reservation.id)) is None
    assert (await reserve(db, reservation)).outcome is ReservationOutcome.RESERVED  # the id is free again


async def test_a_reservation_id_another_unit_of_work_is_reserving_waits_for_its_outcome(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    reservation = make_reservation(ids, ada, images=2)
    async with db.unit_of_work() as first:
        await first.usage.reserve(reservation, period_end=PERIOD_END, images_limit=10, max_in_flight=5)
        waiting = asyncio.create_task(reserve(db, reservation))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await first.commit()

    assert await waiting == ReservationResult(
        outcome=ReservationOutcome.ALREADY_RESERVED, usage=period(ada, 2, 1)
    )


async def test_periods_and_users_are_counted_apart(db: Database, ada: User, ids: SequentialIds) -> None:
    grace = make_user(ids, "grace@example.com")
    await add_users(db, grace)
    await reserve(db, make_reservation(ids, ada, images=10), images_limit=10)
    next_start = PERIOD_END
    next_period = make_reservation(ids, ada, images=10, period_start=next_start)
    result = await committed(
        db,
        lambda uow: uow.usage.reserve(
            next_period, period_end=next_start + timedelta(days=30), images_limit=10, max_in_flight=5
        ),
    )
    assert result.outcome is ReservationOutcome.RESERVED
    assert (await reserve(db, make_reservation(ids, grace, images=10), images_limit=10)).outcome is (
        ReservationOutcome.RESERVED
    )
    assert await usage_of(db, ada) == period(ada, 10, 1)
    assert await usage_of(db, grace) == period(grace, 10, 1)


async def test_a_reservation_needs_its_user(db: Database, ids: SequentialIds) -> None:
    ghost = make_user(ids, "ghost@example.com")
    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError):
            await uow.usage.reserve(
                make_reservation(ids, ghost), period_end=PERIOD_END, images_limit=10, max_in_flight=5
            )


async def test_each_threshold_is_marked_once_a_period(db: Database, ada: User, ids: SequentialIds) -> None:
    assert (
        await committed(db, lambda uow: uow.usage.mark_threshold(ada.id, PERIOD_START, 80)) is False
    )  # no row
    await reserve(db, make_reservation(ids, ada, images=8))

    assert await committed(db, lambda uow: uow.usage.mark_threshold(ada.id, PERIOD_START, 100)) is True
    assert await committed(db, lambda uow: uow.usage.mark_threshold(ada.id, PERIOD_START, 80)) is True
    assert await committed(db, lambda uow: uow.usage.mark_threshold(ada.id, PERIOD_START, 80)) is False
    assert await committed(db, lambda uow: uow.usage.mark_threshold(ada.id, PERIOD_END, 80)) is False
    assert await committed(db, lambda uow: uow.usage.mark_threshold(NOT_A_UUID, PERIOD_START, 80)) is False
    assert await usage_of(db, ada) == period(ada, 8, 1, thresholds=(80, 100))

    async with db.unit_of_work() as uow:  # a rolled-back mark is not a mark
        assert await uow.usage.mark_threshold(ada.id, PERIOD_START, 50) is True
    assert await committed(db, lambda uow: uow.usage.mark_threshold(ada.id, PERIOD_START, 50)) is True


async def test_a_finished_unit_of_work_refuses_billing_work(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    uow = db.unit_of_work()
    async with uow:
        await uow.commit()
        with pytest.raises(RuntimeError):
            await uow.subscriptions.get(ada.id)
        with pytest.raises(RuntimeError):
            await uow.charges.list_for_user(ada.id, limit=1)
        with pytest.raises(RuntimeError):
            await uow.usage.reserve(
                make_reservation(ids, ada), period_end=PERIOD_END, images_limit=1, max_in_flight=1
            )


async def _reservations(db: Database, *reservation_ids: str) -> list[QuotaReservation | None]:
    async def fetch(uow: UnitOfWork) -> list[QuotaReservation | None]:
        return [await uow.usage.get_reservation(id_) for id_ in reservation_ids]

    return await read(db, fetch)


@pytest.mark.parametrize("backend_url", ["postgres"], indirect=True)
async def test_migrating_gives_every_existing_user_an_active_subscription_on_their_plan(
    backend_url: str, ids: SequentialIds
) -> None:
    from adapters.postgres import PostgresDatabase, apply_migrations, open_pool
    from adapters.postgres.migrations import load_migrations

    before_billing = [migration for migration in load_migrations() if migration.version < 4]
    await apply_migrations(backend_url, migrations=before_billing)
    free, pro = (
        make_user(ids, "free@example.com"),
        msgspec.structs.replace(make_user(ids, "pro@example.com"), plan="pro"),
    )
    pool = await open_pool(backend_url, min_size=1, max_size=2, name="billing-backfill")
    try:
        db = PostgresDatabase(pool)
        await add_users(db, free, pro)
        through_billing = [migration for migration in load_migrations() if migration.version <= 4]
        assert await apply_migrations(backend_url, migrations=through_billing) == ["0004_billing"]
        async with pool.connection() as conn:
            cursor = await conn.execute("SELECT now()")
            row = await cursor.fetchone()
        assert row is not None
        after_migration: datetime = row[0]
        subscriptions = [
            await read(db, lambda uow, user=user: uow.subscriptions.get(user.id)) for user in (free, pro)
        ]
    finally:
        await pool.close()

    assert [(s.plan, s.status) if s else None for s in subscriptions] == [
        ("free", SubscriptionStatus.ACTIVE),
        ("pro", SubscriptionStatus.ACTIVE),
    ]
    for subscription in subscriptions:
        assert subscription is not None
        start, end = subscription.current_period_start, subscription.current_period_end
        assert start <= after_migration
        assert (end.year * 12 + end.month) - (start.year * 12 + start.month) == 1  # one calendar month
        assert (
            end.day == start.day or end.month != (end + timedelta(days=1)).month
        )  # or clamped to its last day
        assert (end.hour, end.minute, end.second, end.microsecond) == (
            start.hour,
            start.minute,
            start.second,
            start.microsecond,
        )
        assert not subscription.cancel_at_period_end and subscription.trial_end is None
