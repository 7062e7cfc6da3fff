"""The caller's subscription and usage (API.md "Plans, subscription and usage")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import JSONBody

from core.billing.charges import Charge
from core.billing.quotas import Usage
from core.billing.subscription_management import SubscriptionDetails
from core.errors import ErrorCode
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal, caller_of
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.svcs_plugin import SvcsContainer
from entrypoints.use_cases import quotas_from, subscriptions_from

_READ_PROBLEMS = (ErrorCode.UNAUTHENTICATED, ErrorCode.INSUFFICIENT_SCOPE)
_CHANGE_PROBLEMS = (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN, ErrorCode.INVALID_STATE)


class PlanBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    plan: str


class ChargeOut(msgspec.Struct, kw_only=True):
    id: str
    amount_cents: int
    currency: str
    kind: str  # `proration` (an upgrade within a period) or `renewal` (a new period)
    created_at: datetime

    @classmethod
    def of(cls, charge: Charge) -> ChargeOut:
        return cls(
            id=charge.id,
            amount_cents=charge.amount_cents,
            currency=charge.currency,
            kind=charge.kind.value,
            created_at=charge.created_at,
        )


class SubscriptionOut(msgspec.Struct, kw_only=True):
    plan: str
    status: str  # trialing, active, past_due, canceled, expired
    current_period_start: datetime
    current_period_end: datetime
    cancel_at_period_end: bool
    trial_end: datetime | None
    scheduled_plan: str | None  # a downgrade that applies at current_period_end
    latest_charge: ChargeOut | None

    @classmethod
    def of(cls, details: SubscriptionDetails) -> SubscriptionOut:
        subscription = details.subscription
        return cls(
            plan=subscription.plan,
            status=subscription.status.value,
            current_period_start=subscription.current_period_start,
            current_period_end=subscription.current_period_end,
            cancel_at_period_end=subscription.cancel_at_period_end,
            trial_end=subscription.trial_end,
            scheduled_plan=subscription.scheduled_plan,
            latest_charge=ChargeOut.of(details.latest_charge) if details.latest_charge else None,
        )


class PreviewOut(msgspec.Struct, kw_only=True):
    plan: str
    amount_due_cents: int  # what POST /v1/subscription would charge now
    proration_cents: int  # of which the prorated price difference of an upgrade
    effective_at: datetime  # now for an upgrade, the period's end for a downgrade


class UsageOut(msgspec.Struct, kw_only=True):
    period_start: datetime
    period_end: datetime
    images_used: int
    images_limit: int
    images_remaining: int

    @classmethod
    def of(cls, usage: Usage) -> UsageOut:
        return cls(**msgspec.structs.asdict(usage))


class SubscriptionController(Controller):
    path = "/v1/subscription"
    tags = ["subscription"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @get("/", responses=problem_responses(*_READ_PROBLEMS))
    async def get_subscription(
        self, principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> SubscriptionOut:
        """The caller's plan, status and billing period, and their latest charge."""
        subscriptions = await subscriptions_from(svcs_container)
        return SubscriptionOut.of(await subscriptions.current(principal))

    @post(
        "/preview",
        status_code=200,
        responses=problem_responses(*_READ_PROBLEMS, ErrorCode.INVALID_STATE, ErrorCode.UNKNOWN_PLAN),
    )
    async def preview(
        self, data: JSONBody[PlanBody], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> PreviewOut:
        """What changing to `plan` would charge and when it would apply; nothing changes."""
        subscriptions = await subscriptions_from(svcs_container)
        preview = await subscriptions.preview(principal, data.plan)
        return PreviewOut(**msgspec.structs.asdict(preview))

    @post("/", status_code=200, responses=problem_responses(*_CHANGE_PROBLEMS, ErrorCode.UNKNOWN_PLAN))
    async def change_plan(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[PlanBody],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> SubscriptionOut:
        """Upgrade now (the prorated difference is charged; a first move up to a plan with trial
        days starts a free trial), or downgrade at the period's end. Log in to do this: API keys
        cannot."""
        subscriptions = await subscriptions_from(svcs_container)
        return SubscriptionOut.of(await subscriptions.change_plan(principal, data.plan, caller_of(request)))

    @post("/cancel", status_code=200, responses=problem_responses(*_CHANGE_PROBLEMS))
    async def cancel(
        self, request: Request[Any, Any, Any], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> SubscriptionOut:
        """Cancel at the period's end (back to the free plan then); `409 invalid_state` on the free
        plan."""
        subscriptions = await subscriptions_from(svcs_container)
        return SubscriptionOut.of(await subscriptions.cancel(principal, caller_of(request)))


@get(
    "/v1/usage",
    tags=["subscription"],
    dependencies=PRINCIPAL_DEPENDENCY,
    security=BEARER_SECURITY,
    responses=problem_responses(*_READ_PROBLEMS),
)
async def get_usage(principal: CurrentPrincipal, svcs_container: SvcsContainer) -> UsageOut:
    """Images used and left in the current billing period."""
    quotas = await quotas_from(svcs_container)
    return UsageOut.of(await quotas.usage(principal))
