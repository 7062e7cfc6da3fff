"""Domain events published per second through the transactional outbox, with one and then two
concurrent publishers, next to a baseline that only claims the events and marks them published.

Run from the repository root (PostgreSQL must be running, see README):

    uv run python benchmarks/outbox_load.py [--events 20000] [--users 200] [--publishers 1 2]
                                            [--rounds 1] [--batch-size 100] [--json]

On real PostgreSQL (a fresh schema, migrated, dropped at the end): `--users` users, each with one
active webhook endpoint subscribed to every event type. For every scenario (publishers × handlers)
and round:

1. the outbox and the deliveries are emptied, then `--events` `generation.succeeded` events
   (spread over the users in turn) are written through `core.events.to_outbox` and the outbox
   port, `--write-batch` per unit of work, exactly as use cases write them; then `ANALYZE`;
2. the publishers, each a separate process with its own connection pool (as each `pictor worker`
   that serves the maintenance queue runs its own relay), open their pools and wait; all start
   at once and run `publish_outbox_backlog` (batches of `--batch-size`, `FOR UPDATE SKIP LOCKED`)
   until the outbox is empty;
3. the harness checks that every event was published once, and that the production handlers made
   exactly one webhook delivery per event (the baseline none).

Handlers: `production` is the list the worker's relay runs (`entrypoints.event_handlers.
event_handlers_from`: metrics, log line, audit trail, quota notices, webhook fan-out, which writes
the deliveries in the publishing transaction); `baseline` runs none (claim + mark published only).
No log handler is configured, so the `event published` info line is built and dropped, as with
PICTOR_LOG_LEVEL=warning. Dispatching the deliveries to the `webhooks` queue is not part of
publishing and is not measured.

Reported per scenario (median over `--rounds`): events published per second and webhook
deliveries created per second, from the moment all publishers were released to the moment the
last one found the outbox empty; then production/baseline ratios and the speed-up of two
publishers over one. PostgreSQL, the publishers and the harness share the machine's cores:
numbers compare scenarios of the same run, and nothing asserts them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.auth_load import fresh_schema
from benchmarks.http_load import HarnessError, positive_int

PRODUCTION = "production"
BASELINE = "baseline"
HANDLER_SETS = (BASELINE, PRODUCTION)
PASSWORD_HASH = "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA"  # never checked: nobody logs in
START_TIMEOUT_SECONDS = 60.0


# ---------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Measurement:
    """One scenario of one round: how many events and deliveries, in how many seconds."""

    handlers: str
    publishers: int
    events: int
    deliveries: int
    seconds: float

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else float("nan")

    @property
    def deliveries_per_second(self) -> float:
        return self.deliveries / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class ScenarioSummary:
    """A scenario's median round (by events/s)."""

    handlers: str
    publishers: int
    rounds: int
    events_per_second: float
    deliveries_per_second: float
    seconds: float


def summarize(measurements: Sequence[Measurement]) -> list[ScenarioSummary]:
    """One summary per (publishers, handlers), in that order, each the median of its rounds."""
    keys = sorted(
        {(m.publishers, m.handlers) for m in measurements}, key=lambda k: (k[0], HANDLER_SETS.index(k[1]))
    )
    summaries = []
    for publishers, handlers in keys:
        rounds = [m for m in measurements if (m.publishers, m.handlers) == (publishers, handlers)]
        events = statistics.median(m.events_per_second for m in rounds)
        deliveries = statistics.median(m.deliveries_per_second for m in rounds)
        seconds = statistics.median(m.seconds for m in rounds)
        summaries.append(
            ScenarioSummary(
                handlers=handlers,
                publishers=publishers,
                rounds=len(rounds),
                events_per_second=events,
                deliveries_per_second=deliveries,
                seconds=seconds,
            )
        )
    return summaries


