"""What users, administrators and the roll-over do with subscriptions.

Each use case is one unit of work: lock the subscription, decide with the pure rules of
`core.billing.subscriptions`, record the charges, the subscription, the user's plan (the principal
reads `users.plan`) and a `subscription.updated` outbox event together, commit, then drop the
user's cached principals in every process so a new plan's limits apply from the next request.
Locks are always taken subscription first, then user, so two use cases never deadlock.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime

import msgspec

from core.accounts import audit_trail
from core.accounts.api_keys import Scope
from core.accounts.audit import AuditAction
from core.accounts.context import Caller
from core.accounts.principal import Principal
from core.accounts.users import normalize_email
from core.billing.charges import Charge
from core.billing.plans import Plan, PlanCatalog
from core.billing.subscriptions import (
    Subscription,
    SubscriptionChange,
    change_plan,
    request_cancel,
    roll_over,
    set_plan_by_admin,
    start_subscription,
)
from core.cache_tags import user_tag
from core.errors import DomainError, ErrorCode, FieldError
from core.events import SubscriptionData, SubscriptionUpdated, to_outbox
from core.identifiers import is_id
from core.ports import Clock, Database, Ids, PrincipalCache, UnitOfWork

_Decision = Callable[[Subscription, datetime], SubscriptionChange]
ROLL_OVER_BATCH = 100


class SubscriptionDetails(msgspec.Struct, frozen=True, kw_only=True):
    subscription: Subscription
    latest_charge: Charge | None


class PlanChangePreview(msgspec.Struct, frozen=True, kw_only=True):
    """What `change_plan` would do now: the plan after it, what it would charge (of which the
    proration of an upgrade), and when the plan would change."""

    plan: str
    amount_due_cents: int
    proration_cents: int
    effective_at: datetime


def known_plan(catalog: PlanCatalog, code: str, *, field: str = "plan") -> Plan:
    """The catalog's plan `code`; `unknown_plan` (422) naming the field otherwise."""
    found = catalog.get(code) if isinstance(code, str) else None
    if found is None:
        raise DomainError(
            ErrorCode.UNKNOWN_PLAN,
            f"No plan {code!r}; one of {', '.join(plan.code for plan in catalog)}",
            errors=[FieldError(field, "Not a plan of the catalog", "unknown_plan")],
        )
    return found


async def ensure_subscription(
    uow: UnitOfWork, user_id: str, catalog: PlanCatalog, now: datetime
) -> Subscription:
    """The user's subscription, row-locked; a user without one (created before subscriptions
    existed) gets the free one now. `not_found` when there is no such user."""
    subscription = await uow.subscriptions.get_for_update(user_id)
    if subscription is not None:
        return subscription
    user = await uow.users.get_for_update(user_id)
    if user is None:
        raise DomainError(ErrorCode.NOT_FOUND, "No such user")
    subscription = start_subscription(user.id, catalog.effective(user.plan).code, now)
    await uow.subscriptions.add(subscription)
    return subscription


def subscription_data(subscription: Subscription, events: Iterable[str]) -> SubscriptionData:
    """The `subscription.updated` event's data (also what webhooks deliver)."""
    return SubscriptionData(
        plan=subscription.plan,
        status=subscription.status.value,
        current_period_start=subscription.current_period_start,
        current_period_end=subscription.current_period_end,
        cancel_at_period_end=subscription.cancel_at_period_end,
        scheduled_plan=subscription.scheduled_plan,
        trial_end=subscription.trial_end,
        events=tuple(events),
    )


