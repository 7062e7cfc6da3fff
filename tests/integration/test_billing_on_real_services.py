"""Subscriptions and quotas on real PostgreSQL and Valkey: over HTTP, an upgrade charges exactly
what its preview said and lifts the quota at once (for a cached API-key principal too); two
roll-over workers on separate pools process each due subscription exactly once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TypeVar

import psycopg
import pytest
import svcs
from litestar.testing import AsyncTestClient

from adapters.memory.clock import ManualClock
from adapters.memory.ids import SequentialIds
from adapters.postgres.migrations import apply_migrations
from adapters.system import SystemIds
from core.billing.charges import ChargeKind
from core.billing.subscription_management import Subscriptions
from core.billing.subscriptions import roll_over, start_subscription
from core.errors import DomainError, ErrorCode
from core.ports import Clock
from entrypoints.http.app import create_app
from entrypoints.http.svcs_plugin import registry_of
from entrypoints.plan_catalog import builtin_catalog
from entrypoints.settings import settings_from_mapping
from entrypoints.use_cases import quotas_from
from entrypoints.wiring import service_registry
from tests.support.accounts import bearer, login, register
from tests.support.billing_data import add_users, make_user, open_database
from tests.support.services import unique_name

T = TypeVar("T")
CATALOG = builtin_catalog()


class RecordingPrincipals:
    def __init__(self) -> None:
        self.invalidated: list[str] = []

    async def get_or_load(
        self, key: str, loader: Callable[[], Awaitable[tuple[T, Sequence[str]]]], *, ttl_seconds: float
    ) -> T:
        return (await loader())[0]

    async def invalidate_tags(self, *tags: str) -> int:
        self.invalidated.extend(tags)
        return 0

    async def ping(self) -> None:
        return None


async def _rows(url: str, query: str, *params: object) -> list[tuple[object, ...]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        return list(await (await conn.execute(query, params)).fetchall())  # type: ignore[arg-type]


async def test_an_upgrade_over_http_charges_the_preview_and_lifts_the_quota_at_once(
    postgres_url: str, valkey_url: str, tmp_path: Path
) -> None:
    await apply_migrations(postgres_url)
    environ = {
        "PICTOR_DATA_DIR": str(tmp_path),
        "PICTOR_DATABASE_URL": postgres_url,
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_QUEUE_URL": "memory://",
        "PICTOR_NAMESPACE": unique_name("bill").replace("_", "-"),
        "PICTOR_STORAGE_URL": "memory://",
        "PICTOR_SECRET_URL_SIGNING_KEY": "k",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        "PICTOR_SMTP_URL": "memory://",
        "PICTOR_DB_POOL_MIN": "1",
    }
    settings = settings_from_mapping(environ)
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))  # a preview and its charge: one instant

    @asynccontextmanager
    async def registry() -> AsyncIterator[svcs.Registry]:
        async with service_registry(settings, environ=environ) as services:
            services.register_value(Clock, clock)
            yield services

    free, team = CATALOG.default, CATALOG.get("team")
    assert team is not None
    async with AsyncTestClient(app=create_app(settings, registry_factory=registry)) as client:
        user = await register(client, "payer@example.com")
        session = await login(client, "payer@example.com")
        key = (await client.post("/v1/api-keys", json={"name": "app"}, headers=bearer(session))).json()["key"]
        async with svcs.Container(registry_of(client.app)) as container:
            quotas = await quotas_from(container)
        ids = SequentialIds(seed=7)
        for _ in range(free.monthly_images // 10):
            reservation = ids.new_id()
            await quotas.reserve(user["id"], free.code, reservation, 10)
            assert await quotas.settle(reservation)  # the free plan runs one generation at a time
        with pytest.raises(DomainError) as exhausted:
            await quotas.reserve(user["id"], free.code, ids.new_id(), 1)
        assert exhausted.value.code is ErrorCode.QUOTA_EXCEEDED
        usage = (await client.get("/v1/usage", headers=bearer(key))).json()  # the key's principal is cached
        assert (usage["images_used"], usage["images_remaining"]) == (free.monthly_images, 0)

        clock.advance(11 * 86_400 + 7)
        preview = (
            await client.post("/v1/subscription/preview", json={"plan": "team"}, headers=bearer(session))
        ).json()
        changed = await client.post("/v1/subscription", json={"plan": "team"}, headers=bearer(session))

        assert changed.status_code == 200, changed.text
        charge = changed.json()["latest_charge"]
        assert 0 < preview["amount_due_cents"] == charge["amount_cents"] < team.monthly_price_cents
        stored = await _rows(
            postgres_url, "SELECT kind, amount_cents, plan FROM charges WHERE user_id = %s", user["id"]
        )
        assert stored == [("proration", preview["amount_due_cents"], "team")]
        lifted = (await client.get("/v1/usage", headers=bearer(key))).json()
        assert (lifted["images_limit"], lifted["images_remaining"]) == (
            team.monthly_images,
            team.monthly_images - free.monthly_images,
        )
        me = (await client.get("/v1/me", headers=bearer(key))).json()
        assert me["plan"] == "team"
        await quotas.reserve(user["id"], me["plan"], ids.new_id(), 1)  # the next generation is accepted
        events = await _rows(
            postgres_url, "SELECT payload->'data'->>'plan' FROM outbox WHERE type = 'subscription.updated'"
        )
        assert events == [("team",)]


async def test_two_roll_over_workers_process_each_due_subscription_once(postgres_url: str) -> None:
    now = datetime.now(UTC)
    ids = SequentialIds(seed=3)
    users = [make_user(ids, f"due{n}@example.com") for n in range(40)]
    async with (
        open_database(postgres_url, max_connections=4) as first,
        open_database(postgres_url, max_connections=4) as second,
    ):
        await add_users(first, *users)
        expected: dict[str, int] = {}
        async with first.unit_of_work() as uow:
            for n, user in enumerate(users):
                # Paid plans whose period ended one to three periods ago; each renewal is a charge.
                since = now - timedelta(days=35 + 30 * (n % 3), minutes=n)
                subscription = start_subscription(user.id, "pro" if n % 2 else "team", since)
                await uow.subscriptions.add(subscription)
                expected[user.id] = len(roll_over(subscription, CATALOG, now).charges)
            await uow.commit()

        def worker(database: object) -> Subscriptions:
            return Subscriptions(
                database=database,  # type: ignore[arg-type]
                catalog=CATALOG,
                principals=RecordingPrincipals(),
                ids=SystemIds(),
                clock=ManualClock(now),
            )

        counts = await asyncio.gather(
            worker(first).roll_over(now, batch=3), worker(second).roll_over(now, batch=4)
        )
        assert sum(counts) == len(users)
        assert await worker(first).roll_over(now) == 0

    renewals = await _rows(
        postgres_url,
        "SELECT user_id::text, period_start, count(*) FROM charges WHERE kind = %s"
        " GROUP BY user_id, period_start HAVING count(*) > 1",
        ChargeKind.RENEWAL.value,
    )
    assert renewals == []  # no period was charged twice
    per_user = dict(
        await _rows(postgres_url, "SELECT user_id::text, count(*) FROM charges GROUP BY user_id")  # type: ignore[arg-type]
    )
    assert per_user == expected and set(expected.values()) == {1, 2, 3}
    periods = await _rows(
        postgres_url, "SELECT user_id::text, current_period_start, current_period_end FROM subscriptions"
    )
    assert len(periods) == len(users)
    for _, start, end in periods:
        assert start <= now < end  # type: ignore[operator]
    outbox = await _rows(postgres_url, "SELECT count(*) FROM outbox WHERE type = 'subscription.updated'")
    assert outbox == [(len(users),)]  # one event per subscription rolled