def ratios(summaries: Sequence[ScenarioSummary]) -> dict[str, float]:
    """Production over baseline for each publisher count, and each handler set's speed-up of the
    largest publisher count over one."""
    rate = {(s.publishers, s.handlers): s.events_per_second for s in summaries}
    result: dict[str, float] = {}
    for publishers in sorted({s.publishers for s in summaries}):
        production, baseline = rate.get((publishers, PRODUCTION)), rate.get((publishers, BASELINE))
        if production and baseline:
            result[f"production/baseline, {publishers} publisher(s)"] = production / baseline
    most = max((s.publishers for s in summaries), default=1)
    if most > 1:
        for handlers in HANDLER_SETS:
            one, many = rate.get((1, handlers)), rate.get((most, handlers))
            if one and many:
                result[f"speed-up {most}/1 publishers, {handlers}"] = many / one
    return result


@dataclass(frozen=True)
class Report:
    events: int
    users: int
    batch_size: int
    write_events_per_second: float  # median over the fills, for context
    measurements: tuple[Measurement, ...]

    def to_text(self) -> str:
        summaries = summarize(self.measurements)
        rounds = max((s.rounds for s in summaries), default=0)
        lines = [
            f"outbox: {self.events} generation.succeeded events for {self.users} users (one webhook"
            f" endpoint each), publish batches of {self.batch_size}; median of {rounds} round(s)",
            f"{'publishers':>10}  {'handlers':<10}  {'events/s':>10}  {'deliveries/s':>12}  {'seconds':>8}",
        ]
        for s in summaries:
            lines.append(
                f"{s.publishers:>10}  {s.handlers:<10}  {s.events_per_second:>10.0f}"
                f"  {s.deliveries_per_second:>12.0f}  {s.seconds:>8.2f}"
            )
        lines += [f"ratio {name}: {value:.2f}" for name, value in ratios(summaries).items()]
        lines.append(
            f"writing the backlog (to_outbox + outbox.add): {self.write_events_per_second:.0f} events/s"
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        summaries = summarize(self.measurements)
        return {
            "events": self.events,
            "users": self.users,
            "batch_size": self.batch_size,
            "write_events_per_second": self.write_events_per_second,
            "scenarios": [asdict(s) for s in summaries],
            "ratios": ratios(summaries),
            "measurements": [asdict(m) for m in self.measurements],
        }


# ---------------------------------------------------------------------------- database set-up


@contextlib.asynccontextmanager
async def opened(url: str, *, connections: int, name: str) -> Any:
    """Pictor's PostgreSQL adapter on a pool of its own (the production pool settings)."""
    from adapters.postgres.database import PostgresDatabase
    from adapters.postgres.pool import open_pool

    pool = await open_pool(url, min_size=1, max_size=connections, name=name)
    try:
        yield PostgresDatabase(pool)
    finally:
        await pool.close()


async def create_users_and_endpoints(url: str, users: int) -> list[str]:
    """`users` users, each with one active endpoint for every event type; their ids."""
    from adapters.postgres.migrations import apply_migrations
    from adapters.system import SystemIds
    from core.accounts.users import Role, User, UserStatus
    from core.webhooks.endpoints import WebhookEndpoint

    await apply_migrations(url)
    ids = SystemIds()
    now = datetime.now(UTC)
    user_ids = []
    async with (
        opened(url, connections=1, name="outbox-bench-setup") as database,
        database.unit_of_work() as uow,
    ):
        for number in range(users):
            email = f"outbox-bench-{number}@example.com"
            user = User(
                id=ids.new_id(),
                email=email,
                email_normalized=email,
                display_name=None,
                role=Role.USER,
                status=UserStatus.ACTIVE,
                email_verified=True,
                password_hash=PASSWORD_HASH,
                plan="free",
                created_at=now,
                updated_at=now,
            )
            await uow.users.add(user)
            await uow.webhook_endpoints.add(
                WebhookEndpoint(
                    id=ids.new_id(),
                    user_id=user.id,
                    url=f"https://hooks.example.com/pictor/{number}",
                    created_at=now,
                    updated_at=now,
                )
            )
            user_ids.append(user.id)
        await uow.commit()
    return user_ids


async def write_backlog(url: str, user_ids: Sequence[str], events: int, batch: int) -> float:
    """Empty the outbox and the deliveries, write `events` events as use cases do; seconds taken."""
    import psycopg

    from adapters.system import SystemIds
    from core.events import GenerationData, GenerationSucceeded, to_outbox

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("TRUNCATE outbox, webhook_deliveries")
    ids = SystemIds()
    started = time.monotonic()
    async with opened(url, connections=1, name="outbox-bench-writer") as database:
        for first in range(0, events, batch):
            async with database.unit_of_work() as uow:
                for number in range(first, min(first + batch, events)):
                    event = GenerationSucceeded(
                        id=ids.new_id(),
                        occurred_at=datetime.now(UTC),
                        user_id=user_ids[number % len(user_ids)],
                        correlation_id=f"bench-{number}",
                        data=GenerationData(generation_id=ids.new_id(), status="succeeded", n=1, images=1),
                    )
                    await uow.outbox.add(to_outbox(event))
                await uow.commit()
    seconds = time.monotonic() - started
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        await conn.execute("ANALYZE outbox")
        await conn.execute("ANALYZE webhook_deliveries")
    return seconds


async def outcome(url: str) -> tuple[int, int, int]:
    """Published events, unpublished events, webhook deliveries."""
    import psycopg

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT count(*) FILTER (WHERE published_at IS NOT NULL),"
            " count(*) FILTER (WHERE published_at IS NULL),"
            " (SELECT count(*) FROM webhook_deliveries) FROM outbox"
        )
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


