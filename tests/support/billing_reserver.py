"""A process that races others for one user's quota, for the multi-process quota test.

    python -m tests.support.billing_reserver URL USER_ID --count N --images I --limit L

It opens its own pool, prints `ready` once connected, waits for a line on stdin (the start signal,
so every process fires at once), then makes N reservations of I images concurrently, each in its own
unit of work, and prints one JSON object: the outcomes counted by name.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from collections import Counter

import msgspec

from adapters.postgres import PostgresDatabase, open_pool
from core.billing.usage import QuotaReservation, ReservationStatus
from tests.support.billing_data import PERIOD_END, PERIOD_START, T0


async def race(url: str, user_id: str, *, count: int, images: int, limit: int) -> Counter[str]:
    pool = await open_pool(url, min_size=4, max_size=4, name="billing-reserver")
    try:
        db = PostgresDatabase(pool)
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)

        async def reserve_one() -> str:
            reservation = QuotaReservation(
                id=str(uuid.uuid4()),
                user_id=user_id,
                period_start=PERIOD_START,
                images=images,
                status=ReservationStatus.RESERVED,
                created_at=T0,
            )
            async with db.unit_of_work() as uow:
                result = await uow.usage.reserve(
                    reservation, period_end=PERIOD_END, images_limit=limit, max_in_flight=10_000
                )
                await uow.commit()
            return result.outcome.value

        return Counter(await asyncio.gather(*(reserve_one() for _ in range(count))))
    finally:
        await pool.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("user_id")
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--images", type=int, required=True)
    parser.add_argument("--limit", type=int, required=True)
    args = parser.parse_args()
    outcomes = asyncio.run(
        race(args.url, args.user_id, count=args.count, images=args.images, limit=args.limit)
    )
    print(msgspec.json.encode(dict(outcomes)).decode(), flush=True)


if __name__ == "__main__":
    main()
