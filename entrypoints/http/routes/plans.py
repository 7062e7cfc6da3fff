"""The plan catalog (API.md "Plans, subscription and usage"): public, and cacheable by anyone."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request, Response, get

from core.billing.plans import Plan, PlanCatalog
from entrypoints.http.svcs_plugin import SvcsContainer

# The catalog changes only when an operator redeploys with another PICTOR_PLANS_FILE: clients and
# proxies may keep it for a while, and revalidate with the ETag (the catalog's content hash).
CACHE_CONTROL = "public, max-age=300"


class RateLimitOut(msgspec.Struct, kw_only=True):
    requests: int
    per_seconds: int
    burst: int


class PlanOut(msgspec.Struct, kw_only=True):
    code: str
    name: str
    monthly_price_cents: int
    currency: str
    monthly_images: int
    rate_limit: RateLimitOut
    max_concurrent_jobs: int
    max_image_pixels: int
    priority: str
    features: list[str]
    trial_days: int
    image_retention_days: int

    @classmethod
    def of(cls, plan: Plan) -> PlanOut:
        return cls(
            code=plan.code,
            name=plan.name,
            monthly_price_cents=plan.monthly_price_cents,
            currency=plan.currency,
            monthly_images=plan.monthly_images,
            rate_limit=RateLimitOut(
                requests=plan.rate_limit.requests,
                per_seconds=plan.rate_limit.per_seconds,
                burst=plan.rate_limit.burst,
            ),
            max_concurrent_jobs=plan.max_concurrent_jobs,
            max_image_pixels=plan.max_image_pixels,
            priority=plan.priority.value,
            features=list(plan.features),
            trial_days=plan.trial_days,
            image_retention_days=plan.image_retention_days,
        )


class PlanListOut(msgspec.Struct, kw_only=True):
    data: list[PlanOut]


@get("/v1/plans", tags=["plans"], summary="The plans on offer")
async def list_plans(
    request: Request[Any, Any, Any], svcs_container: SvcsContainer
) -> Response[PlanListOut | None]:
    """Every plan, cheapest first. Answers `304` to a matching `If-None-Match`."""
    catalog = await svcs_container.aget(PlanCatalog)
    etag = f'"{catalog.version}"'
    headers = {"ETag": etag, "Cache-Control": CACHE_CONTROL}
    if _matches(request.headers.get("if-none-match", ""), etag):
        return Response(None, status_code=304, headers=headers)
    return Response(PlanListOut(data=[PlanOut.of(plan) for plan in catalog]), headers=headers)


def _matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110 §13.1.2: If-None-Match compares weakly (a proxy that compresses marks the ETag
    weak, `W/"…"`), and `*` matches any current representation."""
    opaque = etag.removeprefix("W/")
    tags = (part.strip() for part in if_none_match.split(","))
    return any(tag == "*" or tag.removeprefix("W/") == opaque for tag in tags if tag)