# ---------------------------------------------------------------------------- publishers


def publisher_process(url: str, handlers: str, batch_size: int, ready: Any, start: Any, results: Any) -> None:
    """One publisher (a child process): pool open and handlers built before the start signal."""
    asyncio.run(_publish(url, handlers, batch_size, ready, start, results))


async def _production_handlers() -> Any:
    """The relay's handler list, from the same builder, over a registry of what it needs."""
    import svcs

    from adapters.system import SystemClock, SystemIds
    from core.ports import Clock, Ids
    from entrypoints.event_handlers import event_handlers_from
    from entrypoints.settings import Settings, settings_from_mapping

    registry = svcs.Registry()
    registry.register_value(Ids, SystemIds())
    registry.register_value(Clock, SystemClock())
    registry.register_value(Settings, settings_from_mapping({}))
    async with svcs.Container(registry) as container:
        return await event_handlers_from(container)


async def _publish(url: str, handlers: str, batch_size: int, ready: Any, start: Any, results: Any) -> None:
    from adapters.system import SystemClock
    from core.use_cases.publish_outbox import publish_outbox_backlog

    chosen = await _production_handlers() if handlers == PRODUCTION else ()
    clock = SystemClock()
    async with opened(url, connections=2, name="outbox-bench-publisher") as database:
        ready.put(True)
        await asyncio.to_thread(start.wait)
        published = 0
        while True:
            count = await publish_outbox_backlog(database, clock, chosen, batch_size=batch_size)
            published += count
            if count == 0:  # empty, or the rest is held by the other publishers
                break
        results.put((published, time.monotonic()))


def publish_all(url: str, handlers: str, publishers: int, batch_size: int) -> tuple[int, float]:
    """Run `publishers` processes over the backlog; events they published and the wall time."""
    context = multiprocessing.get_context("spawn")
    ready, results, start = context.Queue(), context.Queue(), context.Event()
    processes = [
        context.Process(target=publisher_process, args=(url, handlers, batch_size, ready, start, results))
        for _ in range(publishers)
    ]
    for process in processes:
        process.start()
    try:
        for _ in processes:
            ready.get(timeout=START_TIMEOUT_SECONDS)
        started = time.monotonic()  # CLOCK_MONOTONIC is system-wide: the children's clocks agree
        start.set()
        finished = [results.get() for _ in processes]
        for process in processes:
            process.join()
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
    if any(process.exitcode != 0 for process in processes):
        raise HarnessError(f"a publisher failed: exit codes {[p.exitcode for p in processes]}")
    return sum(count for count, _ in finished), max(end for _, end in finished) - started


