"""A user's subscription: which plan, in which state, for which billing period.

Every user has exactly one subscription (a new user starts on the catalog's free default plan).
The state machine and period rules below are pure: a subscription, the plans involved and `now` go
in; the new subscription, the named events that moved it and the charges it owes come out. Use
cases apply them inside a unit of work.

States and what moves them (`TRANSITIONS` is the whole table; anything else is `invalid_state`):

- `active`: on a plan, paid up. Upgrades apply at once with a proration charge; downgrades and
  cancellations wait for the period's end (`scheduled_plan`, `cancel_at_period_end`).
- `trialing`: a first paid plan with `trial_days`, free until `trial_end`; then it converts
  (a renewal charge, monthly periods from the trial's end) unless canceled (→ `expired`).
- `past_due`: a renewal payment failed; the plan is kept for `GRACE_PERIOD` (the period then is
  the grace period), a recovered payment makes it `active`, otherwise it `expired`s to the default
  plan. There is no payment provider yet: renewals always record their charge, and `past_due` is
  here so one can plug in.
- `canceled` / `expired`: back on the default plan after a cancellation / a trial or grace that
  ran out; an upgrade makes them `active` (or `trialing`) again.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum

import msgspec

from core.billing.charges import ChargeKind
from core.billing.periods import first_period_end, following_period
from core.billing.plans import Plan, PlanCatalog
from core.billing.proration import prorate_upgrade
from core.errors import DomainError, ErrorCode

GRACE_PERIOD = timedelta(days=7)  # how long a past_due subscription keeps its plan


class SubscriptionStatus(StrEnum):
    TRIALING = "trialing"
    ACTIVE = "active"
    PAST_DUE = "past_due"
    CANCELED = "canceled"
    EXPIRED = "expired"


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    plan: str
    status: SubscriptionStatus
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool = False
    scheduled_plan: str | None = None  # a downgrade waiting for the period's end
    trial_end: datetime | None = None
    created_at: datetime
    updated_at: datetime


class SubscriptionEvent(StrEnum):
    TRIAL_STARTED = "trial_started"
    TRIAL_CONVERTED = "trial_converted"
    TRIAL_EXPIRED = "trial_expired"
    UPGRADED = "upgraded"
    DOWNGRADE_SCHEDULED = "downgrade_scheduled"
    DOWNGRADE_APPLIED = "downgrade_applied"
    CANCEL_REQUESTED = "cancel_requested"
    CANCELLATION_APPLIED = "cancellation_applied"
    RESUMED = "resumed"
    PERIOD_RENEWED = "period_renewed"
    PAYMENT_FAILED = "payment_failed"
    PAYMENT_RECOVERED = "payment_recovered"
    GRACE_EXPIRED = "grace_expired"
    ADMIN_PLAN_SET = "admin_plan_set"


_T = SubscriptionStatus.TRIALING
_A = SubscriptionStatus.ACTIVE
_P = SubscriptionStatus.PAST_DUE
_C = SubscriptionStatus.CANCELED
_E = SubscriptionStatus.EXPIRED
_Ev = SubscriptionEvent

# event → {status before: status after}. A pair not listed is an illegal transition.
TRANSITIONS: dict[SubscriptionEvent, dict[SubscriptionStatus, SubscriptionStatus]] = {
    _Ev.TRIAL_STARTED: {_A: _T, _C: _T, _E: _T},
    _Ev.TRIAL_CONVERTED: {_T: _A},
    _Ev.TRIAL_EXPIRED: {_T: _E},
    # past_due cannot change plans until the failed payment is settled (or the grace runs out).
    _Ev.UPGRADED: {_A: _A, _T: _A, _C: _A, _E: _A},
    _Ev.DOWNGRADE_SCHEDULED: {_A: _A, _T: _T, _C: _C, _E: _E},
    _Ev.DOWNGRADE_APPLIED: {_A: _A, _T: _A, _C: _C, _E: _E},
    _Ev.CANCEL_REQUESTED: {_A: _A, _T: _T, _P: _P},
    _Ev.CANCELLATION_APPLIED: {_A: _C},
    _Ev.RESUMED: {_A: _A, _T: _T, _P: _P},
    _Ev.PERIOD_RENEWED: {_A: _A, _C: _C, _E: _E},
    _Ev.PAYMENT_FAILED: {_A: _P},
    _Ev.PAYMENT_RECOVERED: {_P: _A},
    _Ev.GRACE_EXPIRED: {_P: _E},
    _Ev.ADMIN_PLAN_SET: dict.fromkeys(SubscriptionStatus, _A),
}


def next_status(status: SubscriptionStatus, event: SubscriptionEvent) -> SubscriptionStatus:
    """The status after `event`; DomainError(invalid_state) when the table does not allow it."""
    after = TRANSITIONS[event].get(status)
    if after is None:
        raise DomainError(
            ErrorCode.INVALID_STATE,
            f"A {status.value} subscription cannot do that ({event.value})",
            status=status.value,
            event=event.value,
        )
    return after


class ChargeDue(msgspec.Struct, frozen=True, kw_only=True):
    """A charge a change owes; the use case records it as a `Charge` (with an id and a time)."""

    kind: ChargeKind
    plan: str
    amount_cents: int
    currency: str
    period_start: datetime
    period_end: datetime


class SubscriptionChange(msgspec.Struct, frozen=True, kw_only=True):
    """A decision: the subscription before and after, why (events, in order), and what it costs."""

    before: Subscription
    after: Subscription
    events: tuple[SubscriptionEvent, ...] = ()
    charges: tuple[ChargeDue, ...] = ()
    effective_at: datetime

    @property
    def changed(self) -> bool:
        return self.after != self.before

    @property
    def amount_due_cents(self) -> int:
        return sum(charge.amount_cents for charge in self.charges)

    @property
    def proration_cents(self) -> int:
        return sum(c.amount_cents for c in self.charges if c.kind is ChargeKind.PRORATION)


def start_subscription(user_id: str, plan_code: str, now: datetime) -> Subscription:
    """A new user's subscription: `plan_code` (the default, free plan), active, one month from now."""
    return Subscription(
        user_id=user_id,
        plan=plan_code,
        status=SubscriptionStatus.ACTIVE,
        current_period_start=now,
        current_period_end=first_period_end(now),
        created_at=now,
        updated_at=now,
    )


