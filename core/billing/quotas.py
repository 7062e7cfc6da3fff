"""Image quotas: reserving a generation's images against the billing period, settling or refunding
them, and what a user has left.

The check-and-increment is the store's one atomic step (`UsageRepository.reserve`: a conditional
UPDATE in PostgreSQL), so processes racing for the last images never spend more than the quota.
Crossing 80 % and 100 % of it writes one `quota.threshold_reached` event per threshold and period
(`mark_threshold` says whether this reservation was the first to cross), in the same unit of work.
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from core.accounts.api_keys import Scope
from core.accounts.principal import Principal
from core.billing.plans import Plan, PlanCatalog
from core.billing.subscription_management import ensure_subscription
from core.billing.subscriptions import current_period, start_subscription
from core.billing.usage import (
    QUOTA_THRESHOLDS_PERCENT,
    QuotaReservation,
    ReservationOutcome,
    ReservationStatus,
)
from core.errors import DomainError, ErrorCode, FieldError
from core.events import QuotaThresholdData, QuotaThresholdReached, to_outbox
from core.ports import Clock, Database, Ids, UnitOfWork

MAX_IMAGES_PER_RESERVATION = 100


def thresholds_reached(images_used: int, images_limit: int) -> tuple[int, ...]:
    """The thresholds (percent of the quota) that `images_used` has reached, in integers: a quota
    of nothing has no thresholds to announce."""
    if images_limit <= 0:
        return ()
    return tuple(p for p in QUOTA_THRESHOLDS_PERCENT if images_used * 100 >= p * images_limit)


class Usage(msgspec.Struct, frozen=True, kw_only=True):
    period_start: datetime
    period_end: datetime
    images_used: int
    images_limit: int
    images_remaining: int


class Quotas:
    def __init__(self, *, database: Database, catalog: PlanCatalog, ids: Ids, clock: Clock) -> None:
        self._database = database
        self._catalog = catalog
        self._ids = ids
        self._clock = clock

    async def reserve(self, user_id: str, plan_code: str, reservation_id: str, images: int) -> Usage:
        """Reserve `images` for the generation `reservation_id` in the current period, within
        `plan_code`'s monthly images and concurrent jobs (the caller's plan, as its principal has
        it). `quota_exceeded` (402) or `concurrency_limit` (429) otherwise; the same id again
        changes nothing. Returns the usage after the reservation."""
        if not 1 <= images <= MAX_IMAGES_PER_RESERVATION:
            raise DomainError(
                ErrorCode.VALIDATION_FAILED,
                "The request is invalid; see errors",
                errors=[
                    FieldError("n", f"Between 1 and {MAX_IMAGES_PER_RESERVATION} images", "out_of_range")
                ],
            )
        plan = self._catalog.effective(plan_code)
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            subscription = await uow.subscriptions.get(user_id)
            if subscription is None:
                subscription = await ensure_subscription(uow, user_id, self._catalog, now)
            start, end = current_period(subscription, now)  # even when the roll-over runs late
            result = await uow.usage.reserve(
                QuotaReservation(
                    id=reservation_id,
                    user_id=user_id,
                    period_start=start,
                    images=images,
                    status=ReservationStatus.RESERVED,
                    created_at=now,
                ),
                period_end=end,
                images_limit=plan.monthly_images,
                max_in_flight=plan.max_concurrent_jobs,
            )
            usage = result.usage
            if result.outcome is ReservationOutcome.QUOTA_EXCEEDED:
                raise DomainError(
                    ErrorCode.QUOTA_EXCEEDED,
                    f"The {plan.name} plan includes {plan.monthly_images} images a month; "
                    f"{max(plan.monthly_images - usage.images_used, 0)} left until {end.isoformat()}",
                    images_limit=plan.monthly_images,
                    images_used=usage.images_used,
                    period_end=end.isoformat(),
                )
            if result.outcome is ReservationOutcome.CONCURRENCY_LIMIT:
                raise DomainError(
                    ErrorCode.CONCURRENCY_LIMIT,
                    f"The {plan.name} plan runs {plan.max_concurrent_jobs} generation(s) at once; "
                    "wait for one to finish",
                    max_concurrent_jobs=plan.max_concurrent_jobs,
                )
            if result.outcome is ReservationOutcome.RESERVED:
                await self._announce_thresholds(uow, user_id, plan, start, end, usage.images_used)
            await uow.commit()
        return _usage_of(plan, start, end, usage.images_used)

    async def settle(self, reservation_id: str) -> bool:
        """The generation succeeded: its images stay spent. False when the reservation had ended
        already (a retried job) or never existed."""
        return await self._release(reservation_id, refund=False)

    async def refund(self, reservation_id: str) -> bool:
        """The generation failed or was canceled: its images come back, once."""
        return await self._release(reservation_id, refund=True)

    async def usage(self, principal: Principal) -> Usage:
        """The caller's images in the current period, on their subscription's plan."""
        principal.require_scope(Scope.ACCOUNT_READ)
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            subscription = await uow.subscriptions.get(principal.user_id)
            if subscription is None:
                subscription = start_subscription(principal.user_id, self._catalog.default.code, now)
            start, end = current_period(subscription, now)
            period = await uow.usage.get(principal.user_id, start)
        plan = self._catalog.effective(principal.plan)
        return _usage_of(plan, start, end, period.images_used if period is not None else 0)

    async def _release(self, reservation_id: str, *, refund: bool) -> bool:
        async with self._database.unit_of_work() as uow:
            ended = await uow.usage.release(reservation_id, refund=refund, at=self._clock.now())
            await uow.commit()
        return ended is not None

    async def _announce_thresholds(
        self, uow: UnitOfWork, user_id: str, plan: Plan, start: datetime, end: datetime, images_used: int
    ) -> None:
        for percent in thresholds_reached(images_used, plan.monthly_images):
            if not await uow.usage.mark_threshold(user_id, start, percent):
                continue  # announced earlier this period
            data = QuotaThresholdData(
                plan=plan.code,
                percent=percent,
                images_used=images_used,
                images_limit=plan.monthly_images,
                period_start=start,
                period_end=end,
            )
            event = QuotaThresholdReached(
                id=self._ids.new_id(), occurred_at=self._clock.now(), user_id=user_id, data=data
            )
            await uow.outbox.add(to_outbox(event))


def _usage_of(plan: Plan, start: datetime, end: datetime, images_used: int) -> Usage:
    return Usage(
        period_start=start,
        period_end=end,
        images_used=images_used,
        images_limit=plan.monthly_images,
        images_remaining=max(plan.monthly_images - images_used, 0),
    )