# ---------------------------------------------------------------------------- the run


@dataclass(frozen=True)
class Options:
    events: int
    users: int
    publishers: tuple[int, ...]
    rounds: int
    batch_size: int
    write_batch: int


def measure(
    url: str, user_ids: Sequence[str], options: Options, handlers: str, publishers: int
) -> tuple[Measurement, float]:
    write_seconds = asyncio.run(write_backlog(url, user_ids, options.events, options.write_batch))
    published, seconds = publish_all(url, handlers, publishers, options.batch_size)
    marked, left, deliveries = asyncio.run(outcome(url))
    expected_deliveries = options.events if handlers == PRODUCTION else 0
    if (published, marked, left, deliveries) != (options.events, options.events, 0, expected_deliveries):
        raise HarnessError(
            f"{handlers}, {publishers} publisher(s): {published} published by the publishers,"
            f" {marked} marked, {left} left, {deliveries} deliveries (expected {options.events},"
            f" {options.events}, 0, {expected_deliveries})"
        )
    measurement = Measurement(
        handlers=handlers, publishers=publishers, events=published, deliveries=deliveries, seconds=seconds
    )
    return measurement, options.events / write_seconds


def run(options: Options) -> Report:
    measurements: list[Measurement] = []
    write_rates: list[float] = []
    with fresh_schema() as url:
        user_ids = asyncio.run(create_users_and_endpoints(url, options.users))
        for round_number in range(options.rounds):
            for publishers in options.publishers:
                # Alternate which handler set goes first, so neither always meets a warmer cache.
                order = HANDLER_SETS if round_number % 2 == 0 else HANDLER_SETS[::-1]
                for handlers in order:
                    measurement, write_rate = measure(url, user_ids, options, handlers, publishers)
                    measurements.append(measurement)
                    write_rates.append(write_rate)
                    print(
                        f"round {round_number + 1}: {publishers} publisher(s), {handlers}:"
                        f" {measurement.events_per_second:.0f} events/s",
                        file=sys.stderr,
                    )
    return Report(
        events=options.events,
        users=options.users,
        batch_size=options.batch_size,
        write_events_per_second=statistics.median(write_rates),
        measurements=tuple(measurements),
    )


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="outbox_load.py", description=__doc__.split("\n\n")[0])
    result.add_argument("--events", type=positive_int, default=20_000, help="per scenario (default 20000)")
    result.add_argument(
        "--users", type=positive_int, default=200, help="each with one endpoint (default 200)"
    )
    result.add_argument(
        "--publishers",
        type=positive_int,
        nargs="+",
        default=[1, 2],
        help="publisher processes (default 1 2)",
    )
    result.add_argument("--rounds", type=positive_int, default=1, help="rounds per scenario (default 1)")
    result.add_argument("--batch-size", type=positive_int, default=100, help="events per publish batch (100)")
    result.add_argument(
        "--write-batch", type=positive_int, default=500, help="events per writing transaction"
    )
    result.add_argument("--json", action="store_true")
    return result


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    options = Options(
        events=arguments.events,
        users=arguments.users,
        publishers=tuple(dict.fromkeys(arguments.publishers)),
        rounds=arguments.rounds,
        batch_size=arguments.batch_size,
        write_batch=arguments.write_batch,
    )
    try:
        report = run(options)
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    print(json.dumps(report.to_json(), indent=2) if arguments.json else report.to_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