def _step(
    subscription: Subscription, event: SubscriptionEvent, now: datetime, **fields: object
) -> Subscription:
    return msgspec.structs.replace(
        subscription, status=next_status(subscription.status, event), updated_at=now, **fields
    )


def _renewal(plan: Plan, period_start: datetime, period_end: datetime) -> tuple[ChargeDue, ...]:
    if plan.is_free:
        return ()
    return (
        ChargeDue(
            kind=ChargeKind.RENEWAL,
            plan=plan.code,
            amount_cents=plan.monthly_price_cents,
            currency=plan.currency,
            period_start=period_start,
            period_end=period_end,
        ),
    )


def _unchanged(subscription: Subscription, now: datetime) -> SubscriptionChange:
    return SubscriptionChange(before=subscription, after=subscription, effective_at=now)


def change_plan(subscription: Subscription, current: Plan, target: Plan, now: datetime) -> SubscriptionChange:
    """The user asks for `target` while on `current` (the effective plan of `subscription.plan`).

    Strictly dearer: an upgrade now, owing the prorated price difference for the rest of the
    period, or a trial when moving up from a free plan to a plan with trial days for the first
    time; from a trial, the upgrade starts a paid month at once. Cheaper or equal: a downgrade
    scheduled for the period's end. The same plan: resumes what a cancellation or a downgrade
    would have ended, or changes nothing.
    """
    period = (subscription.current_period_start, subscription.current_period_end)
    if target.code == subscription.plan:
        if not subscription.cancel_at_period_end and subscription.scheduled_plan is None:
            return _unchanged(subscription, now)
        after = _step(subscription, _Ev.RESUMED, now, cancel_at_period_end=False, scheduled_plan=None)
        return SubscriptionChange(before=subscription, after=after, events=(_Ev.RESUMED,), effective_at=now)
    if target.monthly_price_cents <= current.monthly_price_cents:
        after = _step(
            subscription, _Ev.DOWNGRADE_SCHEDULED, now, scheduled_plan=target.code, cancel_at_period_end=False
        )
        return SubscriptionChange(
            before=subscription, after=after, events=(_Ev.DOWNGRADE_SCHEDULED,), effective_at=period[1]
        )
    cleared: dict[str, object] = {"plan": target.code, "cancel_at_period_end": False, "scheduled_plan": None}
    if target.trial_days > 0 and current.is_free and subscription.trial_end is None:
        trial_end = now + timedelta(days=target.trial_days)
        after = _step(
            subscription,
            _Ev.TRIAL_STARTED,
            now,
            current_period_start=now,
            current_period_end=trial_end,
            trial_end=trial_end,
            **cleared,
        )
        return SubscriptionChange(
            before=subscription, after=after, events=(_Ev.TRIAL_STARTED,), effective_at=now
        )
    if subscription.status is SubscriptionStatus.TRIALING:
        # Nothing was paid for the trial: the upgrade buys a first month of the new plan now.
        end = first_period_end(now)
        after = _step(
            subscription, _Ev.UPGRADED, now, current_period_start=now, current_period_end=end, **cleared
        )
        return SubscriptionChange(
            before=subscription,
            after=after,
            events=(_Ev.UPGRADED,),
            charges=_renewal(target, now, end),
            effective_at=now,
        )
    after = _step(subscription, _Ev.UPGRADED, now, **cleared)
    amount = prorate_upgrade(
        current.monthly_price_cents, target.monthly_price_cents, period[0], period[1], now
    )
    proration = ChargeDue(
        kind=ChargeKind.PRORATION,
        plan=target.code,
        amount_cents=amount,
        currency=target.currency,
        period_start=period[0],
        period_end=period[1],
    )
    return SubscriptionChange(
        before=subscription, after=after, events=(_Ev.UPGRADED,), charges=(proration,), effective_at=now
    )


