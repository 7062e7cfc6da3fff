"""Quota reservations under real concurrency: usage never exceeds the quota, no refund is lost or
counted twice.

PostgreSQL: many units of work on a pool of several connections, and several OS processes racing
for one quota. The in-memory fake runs the same single-process races, so the fake keeps the promise
the use cases and HTTP tests rely on.
"""

from __future__ import annotations

import asyncio
import random
import sys
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from adapters.memory.ids import SequentialIds
from core.accounts.users import User
from core.billing.usage import QuotaReservation, ReservationOutcome, ReservationResult, ReservationStatus
from core.ports import Database
from tests.support.billing_data import (
    PERIOD_END,
    PERIOD_START,
    add_users,
    later,
    make_reservation,
    make_user,
    open_database,
)

ROOT = Path(__file__).resolve().parents[2]
CONNECTIONS = 8


@pytest.fixture(params=["memory", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    return None if request.param == "memory" else request.getfixturevalue("postgres_url")


@pytest.fixture
async def db(backend_url: str | None) -> AsyncIterator[Database]:
    async with open_database(backend_url, max_connections=CONNECTIONS) as database:
        yield database


@pytest.fixture
def ids() -> SequentialIds:
    return SequentialIds()


@pytest.fixture
async def ada(db: Database, ids: SequentialIds) -> User:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    return user


async def reserve_alone(
    db: Database, reservation: QuotaReservation, *, images_limit: int, max_in_flight: int = 10_000
) -> ReservationResult:
    """One reservation in a unit of work of its own, as one accepted generation makes it."""
    async with db.unit_of_work() as uow:
        result = await uow.usage.reserve(
            reservation, period_end=PERIOD_END, images_limit=images_limit, max_in_flight=max_in_flight
        )
        await uow.commit()
    return result


async def release_alone(
    db: Database, reservation_id: str, *, refund: bool, at_second: int
) -> QuotaReservation | None:
    async with db.unit_of_work() as uow:
        ended = await uow.usage.release(reservation_id, refund=refund, at=later(at_second))
        await uow.commit()
    return ended


async def test_concurrent_reservations_never_exceed_the_quota(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    limit, images, demand = 100, 3, 60  # 180 images wanted, room for 33 reservations
    start = asyncio.Event()

    async def one() -> ReservationResult:
        await start.wait()  # all of them at once
        return await reserve_alone(db, make_reservation(ids, ada, images=images), images_limit=limit)

    tasks = [asyncio.create_task(one()) for _ in range(demand)]
    await asyncio.sleep(0)
    start.set()
    results = await asyncio.gather(*tasks)

    outcomes = Counter(result.outcome for result in results)
    assert outcomes == {
        ReservationOutcome.RESERVED: limit // images,
        ReservationOutcome.QUOTA_EXCEEDED: demand - limit // images,
    }
    assert all(result.usage.images_used <= limit for result in results)
    # Each success saw a distinct total: the increments took turns.
    seen = sorted(r.usage.images_used for r in results if r.outcome is ReservationOutcome.RESERVED)
    assert seen == list(range(images, limit // images * images + 1, images))
    async with db.unit_of_work() as uow:
        usage = await uow.usage.get(ada.id, PERIOD_START)
    assert usage is not None
    assert (usage.images_used, usage.in_flight) == (limit // images * images, limit // images)


@pytest.mark.parametrize("backend_url", ["postgres"], indirect=True)
async def test_processes_racing_for_one_quota_never_exceed_it(
    backend_url: str, db: Database, ada: User
) -> None:
    limit, images, processes, each = 50, 2, 4, 15  # 120 images wanted, room for 25 reservations
    racers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tests.support.billing_reserver",
            backend_url,
            ada.id,
            "--count",
            str(each),
            "--images",
            str(images),
            "--limit",
            str(limit),
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for _ in range(processes)
    ]
    try:
        for racer in racers:
            assert racer.stdout is not None
            assert (await racer.stdout.readline()).strip() == b"ready"
        for racer in racers:  # every process is connected: start them together
            assert racer.stdin is not None
            racer.stdin.write(b"go\n")
            await racer.stdin.drain()
        reports = [await racer.communicate() for racer in racers]
    finally:
        for racer in racers:
            if racer.returncode is None:
                racer.kill()
                await racer.wait()

    assert [racer.returncode for racer in racers] == [0] * processes
    outcomes: Counter[str] = Counter()
    for stdout, _ in reports:
        outcomes.update(msgspec.json.decode(stdout.strip().splitlines()[-1], type=dict[str, int]))
    assert outcomes == {"reserved": limit // images, "quota_exceeded": processes * each - limit // images}
    async with db.unit_of_work() as uow:
        usage = await uow.usage.get(ada.id, PERIOD_START)
    assert usage is not None
    assert (usage.images_used, usage.in_flight) == (limit // images * images, limit // images)


async def test_settle_and_refund_storms_lose_or_double_nothing(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    chooser = random.Random(4)
    reservations = [make_reservation(ids, ada, images=chooser.randint(1, 4)) for _ in range(40)]
    for reservation in reservations:
        result = await reserve_alone(db, reservation, images_limit=1_000)
        assert result.outcome is ReservationOutcome.RESERVED

    # Every reservation is released three times at once, each time settled or refunded at random
    # (a job retried while its first attempt is still finishing), all reservations together.
    releases = [(reservation.id, chooser.random() < 0.5) for reservation in reservations for _ in range(3)]
    chooser.shuffle(releases)
    start = asyncio.Event()

    async def one(reservation_id: str, refund: bool, at_second: int) -> QuotaReservation | None:
        await start.wait()
        return await release_alone(db, reservation_id, refund=refund, at_second=at_second)

    tasks = [asyncio.create_task(one(id_, refund, n)) for n, (id_, refund) in enumerate(releases)]
    await asyncio.sleep(0)
    start.set()
    ended = [reservation for reservation in await asyncio.gather(*tasks) if reservation is not None]

    assert sorted(reservation.id for reservation in ended) == sorted(r.id for r in reservations)  # once each
    settled = [reservation for reservation in ended if reservation.status is ReservationStatus.SETTLED]
    async with db.unit_of_work() as uow:
        usage = await uow.usage.get(ada.id, PERIOD_START)
        stored = [await uow.usage.get_reservation(reservation.id) for reservation in reservations]
    assert usage is not None
    assert (usage.images_used, usage.in_flight) == (sum(r.images for r in settled), 0)
    assert sorted(stored, key=lambda r: r.id if r else "") == sorted(ended, key=lambda r: r.id)