class Subscriptions:
    def __init__(
        self, *, database: Database, catalog: PlanCatalog, principals: PrincipalCache, ids: Ids, clock: Clock
    ) -> None:
        self._database = database
        self._catalog = catalog
        self._principals = principals  # its invalidations reach every process
        self._ids = ids
        self._clock = clock

    async def current(self, principal: Principal) -> SubscriptionDetails:
        """The caller's subscription as of now (as the roll-over leaves it, should it run late) and
        their latest charge. A user without a subscription gets the free one."""
        principal.require_scope(Scope.ACCOUNT_READ)
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            subscription = await uow.subscriptions.get(principal.user_id)
            if subscription is None:
                subscription = await ensure_subscription(uow, principal.user_id, self._catalog, now)
            charges = await uow.charges.list_for_user(principal.user_id, limit=1)
            await uow.commit()
        return SubscriptionDetails(
            subscription=roll_over(subscription, self._catalog, now).after,
            latest_charge=charges[0] if charges else None,
        )

    async def preview(self, principal: Principal, plan_code: str) -> PlanChangePreview:
        """What asking for `plan_code` would charge and when it would apply; nothing changes."""
        principal.require_scope(Scope.ACCOUNT_READ)
        target = known_plan(self._catalog, plan_code)
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            subscription = await uow.subscriptions.get(principal.user_id)
        if subscription is None:
            subscription = start_subscription(principal.user_id, self._catalog.default.code, now)
        # The same decision change_plan makes, on the subscription as the roll-over leaves it now.
        change = self._decide_change(subscription, target, now)
        return PlanChangePreview(
            plan=change.after.plan,
            amount_due_cents=change.amount_due_cents,
            proration_cents=change.proration_cents,
            effective_at=change.effective_at,
        )

    async def change_plan(self, principal: Principal, plan_code: str, caller: Caller) -> SubscriptionDetails:
        """Upgrade now (prorated charge, or a first trial), downgrade at the period's end, or resume
        the current plan. People only: an API key cannot spend its owner's money."""
        principal.require_session()
        target = known_plan(self._catalog, plan_code)
        return await self._apply(
            principal.user_id,
            lambda subscription, now: self._decide_change(subscription, target, now),
            caller,
        )

    async def cancel(self, principal: Principal, caller: Caller) -> SubscriptionDetails:
        """Cancel at the period's end; `invalid_state` on the free plan."""
        principal.require_session()
        return await self._apply(
            principal.user_id,
            lambda subscription, now: _then(
                roll_over(subscription, self._catalog, now),
                lambda rolled: request_cancel(rolled, self._catalog.effective(rolled.plan), now),
            ),
            caller,
        )

    async def admin_set_plan(
        self, admin: Principal, user_id: str, plan_code: str, caller: Caller
    ) -> SubscriptionDetails:
        """An administrator puts a user on a plan at once, without a charge (audited)."""
        admin.require_session()
        admin.require_admin()
        if not is_id(user_id):
            raise DomainError(ErrorCode.NOT_FOUND, "No such user")
        return await self.set_plan(user_id, plan_code, caller, actor_id=admin.user_id)

    async def set_plan_by_email(self, email: str, plan_code: str, caller: Caller) -> SubscriptionDetails:
        """`pictor users set-plan`: an operator's admin_set_plan, by address."""
        known_plan(self._catalog, plan_code)
        address = normalize_email(email)
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get_by_email(address)
        if user is None:
            raise DomainError(ErrorCode.NOT_FOUND, f"No user with the address {email.strip()}")
        return await self.set_plan(user.id, plan_code, caller, actor_id=None)

    async def set_plan(
        self, user_id: str, plan_code: str, caller: Caller, *, actor_id: str | None
    ) -> SubscriptionDetails:
        """The administrative plan change behind `admin_set_plan` and `set_plan_by_email`, for
        callers that checked who may do it (`actor_id` None: an operator at the command line)."""
        async with self._database.unit_of_work() as uow:
            change = await self.set_plan_within(uow, user_id, plan_code, caller, actor_id=actor_id)
            charges = await uow.charges.list_for_user(user_id, limit=1)
            await uow.commit()
        if change.changed:
            await self._invalidate([user_id])
        return SubscriptionDetails(subscription=change.after, latest_charge=charges[0] if charges else None)

    async def set_plan_within(
        self, uow: UnitOfWork, user_id: str, plan_code: str, caller: Caller, *, actor_id: str | None
    ) -> SubscriptionChange:
        """`set_plan` inside the caller's unit of work (an admin's PATCH changes role, status and
        plan together). Locks the subscription, then the user, and updates `users.plan`; audits
        `plan_changed`. The caller commits and then calls `invalidate(user_id)`."""
        target = known_plan(self._catalog, plan_code)
        now = self._clock.now()
        subscription = await ensure_subscription(uow, user_id, self._catalog, now)
        change = _then(
            roll_over(subscription, self._catalog, now), lambda rolled: set_plan_by_admin(rolled, target, now)
        )
        await self._persist(uow, change, caller)
        if change.before.plan != change.after.plan:
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                AuditAction.PLAN_CHANGED,
                actor_id=actor_id,
                target_type="user",
                target_id=user_id,
                before=change.before.plan,
                after=change.after.plan,
            )
        return change

    async def invalidate(self, user_id: str) -> None:
        """Drop the user's cached principals in every process (after a commit that changed them)."""
        await self._invalidate([user_id])

    async def roll_over(
        self,
        now: datetime | None = None,
        *,
        batch: int = ROLL_OVER_BATCH,
        max_batches: int = 50,
        between_batches: Callable[[], Awaitable[None]] | None = None,
    ) -> int:
        """Close every period that has ended (maintenance cron): renewals, scheduled downgrades,
        cancellations, trials. Batches are claimed with skip-locked row locks, and each leaves its
        subscriptions in a period that contains `now`, so two workers running this at once process
        each subscription exactly once. Bounded by `max_batches` (the next run takes the rest);
        `between_batches` lets a job prove it is alive. Returns how many subscriptions rolled."""
        at = now or self._clock.now()
        rolled = 0
        for _ in range(max_batches):
            changed_users: list[str] = []
            async with self._database.unit_of_work() as uow:
                due = await uow.subscriptions.claim_due(at, batch)
                for subscription in due:
                    change = roll_over(subscription, self._catalog, at)
                    if await self._persist(uow, change, Caller(correlation_id="cron:roll_over")):
                        changed_users.append(subscription.user_id)
                await uow.commit()
            await self._invalidate(changed_users)
            rolled += len(due)
            if between_batches is not None:
                await between_batches()
            if len(due) < batch:
                break
        return rolled

    # --- internals ------------------------------------------------------------------------

    def _decide_change(self, subscription: Subscription, target: Plan, now: datetime) -> SubscriptionChange:
        return _then(
            roll_over(subscription, self._catalog, now),
            lambda rolled: change_plan(rolled, self._catalog.effective(rolled.plan), target, now),
        )

    async def _apply(self, user_id: str, decide: _Decision, caller: Caller) -> SubscriptionDetails:
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            subscription = await ensure_subscription(uow, user_id, self._catalog, now)
            change = decide(subscription, now)
            changed = await self._persist(uow, change, caller)
            charges = await uow.charges.list_for_user(user_id, limit=1)
            await uow.commit()
        if changed:
            await self._invalidate([user_id])
        return SubscriptionDetails(subscription=change.after, latest_charge=charges[0] if charges else None)

    async def _persist(self, uow: UnitOfWork, change: SubscriptionChange, caller: Caller) -> bool:
        """Write a decision: its charges, the subscription, the user's plan and the event. True
        when the subscription changed."""
        if not change.changed:
            return False
        after = change.after
        for due in change.charges:
            await uow.charges.add(
                Charge(
                    id=self._ids.new_id(),
                    user_id=after.user_id,
                    plan=due.plan,
                    kind=due.kind,
                    amount_cents=due.amount_cents,
                    currency=due.currency,
                    period_start=due.period_start,
                    period_end=due.period_end,
                    created_at=self._clock.now(),
                )
            )
        await uow.subscriptions.update(after)
        if after.plan != change.before.plan:
            user = await uow.users.get_for_update(after.user_id)
            if user is not None and user.plan != after.plan:
                await uow.users.update(
                    msgspec.structs.replace(user, plan=after.plan, updated_at=self._clock.now())
                )
        event = SubscriptionUpdated(
            id=self._ids.new_id(),
            occurred_at=self._clock.now(),
            user_id=after.user_id,
            correlation_id=caller.correlation_id,
            data=subscription_data(after, (event.value for event in change.events)),
        )
        await uow.outbox.add(to_outbox(event))
        return True

    async def _invalidate(self, user_ids: list[str]) -> None:
        if user_ids:
            await self._principals.invalidate_tags(*(user_tag(user_id) for user_id in user_ids))


def _then(
    first: SubscriptionChange, decide_next: Callable[[Subscription], SubscriptionChange]
) -> SubscriptionChange:
    """`first`, then the decision `decide_next` makes on its result, as one change: a user acting
    on a subscription whose period ended before the roll-over ran acts on the rolled one."""
    second = decide_next(first.after)
    return SubscriptionChange(
        before=first.before,
        after=second.after,
        events=first.events + second.events,
        charges=first.charges + second.charges,
        effective_at=second.effective_at,
    )