def request_cancel(subscription: Subscription, current: Plan, now: datetime) -> SubscriptionChange:
    """Cancel at the period's end (the user keeps the plan until then); again: nothing changes."""
    if current.is_free:
        raise DomainError(ErrorCode.INVALID_STATE, "The free plan has nothing to cancel")
    if subscription.cancel_at_period_end:
        return _unchanged(subscription, now)
    after = _step(subscription, _Ev.CANCEL_REQUESTED, now, cancel_at_period_end=True, scheduled_plan=None)
    return SubscriptionChange(
        before=subscription,
        after=after,
        events=(_Ev.CANCEL_REQUESTED,),
        effective_at=subscription.current_period_end,
    )


def set_plan_by_admin(subscription: Subscription, target: Plan, now: datetime) -> SubscriptionChange:
    """An administrator's decision: `target` at once, active, no charge, nothing scheduled."""
    if (
        subscription.plan == target.code
        and subscription.status is SubscriptionStatus.ACTIVE
        and not subscription.cancel_at_period_end
        and subscription.scheduled_plan is None
    ):
        return _unchanged(subscription, now)
    after = _step(
        subscription,
        _Ev.ADMIN_PLAN_SET,
        now,
        plan=target.code,
        cancel_at_period_end=False,
        scheduled_plan=None,
    )
    return SubscriptionChange(
        before=subscription, after=after, events=(_Ev.ADMIN_PLAN_SET,), effective_at=now
    )


def fail_payment(subscription: Subscription, now: datetime) -> SubscriptionChange:
    """A renewal payment failed (a payment provider says so): the plan is kept through a grace
    period, which becomes the current period."""
    after = _step(
        subscription, _Ev.PAYMENT_FAILED, now, current_period_start=now, current_period_end=now + GRACE_PERIOD
    )
    return SubscriptionChange(
        before=subscription, after=after, events=(_Ev.PAYMENT_FAILED,), effective_at=now
    )


