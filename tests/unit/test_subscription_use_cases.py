"""The subscription and quota use cases on the memory adapters, with a clock moved by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import msgspec
import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.password_hasher import FastPasswordHasher
from adapters.memory.session_store import MemorySessionStore
from core.accounts.administration import Administration, UserChanges
from core.accounts.api_keys import Scope
from core.accounts.audit import AuditAction
from core.accounts.context import AccountPolicy, Caller
from core.accounts.principal import SESSION_SCOPES, CredentialKind, Principal
from core.accounts.registration import Registration
from core.accounts.users import Role, User, UserStatus
from core.billing.charges import ChargeKind
from core.billing.periods import first_period_end
from core.billing.plans import Plan, PlanCatalog, PlanRateLimit
from core.billing.proration import prorate_upgrade
from core.billing.quotas import Quotas, thresholds_reached
from core.billing.subscription_management import Subscriptions
from core.billing.subscriptions import SubscriptionStatus
from core.cache_tags import user_tag
from core.errors import DomainError, ErrorCode
from core.events import QUOTA_THRESHOLD_REACHED, SUBSCRIPTION_UPDATED, from_outbox

T = TypeVar("T")
START = datetime(2026, 1, 10, 12, tzinfo=UTC)
PASSWORD = "an unremarkable passphrase"


def plan(code: str, price: int, *, images: int, jobs: int = 2, trial_days: int = 0) -> Plan:
    return Plan(
        code=code,
        name=code.title(),
        monthly_price_cents=price,
        currency="USD",
        monthly_images=images,
        rate_limit=PlanRateLimit(requests=60, per_seconds=60, burst=10),
        max_concurrent_jobs=jobs,
        max_image_pixels=1 << 20,
        trial_days=trial_days,
    )


CATALOG = PlanCatalog(
    [
        plan("free", 0, images=10, jobs=1),
        plan("pro", 2000, images=100, jobs=4, trial_days=7),
        plan("team", 9900, images=1000, jobs=16),
    ],
    default_plan="free",
)


class RecordingPrincipals:
    """A PrincipalCache that caches nothing and remembers what it was told to invalidate."""

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


class NoJobs:
    async def enqueue(self, spec: Any) -> None:
        return None


class World:
    def __init__(self) -> None:
        self.clock = ManualClock(START)
        self.ids = SequentialIds()
        self.database = MemoryDatabase()
        self.principals = RecordingPrincipals()
        self.subscriptions = Subscriptions(
            database=self.database,
            catalog=CATALOG,
            principals=self.principals,
            ids=self.ids,
            clock=self.clock,
        )
        self.quotas = Quotas(database=self.database, catalog=CATALOG, ids=self.ids, clock=self.clock)
        self.sessions = MemorySessionStore()
        self.registration = Registration(
            database=self.database,
            sessions=self.sessions,
            hasher=FastPasswordHasher(),
            blocklist=frozenset(),
            jobs=NoJobs(),  # type: ignore[arg-type]
            ids=self.ids,
            clock=self.clock,
            policy=AccountPolicy(),
        )
        self.administration = Administration(
            database=self.database,
            sessions=self.sessions,
            ids=self.ids,
            clock=self.clock,
            subscriptions=self.subscriptions,
        )

    async def user(self, email: str = "ann@example.com", *, role: Role = Role.USER) -> Principal:
        user = await self.registration.register(
            email=email, password=PASSWORD, display_name=None, caller=Caller(), role=role
        )
        return self.principal(user)

    def principal(
        self,
        user: User,
        *,
        credential: CredentialKind = CredentialKind.SESSION,
        scopes: frozenset[str] = SESSION_SCOPES,
    ) -> Principal:
        return Principal(
            user=self.user_row(user.id), scopes=scopes, credential=credential, credential_id="c1"
        )

    def user_row(self, user_id: str) -> User:
        return next(u for u in self.database.committed_users() if u.id == user_id)

    def refreshed(self, principal: Principal) -> Principal:
        """The principal as the next request resolves it (its plan comes from `users.plan`)."""
        return msgspec.structs.replace(principal, user=self.user_row(principal.user_id))

    def events(self, type_: str) -> list[dict[str, Any]]:
        """The `data` of the committed events of `type_`, as JSON would carry it."""
        return [
            msgspec.json.decode(msgspec.json.encode(from_outbox(m).data))
            for m in self.database.committed_outbox()
            if m.type == type_
        ]

    def new_id(self) -> str:
        return self.ids.new_id()


@pytest.fixture
def world() -> World:
    return World()


def old_user(user_id: str) -> User:
    return User(
        id=user_id,
        email="old@example.com",
        email_normalized="old@example.com",
        display_name=None,
        role=Role.USER,
        status=UserStatus.ACTIVE,
        email_verified=True,
        password_hash="x",
        plan="free",
        created_at=START,
        updated_at=START,
    )


# --- subscriptions ----------------------------------------------------------------------------


async def test_registration_creates_the_free_subscription_with_the_user(world: World) -> None:
    ann = await world.user()
    [subscription] = world.database.committed_subscriptions()
    assert subscription.user_id == ann.user_id
    assert (subscription.plan, subscription.status) == ("free", SubscriptionStatus.ACTIVE)
    assert (subscription.current_period_start, subscription.current_period_end) == (
        START,
        first_period_end(START),
    )


async def test_a_user_from_before_subscriptions_gets_the_free_one_on_first_read(world: World) -> None:
    async with world.database.unit_of_work() as uow:
        await uow.users.add(old_user(world.new_id()))
        await uow.commit()
    old = world.principal(world.database.committed_users()[0])
    details = await world.subscriptions.current(old)
    assert details.subscription.plan == "free" and details.latest_charge is None
    assert [s.user_id for s in world.database.committed_subscriptions()] == [old.user_id]


async def test_an_upgrade_charges_what_the_preview_said_and_applies_at_once(world: World) -> None:
    ann = await world.user()
    world.clock.advance(9 * 86_400 + 3_600)
    preview = await world.subscriptions.preview(ann, "team")
    assert world.database.committed_charges() == [] and world.events(SUBSCRIPTION_UPDATED) == []

    details = await world.subscriptions.change_plan(ann, "team", Caller(correlation_id="r1"))

    [charge] = world.database.committed_charges()
    assert (charge.kind, charge.plan, charge.currency) == (ChargeKind.PRORATION, "team", "USD")
    expected = prorate_upgrade(0, 9900, START, first_period_end(START), world.clock.now())
    assert charge.amount_cents == preview.amount_due_cents == preview.proration_cents == expected
    assert preview.plan == "team" and preview.effective_at == world.clock.now()
    assert details.latest_charge == charge
    assert details.subscription.plan == "team" and world.user_row(ann.user_id).plan == "team"
    [event] = world.events(SUBSCRIPTION_UPDATED)
    assert event["plan"] == "team" and event["events"] == ["upgraded"]
    assert world.principals.invalidated == [user_tag(ann.user_id)]
    # The quota is lifted from the next request on (its principal reads users.plan).
    usage = await world.quotas.usage(world.refreshed(ann))
    assert usage.images_limit == 1000


async def test_plans_must_exist_and_only_people_change_them(world: World) -> None:
    ann = await world.user()
    with pytest.raises(DomainError) as unknown:
        await world.subscriptions.change_plan(ann, "platinum", Caller())
    assert unknown.value.code is ErrorCode.UNKNOWN_PLAN and unknown.value.code.status == 422
    assert [e.field for e in unknown.value.errors] == ["plan"]
    key = msgspec.structs.replace(ann, credential=CredentialKind.API_KEY)
    with pytest.raises(DomainError) as by_key:
        await world.subscriptions.change_plan(key, "team", Caller())
    assert by_key.value.code is ErrorCode.FORBIDDEN
    narrow = msgspec.structs.replace(key, scopes=frozenset({Scope.GENERATIONS_READ.value}))
    with pytest.raises(DomainError) as scope:
        await world.subscriptions.current(narrow)
    assert scope.value.code is ErrorCode.INSUFFICIENT_SCOPE
    assert (await world.subscriptions.current(key)).subscription.plan == "free"  # account:read is enough


async def test_a_downgrade_applies_at_the_roll_over_with_a_renewal(world: World) -> None:
    ann = await world.user()
    await world.subscriptions.admin_set_plan(
        await world.user("root@example.com", role=Role.ADMIN), ann.user_id, "team", Caller()
    )
    world.principals.invalidated.clear()
    details = await world.subscriptions.change_plan(world.refreshed(ann), "pro", Caller())
    assert details.subscription.scheduled_plan == "pro" and details.subscription.plan == "team"
    assert world.principals.invalidated == [
        user_tag(ann.user_id)
    ]  # a status change too: same cached principal
    world.clock.advance((first_period_end(START) - START).total_seconds())

    assert await world.subscriptions.roll_over() == 2  # ann's and root's periods ended

    rows = {s.user_id: s for s in world.database.committed_subscriptions()}
    assert rows[ann.user_id].plan == "pro" and rows[ann.user_id].scheduled_plan is None
    assert world.user_row(ann.user_id).plan == "pro"
    renewals = [c for c in world.database.committed_charges() if c.kind is ChargeKind.RENEWAL]
    assert [(c.user_id, c.plan, c.amount_cents) for c in renewals] == [(ann.user_id, "pro", 2000)]
    assert user_tag(ann.user_id) in world.principals.invalidated
    assert await world.subscriptions.roll_over() == 0  # nothing is due twice


async def test_cancel_keeps_the_plan_until_the_period_end(world: World) -> None:
    ann = await world.user()
    with pytest.raises(DomainError) as free:
        await world.subscriptions.cancel(ann, Caller())
    assert free.value.code is ErrorCode.INVALID_STATE
    await world.subscriptions.change_plan(ann, "team", Caller())
    canceled = await world.subscriptions.cancel(world.refreshed(ann), Caller())
    assert canceled.subscription.cancel_at_period_end and canceled.subscription.plan == "team"
    world.clock.advance((first_period_end(START) - START).total_seconds() + 1)
    await world.subscriptions.roll_over()
    [row] = world.database.committed_subscriptions()
    assert (row.plan, row.status) == ("free", SubscriptionStatus.CANCELED)
    assert world.user_row(ann.user_id).plan == "free"
    assert [c.kind for c in world.database.committed_charges()] == [ChargeKind.PRORATION]  # no renewal
    assert world.events(SUBSCRIPTION_UPDATED)[-1]["events"] == ["cancellation_applied"]


async def test_a_trial_is_free_then_converts(world: World) -> None:
    ann = await world.user()
    preview = await world.subscriptions.preview(ann, "pro")
    assert preview.amount_due_cents == 0
    trial = (await world.subscriptions.change_plan(ann, "pro", Caller())).subscription
    assert trial.status is SubscriptionStatus.TRIALING and world.database.committed_charges() == []
    assert world.user_row(ann.user_id).plan == "pro"
    world.clock.advance(7 * 86_400)
    assert await world.subscriptions.roll_over() == 1
    [charge] = world.database.committed_charges()
    assert (charge.kind, charge.amount_cents, charge.period_start) == (
        ChargeKind.RENEWAL,
        2000,
        trial.trial_end,
    )
    [row] = world.database.committed_subscriptions()
    assert row.status is SubscriptionStatus.ACTIVE


async def test_two_roll_overs_at_once_process_each_subscription_once(world: World) -> None:
    people = [await world.user(f"u{n}@example.com") for n in range(7)]
    admin = await world.user("root@example.com", role=Role.ADMIN)
    for person in people:
        await world.subscriptions.admin_set_plan(admin, person.user_id, "pro", Caller())
    world.clock.advance(40 * 86_400)  # one period ended for everyone
    counts = await asyncio.gather(
        world.subscriptions.roll_over(batch=2), world.subscriptions.roll_over(batch=3)
    )
    assert sum(counts) == len(people) + 1
    renewals = [c for c in world.database.committed_charges() if c.kind is ChargeKind.RENEWAL]
    assert sorted(c.user_id for c in renewals) == sorted(p.user_id for p in people)  # once each
    assert all(s.current_period_end > world.clock.now() for s in world.database.committed_subscriptions())


async def test_admins_set_plans_without_charges_and_it_is_audited(world: World) -> None:
    ann = await world.user()
    admin = await world.user("root@example.com", role=Role.ADMIN)
    with pytest.raises(DomainError) as not_admin:
        await world.subscriptions.admin_set_plan(ann, ann.user_id, "team", Caller())
    assert not_admin.value.code is ErrorCode.FORBIDDEN
    with pytest.raises(DomainError) as missing:
        await world.subscriptions.admin_set_plan(admin, world.new_id(), "team", Caller())
    assert missing.value.code is ErrorCode.NOT_FOUND

    details = await world.subscriptions.admin_set_plan(admin, ann.user_id, "team", Caller(ip="10.0.0.1"))

    assert details.subscription.plan == "team" and world.database.committed_charges() == []
    [record] = [r for r in world.database.committed_audit() if r.action is AuditAction.PLAN_CHANGED]
    assert (record.actor_id, record.target_id, record.details) == (
        admin.user_id,
        ann.user_id,
        {"before": "free", "after": "team"},
    )
    assert world.events(SUBSCRIPTION_UPDATED)[-1]["events"] == ["admin_plan_set"]


async def test_the_command_line_sets_plans_by_email(world: World) -> None:
    ann = await world.user()
    await world.subscriptions.set_plan_by_email(" ANN@example.com ", "pro", Caller())
    assert world.user_row(ann.user_id).plan == "pro"
    with pytest.raises(DomainError) as missing:
        await world.subscriptions.set_plan_by_email("bob@example.com", "pro", Caller())
    assert missing.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(DomainError) as unknown:
        await world.subscriptions.set_plan_by_email("ann@example.com", "gold", Caller())
    assert unknown.value.code is ErrorCode.UNKNOWN_PLAN


async def test_an_admin_patch_changes_role_and_plan_together(world: World) -> None:
    ann = await world.user()
    admin = await world.user("root@example.com", role=Role.ADMIN)
    updated = await world.administration.change_user(
        admin, ann.user_id, UserChanges(role=Role.ADMIN, plan="team"), Caller()
    )
    assert (updated.role, updated.plan) == (Role.ADMIN, "team")
    assert (world.user_row(ann.user_id).role, world.user_row(ann.user_id).plan) == (Role.ADMIN, "team")
    assert user_tag(ann.user_id) in world.principals.invalidated
    with pytest.raises(DomainError) as unknown:  # nothing of a refused patch is kept
        await world.administration.change_user(
            admin, ann.user_id, UserChanges(role=Role.USER, plan="gold"), Caller()
        )
    assert unknown.value.code is ErrorCode.UNKNOWN_PLAN
    assert world.user_row(ann.user_id).role is Role.ADMIN
    only_plan = await world.administration.change_user(admin, ann.user_id, UserChanges(plan="pro"), Caller())
    assert only_plan.plan == "pro" and only_plan.role is Role.ADMIN


# --- quotas -----------------------------------------------------------------------------------


def test_thresholds_are_integer_percentages_of_the_quota() -> None:
    assert thresholds_reached(7, 10) == ()
    assert thresholds_reached(8, 10) == (80,)
    assert thresholds_reached(10, 10) == (80, 100)
    assert thresholds_reached(4, 5) == (80,)
    assert thresholds_reached(799, 1000) == ()
    assert thresholds_reached(5, 0) == ()


async def test_the_quota_holds_and_each_threshold_is_announced_once_a_period(world: World) -> None:
    ann = await world.user()  # free: 10 images, 1 at once
    ids = [world.new_id() for _ in range(12)]
    for n in range(8):
        await world.quotas.reserve(ann.user_id, ann.plan, ids[n], 1)
        await world.quotas.settle(ids[n])
    assert [e["percent"] for e in world.events(QUOTA_THRESHOLD_REACHED)] == [80]
    usage = await world.quotas.reserve(ann.user_id, ann.plan, ids[8], 2)
    assert (usage.images_used, usage.images_remaining) == (10, 0)
    with pytest.raises(DomainError) as running:
        await world.quotas.reserve(ann.user_id, ann.plan, ids[9], 1)
    assert running.value.code is ErrorCode.QUOTA_EXCEEDED and running.value.code.status == 402
    assert await world.quotas.refund(ids[8]) is True
    assert await world.quotas.refund(ids[8]) is False  # once
    assert await world.quotas.settle(ids[8]) is False
    await world.quotas.reserve(ann.user_id, ann.plan, ids[10], 2)  # back to 100 %: no new event
    assert [e["percent"] for e in world.events(QUOTA_THRESHOLD_REACHED)] == [80, 100]
    event = world.events(QUOTA_THRESHOLD_REACHED)[-1]
    assert (event["images_used"], event["images_limit"]) == (10, 10)
    assert datetime.fromisoformat(event["period_start"]) == START


async def test_a_reservation_is_one_to_a_hundred_images(world: World) -> None:
    ann = await world.user()
    for images in (0, -1, 101):
        with pytest.raises(DomainError) as invalid:
            await world.quotas.reserve(ann.user_id, ann.plan, world.new_id(), images)
        assert invalid.value.code is ErrorCode.VALIDATION_FAILED and invalid.value.errors[0].field == "n"
    assert world.database.committed_usage() == []


async def test_concurrent_generations_are_capped_by_the_plan(world: World) -> None:
    ann = await world.user()  # free: one at a time
    first, second = world.new_id(), world.new_id()
    await world.quotas.reserve(ann.user_id, ann.plan, first, 1)
    with pytest.raises(DomainError) as busy:
        await world.quotas.reserve(ann.user_id, ann.plan, second, 1)
    assert busy.value.code is ErrorCode.CONCURRENCY_LIMIT and busy.value.code.status == 429
    await world.quotas.settle(first)
    await world.quotas.reserve(ann.user_id, ann.plan, second, 1)
    again = await world.quotas.reserve(ann.user_id, ann.plan, second, 1)  # the same id: nothing more
    assert again.images_used == 2


async def test_an_upgrade_lifts_an_exhausted_quota_at_once(world: World) -> None:
    ann = await world.user()
    for _ in range(5):
        reservation = world.new_id()
        await world.quotas.reserve(ann.user_id, ann.plan, reservation, 2)
        await world.quotas.settle(reservation)
    with pytest.raises(DomainError):
        await world.quotas.reserve(ann.user_id, ann.plan, world.new_id(), 1)
    await world.subscriptions.change_plan(ann, "team", Caller())
    ann = world.refreshed(ann)
    usage = await world.quotas.reserve(ann.user_id, ann.plan, world.new_id(), 1)
    assert (usage.images_used, usage.images_limit) == (11, 1000)
    assert usage == msgspec.structs.replace(await world.quotas.usage(ann), images_used=11)


async def test_a_new_period_starts_from_zero_even_before_the_roll_over_runs(world: World) -> None:
    ann = await world.user()
    reservation = world.new_id()
    await world.quotas.reserve(ann.user_id, ann.plan, reservation, 9)
    await world.quotas.settle(reservation)
    world.clock.advance((first_period_end(START) - START).total_seconds() + 60)  # no roll-over yet
    usage = await world.quotas.usage(ann)
    assert (usage.period_start, usage.images_used, usage.images_remaining) == (first_period_end(START), 0, 10)
    after = await world.quotas.reserve(ann.user_id, ann.plan, world.new_id(), 9)
    assert after.period_start == first_period_end(START) and after.images_used == 9
    assert [e["percent"] for e in world.events(QUOTA_THRESHOLD_REACHED)] == [80, 80]  # once per period
    await world.subscriptions.roll_over()
    [row] = world.database.committed_subscriptions()
    assert row.current_period_start == usage.period_start  # the roll-over lands on the same period
    assert timedelta(0) < row.current_period_end - row.current_period_start
