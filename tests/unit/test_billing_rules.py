"""The pure billing rules: anchored monthly periods, proration, and the subscription state machine
(examples, then Hypothesis properties)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.billing.charges import ChargeKind
from core.billing.periods import anchor_day_of, anchored_day, first_period_end, next_period_end
from core.billing.plans import Plan, PlanCatalog, PlanRateLimit
from core.billing.proration import prorate_upgrade
from core.billing.subscriptions import (
    GRACE_PERIOD,
    TRANSITIONS,
    Subscription,
    SubscriptionEvent,
    SubscriptionStatus,
    change_plan,
    current_period,
    fail_payment,
    next_status,
    recover_payment,
    request_cancel,
    roll_over,
    set_plan_by_admin,
    start_subscription,
)
from core.errors import DomainError, ErrorCode


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def plan(code: str, price: int, *, trial_days: int = 0, images: int = 100) -> Plan:
    return Plan(
        code=code,
        name=code.title(),
        monthly_price_cents=price,
        currency="USD",
        monthly_images=images,
        rate_limit=PlanRateLimit(requests=60, per_seconds=60, burst=10),
        max_concurrent_jobs=2,
        max_image_pixels=1 << 20,
        trial_days=trial_days,
    )


FREE = plan("free", 0, images=50)
PRO = plan("pro", 2000, trial_days=7, images=1000)
TEAM = plan("team", 9900, images=10000)
BASIC = plan("basic", 900)  # no trial
CATALOG = PlanCatalog([FREE, PRO, TEAM, BASIC], default_plan="free")

# --- periods ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "anchor", "end"),
    [
        (utc(2026, 1, 31, 10, 30), 31, utc(2026, 2, 28, 10, 30)),
        (utc(2028, 1, 31), 31, utc(2028, 2, 29)),  # a leap year
        (utc(2026, 2, 28, 10, 30), 31, utc(2026, 3, 31, 10, 30)),  # back to the anchor
        (utc(2026, 3, 31), 31, utc(2026, 4, 30)),
        (utc(2026, 4, 30), 31, utc(2026, 5, 31)),
        (utc(2026, 2, 28), 30, utc(2026, 3, 30)),
        (utc(2026, 12, 15), 15, utc(2027, 1, 15)),  # across the year
    ],
)
def test_monthly_periods_clamp_to_the_month_and_return_to_the_anchor(
    start: datetime, anchor: int, end: datetime
) -> None:
    assert next_period_end(start, anchor) == end
    assert anchor_day_of(start, end) == anchor


def test_a_period_must_start_on_its_anchor() -> None:
    with pytest.raises(ValueError, match="anchor day 31"):
        next_period_end(utc(2026, 1, 15), 31)
    with pytest.raises(ValueError, match="1-31"):
        next_period_end(utc(2026, 1, 15), 0)


def test_a_span_that_is_not_a_month_anchors_the_following_months_on_its_end() -> None:
    # A 7-day trial from Jan 28 ends Feb 4: the months that follow renew on the 4th.
    assert anchor_day_of(utc(2026, 1, 28), utc(2026, 2, 4)) == 4


@st.composite
def anchored_starts(draw: st.DrawFn) -> tuple[datetime, int]:
    anchor = draw(st.integers(1, 31))
    year, month = draw(st.integers(2000, 2100)), draw(st.integers(1, 12))
    seconds = draw(st.integers(0, 86_399))
    start = utc(year, month, anchored_day(year, month, anchor)) + timedelta(seconds=seconds)
    return start, anchor


@given(anchored_starts(), st.integers(1, 30))
def test_periods_increase_by_28_to_31_days_and_keep_their_anchor(
    start_and_anchor: tuple[datetime, int], count: int
) -> None:
    start, anchor = start_and_anchor
    for _ in range(count):
        end = next_period_end(start, anchor)
        assert end > start
        assert timedelta(days=28) <= end - start <= timedelta(days=31)
        assert end.day == anchored_day(end.year, end.month, anchor)
        assert end.time() == start.time()
        assert anchor_day_of(start, end) == anchor  # never stored, always recovered
        start = end


# --- proration --------------------------------------------------------------------------------

P_START, P_END = utc(2026, 1, 1), utc(2026, 2, 1)


def test_proration_examples() -> None:
    assert prorate_upgrade(0, 2000, P_START, P_END, P_START) == 2000
    assert prorate_upgrade(0, 2000, P_START, P_END, P_END) == 0
    assert prorate_upgrade(1000, 2000, P_START, P_END, P_START - timedelta(days=3)) == 1000
    assert prorate_upgrade(1000, 2000, P_START, P_END, P_END + timedelta(days=3)) == 0
    # Half of a 31-day month left: floor(1000 * 15.5 / 31) = 500 cents exactly.
    assert prorate_upgrade(1000, 2000, P_START, P_END, P_START + timedelta(days=15, hours=12)) == 500
    # One microsecond in: a hair less than the whole difference, rounded down.
    assert prorate_upgrade(0, 2000, P_START, P_END, P_START + timedelta(microseconds=1)) == 1999
    assert prorate_upgrade(2000, 900, P_START, P_END, P_START) == 0  # not an upgrade: nothing owed
    with pytest.raises(ValueError, match="negative"):
        prorate_upgrade(-1, 2000, P_START, P_END, P_START)
    with pytest.raises(ValueError, match="ends after"):
        prorate_upgrade(0, 2000, P_END, P_START, P_START)


PRICES = st.integers(0, 10_000_000)
OFFSETS = st.integers(-(10**12), 4 * 10**13)  # µs from the period's start: before, within, after


@st.composite
def periods(draw: st.DrawFn) -> tuple[datetime, datetime]:
    start = utc(2026, 1, 1) + timedelta(microseconds=draw(st.integers(0, 10**14)))
    return start, start + timedelta(microseconds=draw(st.integers(1, 4 * 10**13)))


@given(PRICES, PRICES, periods(), OFFSETS, OFFSETS)
def test_proration_is_bounded_exact_at_the_boundaries_and_never_increases(
    old: int, new: int, period: tuple[datetime, datetime], first: int, second: int
) -> None:
    start, end = period
    difference = max(new - old, 0)
    earlier, later = (start + timedelta(microseconds=offset) for offset in sorted((first, second)))
    amount_earlier = prorate_upgrade(old, new, start, end, earlier)
    amount_later = prorate_upgrade(old, new, start, end, later)
    assert type(amount_earlier) is int
    assert 0 <= amount_later <= amount_earlier <= difference
    assert prorate_upgrade(old, new, start, end, start) == difference
    assert prorate_upgrade(old, new, start, end, end) == 0


# --- the state machine ------------------------------------------------------------------------

NOW = utc(2026, 1, 10, 12)


def subscription_on(code: str, *, status: SubscriptionStatus = SubscriptionStatus.ACTIVE) -> Subscription:
    start = utc(2026, 1, 1, 12)
    return Subscription(
        user_id="u1",
        plan=code,
        status=status,
        current_period_start=start,
        current_period_end=first_period_end(start),
        created_at=start,
        updated_at=start,
    )


def test_every_pair_outside_the_table_is_invalid_state() -> None:
    for event in SubscriptionEvent:
        for status in SubscriptionStatus:
            allowed = TRANSITIONS[event].get(status)
            if allowed is not None:
                assert next_status(status, event) is allowed
                continue
            with pytest.raises(DomainError) as caught:
                next_status(status, event)
            assert caught.value.code is ErrorCode.INVALID_STATE


def test_a_new_user_is_active_on_the_default_plan_for_a_month() -> None:
    new = start_subscription("u1", CATALOG.default.code, utc(2026, 1, 31, 9))
    assert (new.plan, new.status) == ("free", SubscriptionStatus.ACTIVE)
    assert (new.current_period_start, new.current_period_end) == (utc(2026, 1, 31, 9), utc(2026, 2, 28, 9))
    assert not new.cancel_at_period_end and new.scheduled_plan is None and new.trial_end is None


def test_an_upgrade_applies_now_and_owes_the_prorated_difference() -> None:
    before = subscription_on("basic")
    before = request_cancel(before, BASIC, NOW).after  # an upgrade clears what was pending
    change = change_plan(before, BASIC, TEAM, NOW)
    assert change.events == (SubscriptionEvent.UPGRADED,)
    assert change.after.plan == "team" and change.after.status is SubscriptionStatus.ACTIVE
    assert not change.after.cancel_at_period_end and change.after.scheduled_plan is None
    expected = prorate_upgrade(900, 9900, before.current_period_start, before.current_period_end, NOW)
    assert [(c.kind, c.plan, c.amount_cents) for c in change.charges] == [
        (ChargeKind.PRORATION, "team", expected)
    ]
    assert change.amount_due_cents == change.proration_cents == expected > 0
    assert change.effective_at == NOW
    assert (change.after.current_period_start, change.after.current_period_end) == (
        before.current_period_start,
        before.current_period_end,
    )


def test_a_first_move_up_to_a_plan_with_trial_days_starts_a_free_trial() -> None:
    change = change_plan(subscription_on("free"), FREE, PRO, NOW)
    trial = change.after
    assert change.events == (SubscriptionEvent.TRIAL_STARTED,) and change.charges == ()
    assert (trial.plan, trial.status) == ("pro", SubscriptionStatus.TRIALING)
    assert trial.trial_end == NOW + timedelta(days=7)
    assert (trial.current_period_start, trial.current_period_end) == (NOW, NOW + timedelta(days=7))


def test_a_trial_converts_at_its_end_with_a_full_month_charged() -> None:
    trial = change_plan(subscription_on("free"), FREE, PRO, NOW).after
    assert trial.trial_end is not None
    later = trial.trial_end + timedelta(hours=1)
    rolled = roll_over(trial, CATALOG, later)
    assert rolled.events == (SubscriptionEvent.TRIAL_CONVERTED,)
    assert (rolled.after.plan, rolled.after.status) == ("pro", SubscriptionStatus.ACTIVE)
    assert rolled.after.current_period_start == trial.trial_end
    assert rolled.after.current_period_end == first_period_end(trial.trial_end)
    assert [(c.kind, c.amount_cents, c.period_start) for c in rolled.charges] == [
        (ChargeKind.RENEWAL, 2000, trial.trial_end)
    ]
    assert rolled.after.trial_end == trial.trial_end  # remembered: no second trial


def test_a_canceled_trial_expires_to_the_default_plan_without_a_charge() -> None:
    trial = change_plan(subscription_on("free"), FREE, PRO, NOW).after
    canceled = request_cancel(trial, PRO, NOW + timedelta(days=1)).after
    assert canceled.status is SubscriptionStatus.TRIALING and canceled.cancel_at_period_end
    rolled = roll_over(canceled, CATALOG, NOW + timedelta(days=8))
    assert rolled.events == (SubscriptionEvent.TRIAL_EXPIRED,) and rolled.charges == ()
    assert (rolled.after.plan, rolled.after.status) == ("free", SubscriptionStatus.EXPIRED)
    # Moving up again is a paid upgrade: the trial was used.
    again = change_plan(rolled.after, FREE, PRO, NOW + timedelta(days=9))
    assert again.events == (SubscriptionEvent.UPGRADED,) and again.amount_due_cents > 0


def test_upgrading_during_a_trial_buys_a_first_month_at_once() -> None:
    trial = change_plan(subscription_on("free"), FREE, PRO, NOW).after
    at = NOW + timedelta(days=2)
    change = change_plan(trial, PRO, TEAM, at)
    assert change.after.status is SubscriptionStatus.ACTIVE and change.after.plan == "team"
    assert (change.after.current_period_start, change.after.current_period_end) == (at, first_period_end(at))
    assert [(c.kind, c.amount_cents) for c in change.charges] == [(ChargeKind.RENEWAL, 9900)]
    assert change.proration_cents == 0 and change.amount_due_cents == 9900


def test_a_downgrade_waits_for_the_period_end() -> None:
    team = subscription_on("team")
    change = change_plan(team, TEAM, PRO, NOW)
    assert change.events == (SubscriptionEvent.DOWNGRADE_SCHEDULED,) and change.charges == ()
    assert change.after.plan == "team" and change.after.scheduled_plan == "pro"
    assert change.effective_at == team.current_period_end
    rolled = roll_over(change.after, CATALOG, team.current_period_end)
    assert rolled.events == (SubscriptionEvent.DOWNGRADE_APPLIED,)
    assert rolled.after.plan == "pro" and rolled.after.scheduled_plan is None
    assert [(c.kind, c.plan, c.amount_cents) for c in rolled.charges] == [(ChargeKind.RENEWAL, "pro", 2000)]


def test_the_same_plan_resumes_what_was_pending_or_changes_nothing() -> None:
    team = subscription_on("team")
    assert change_plan(team, TEAM, TEAM, NOW).changed is False
    for pending in (request_cancel(team, TEAM, NOW).after, change_plan(team, TEAM, PRO, NOW).after):
        resumed = change_plan(pending, TEAM, TEAM, NOW)
        assert resumed.events == (SubscriptionEvent.RESUMED,)
        assert not resumed.after.cancel_at_period_end and resumed.after.scheduled_plan is None


def test_a_cancellation_takes_effect_at_the_period_end() -> None:
    pro = subscription_on("pro")
    change = request_cancel(pro, PRO, NOW)
    assert change.after.cancel_at_period_end and change.effective_at == pro.current_period_end
    assert request_cancel(change.after, PRO, NOW).changed is False  # twice: nothing more
    rolled = roll_over(change.after, CATALOG, pro.current_period_end + timedelta(seconds=1))
    assert rolled.events == (SubscriptionEvent.CANCELLATION_APPLIED,) and rolled.charges == ()
    assert (rolled.after.plan, rolled.after.status) == ("free", SubscriptionStatus.CANCELED)
    assert not rolled.after.cancel_at_period_end


def test_the_free_plan_has_nothing_to_cancel() -> None:
    with pytest.raises(DomainError) as caught:
        request_cancel(subscription_on("free"), FREE, NOW)
    assert caught.value.code is ErrorCode.INVALID_STATE


def test_past_due_keeps_the_plan_for_a_grace_period_then_expires_or_recovers() -> None:
    pro = subscription_on("pro")
    failed = fail_payment(pro, NOW)
    assert failed.after.status is SubscriptionStatus.PAST_DUE and failed.after.plan == "pro"
    assert failed.after.current_period_end == NOW + GRACE_PERIOD
    for illegal in (lambda s: change_plan(s, PRO, TEAM, NOW), lambda s: change_plan(s, PRO, FREE, NOW)):
        with pytest.raises(DomainError) as caught:
            illegal(failed.after)
        assert caught.value.code is ErrorCode.INVALID_STATE

    recovered = recover_payment(failed.after, PRO, NOW + timedelta(days=2))
    assert recovered.after.status is SubscriptionStatus.ACTIVE
    assert recovered.after.current_period_start == NOW  # the grace's usage carries on
    assert recovered.after.current_period_end == first_period_end(NOW)
    assert [(c.kind, c.amount_cents) for c in recovered.charges] == [(ChargeKind.RENEWAL, 2000)]

    expired = roll_over(failed.after, CATALOG, NOW + GRACE_PERIOD)
    assert expired.events == (SubscriptionEvent.GRACE_EXPIRED,) and expired.charges == ()
    assert (expired.after.plan, expired.after.status) == ("free", SubscriptionStatus.EXPIRED)

    with pytest.raises(DomainError):
        fail_payment(change_plan(subscription_on("free"), FREE, PRO, NOW).after, NOW)  # a trial owes nothing


def test_missed_periods_roll_one_by_one_with_one_renewal_each() -> None:
    start = utc(2026, 1, 31, 8)
    pro = Subscription(
        user_id="u1",
        plan="pro",
        status=SubscriptionStatus.ACTIVE,
        current_period_start=start,
        current_period_end=first_period_end(start),
        created_at=start,
        updated_at=start,
    )
    rolled = roll_over(pro, CATALOG, utc(2026, 5, 2))
    assert rolled.events == (SubscriptionEvent.PERIOD_RENEWED,) * 3
    assert [(c.period_start, c.period_end) for c in rolled.charges] == [
        (utc(2026, 2, 28, 8), utc(2026, 3, 31, 8)),
        (utc(2026, 3, 31, 8), utc(2026, 4, 30, 8)),
        (utc(2026, 4, 30, 8), utc(2026, 5, 31, 8)),
    ]
    assert (rolled.after.current_period_start, rolled.after.current_period_end) == (
        utc(2026, 4, 30, 8),
        utc(2026, 5, 31, 8),
    )
    assert roll_over(rolled.after, CATALOG, utc(2026, 5, 2)).changed is False  # nothing left to do


def test_a_plan_an_operator_removed_renews_as_the_default_plan() -> None:
    gone = subscription_on("legacy")
    rolled = roll_over(gone, CATALOG, gone.current_period_end)
    assert rolled.after.plan == "free" and rolled.charges == ()


def test_an_admin_sets_any_plan_at_once_without_a_charge() -> None:
    trial = change_plan(subscription_on("free"), FREE, PRO, NOW).after
    change = set_plan_by_admin(request_cancel(trial, PRO, NOW).after, TEAM, NOW)
    assert change.events == (SubscriptionEvent.ADMIN_PLAN_SET,) and change.charges == ()
    assert (change.after.plan, change.after.status) == ("team", SubscriptionStatus.ACTIVE)
    assert not change.after.cancel_at_period_end
    assert set_plan_by_admin(subscription_on("team"), TEAM, NOW).changed is False


# --- properties over random histories ---------------------------------------------------------

ACTIONS = st.lists(
    st.tuples(
        st.sampled_from(["change", "cancel", "admin", "fail", "recover", "wait"]),
        st.sampled_from([FREE, BASIC, PRO, TEAM]),
        st.integers(0, 100 * 86_400),  # seconds to wait first
    ),
    max_size=25,
)


@given(ACTIONS)
def test_random_histories_keep_the_invariants(actions: list[tuple[str, Plan, int]]) -> None:
    """Whatever users, admins and payments do, and however late the roll-over runs: periods never
    overlap or leave gaps, charges are positive and cover the periods rolled, a canceled or expired
    subscription is on the default plan, and `current_period` predicts the roll-over exactly."""
    now = utc(2026, 1, 31, 23, 59)
    subscription = start_subscription("u1", "free", now)
    for action, target, wait in actions:
        now += timedelta(seconds=wait)
        predicted = current_period(subscription, now)
        rolled = roll_over(subscription, CATALOG, now)
        assert (rolled.after.current_period_start, rolled.after.current_period_end) == predicted
        assert rolled.after.current_period_start <= now < rolled.after.current_period_end
        renewals = [c for c in rolled.charges if c.kind is ChargeKind.RENEWAL]
        for previous, charge in itertools.pairwise(renewals):
            assert previous.period_end == charge.period_start
        subscription = rolled.after
        current = CATALOG.effective(subscription.plan)
        try:
            if action == "change":
                change = change_plan(subscription, current, target, now)
            elif action == "cancel":
                change = request_cancel(subscription, current, now)
            elif action == "admin":
                change = set_plan_by_admin(subscription, target, now)
            elif action == "fail":
                change = fail_payment(subscription, now)
            elif action == "recover":
                change = recover_payment(subscription, current, now)
            else:
                continue
        except DomainError as error:
            refused = error.code
            assert refused is ErrorCode.INVALID_STATE
            continue
        assert all(charge.amount_cents >= 0 for charge in change.charges)
        assert change.proration_cents <= max(target.monthly_price_cents - current.monthly_price_cents, 0)
        subscription = change.after
        assert subscription.current_period_start < subscription.current_period_end
        assert not (subscription.cancel_at_period_end and subscription.scheduled_plan is not None)
        if subscription.status in (SubscriptionStatus.CANCELED, SubscriptionStatus.EXPIRED):
            assert subscription.plan == CATALOG.default.code