def recover_payment(subscription: Subscription, plan: Plan, now: datetime) -> SubscriptionChange:
    """The failed payment went through within the grace: a full month from the grace's start (its
    usage carries on), charged as a renewal."""
    start = subscription.current_period_start
    end = first_period_end(start)
    after = _step(subscription, _Ev.PAYMENT_RECOVERED, now, current_period_end=end)
    return SubscriptionChange(
        before=subscription,
        after=after,
        events=(_Ev.PAYMENT_RECOVERED,),
        charges=_renewal(plan, start, end),
        effective_at=now,
    )


def is_due(subscription: Subscription, now: datetime) -> bool:
    """Whether the period (or trial) has ended: the roll-over has work to do."""
    return subscription.current_period_end <= now


def roll_over(subscription: Subscription, catalog: PlanCatalog, now: datetime) -> SubscriptionChange:
    """Close every period that has ended by `now`, oldest first.

    The first closing applies what waited for it (a cancellation, a scheduled downgrade, a trial's
    conversion or expiry, a grace that ran out); each closed period opens the next one from the old
    end, with a renewal charge when its plan is paid. When several periods were missed, it rolls
    until the current one contains `now`: one renewal charge per period.
    """
    current = subscription
    events: list[SubscriptionEvent] = []
    charges: list[ChargeDue] = []
    while is_due(current, now):
        current, event, plan = _close_period(current, catalog, now)
        events.append(event)
        charges.extend(_renewal(plan, current.current_period_start, current.current_period_end))
    return SubscriptionChange(
        before=subscription,
        after=current,
        events=tuple(events),
        charges=tuple(charges),
        effective_at=subscription.current_period_end,
    )


def _next_period(subscription: Subscription) -> tuple[datetime, datetime]:
    start, end = subscription.current_period_start, subscription.current_period_end
    if subscription.status is SubscriptionStatus.TRIALING:
        # A trial is no monthly period: the months that follow are anchored on its end.
        return end, first_period_end(end)
    return following_period(start, end)


def current_period(subscription: Subscription, now: datetime) -> tuple[datetime, datetime]:
    """The period that contains `now`, as the roll-over will make it: usage is counted against it
    even when the roll-over runs late."""
    start, end = subscription.current_period_start, subscription.current_period_end
    trialing = subscription.status is SubscriptionStatus.TRIALING
    while end <= now:
        start, end = (end, first_period_end(end)) if trialing else following_period(start, end)
        trialing = False
    return start, end


def _close_period(
    subscription: Subscription, catalog: PlanCatalog, now: datetime
) -> tuple[Subscription, SubscriptionEvent, Plan]:
    """One period ends: the event that applies, the subscription in its next period, and the plan
    that period is billed on (free plans owe nothing)."""
    start, end = _next_period(subscription)
    default = catalog.default
    status = subscription.status
    if status is SubscriptionStatus.TRIALING and subscription.cancel_at_period_end:
        event, plan = _Ev.TRIAL_EXPIRED, default
    elif status is SubscriptionStatus.PAST_DUE:
        event, plan = _Ev.GRACE_EXPIRED, default
    elif subscription.cancel_at_period_end:
        event, plan = _Ev.CANCELLATION_APPLIED, default
    elif subscription.scheduled_plan is not None:
        event, plan = _Ev.DOWNGRADE_APPLIED, catalog.effective(subscription.scheduled_plan)
    elif status is SubscriptionStatus.TRIALING:
        event, plan = _Ev.TRIAL_CONVERTED, catalog.effective(subscription.plan)
    else:
        event, plan = _Ev.PERIOD_RENEWED, catalog.effective(subscription.plan)
    after = _step(
        subscription,
        event,
        now,
        plan=plan.code,
        current_period_start=start,
        current_period_end=end,
        cancel_at_period_end=False,
        scheduled_plan=None,
    )
    return after, event, plan
