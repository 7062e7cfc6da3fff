"""The plan catalog: what each plan costs and allows, as data (a TOML file), never as code.

The built-in catalog ships as `entrypoints/builtin_plans.toml`; operators replace or extend it
with `PICTOR_PLANS_FILE` in the same format. Parsing and validation live here (pure: text in,
catalog or `PlanCatalogError` out); reading the files is the entrypoints' business.

Money is integer cents of one currency for the whole catalog (proration between currencies has no
meaning), never floats.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from enum import StrEnum
from typing import Annotated, Any, Final

import msgspec

from core.rate_limit import RateLimit

CATALOG_FORMAT: Final = 1
_CODE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")
_FEATURE = re.compile(r"^[a-z][a-z0-9_.:-]{0,63}$")

PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
NonNegativeInt = Annotated[int, msgspec.Meta(ge=0)]


class PlanCatalogError(ValueError):
    """A catalog that cannot be used; the message says where and why."""


class QueuePriority(StrEnum):
    STANDARD = "standard"
    PRIORITY = "priority"  # generations go to the `generation-priority` queue


class PlanRateLimit(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """`requests` per `per_seconds`, with up to `burst` at once (GCRA; core.rate_limit)."""

    requests: PositiveInt
    per_seconds: PositiveInt
    burst: PositiveInt

    def as_rate_limit(self) -> RateLimit:
        return RateLimit(requests=self.requests, period_seconds=self.per_seconds, burst=self.burst)


class Plan(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    code: str
    name: str
    monthly_price_cents: NonNegativeInt
    currency: str
    monthly_images: NonNegativeInt
    rate_limit: PlanRateLimit
    max_concurrent_jobs: PositiveInt
    max_image_pixels: PositiveInt
    priority: QueuePriority = QueuePriority.STANDARD
    features: tuple[str, ...] = ()
    trial_days: NonNegativeInt = 0  # > 0: a first subscription to this plan starts as a trial
    image_retention_days: PositiveInt = 30

    @property
    def is_free(self) -> bool:
        return self.monthly_price_cents == 0


class PlanCatalog:
    """The plans on offer, ordered by price (then code), with the one every new user starts on."""

    def __init__(self, plans: list[Plan], *, default_plan: str) -> None:
        by_price = sorted(plans, key=lambda plan: (plan.monthly_price_cents, plan.code))
        self._plans = {plan.code: plan for plan in by_price}
        if default_plan not in self._plans:
            raise PlanCatalogError(f"default_plan {default_plan!r} is not a plan in the catalog")
        self.default = self._plans[default_plan]
        if not self.default.is_free:
            raise PlanCatalogError(
                f"default_plan {default_plan!r} must be free (every new user starts on it)"
            )
        currencies = {plan.currency for plan in plans}
        if len(currencies) > 1:
            raise PlanCatalogError(f"every plan must use one currency, found {', '.join(sorted(currencies))}")
        self.currency = self.default.currency
        fingerprint = msgspec.json.encode([list(self._plans.values()), default_plan])
        self.version = hashlib.sha256(fingerprint).hexdigest()[:16]  # an ETag for GET /v1/plans

    def __iter__(self) -> Iterator[Plan]:
        return iter(self._plans.values())

    def __len__(self) -> int:
        return len(self._plans)

    def __contains__(self, code: object) -> bool:
        return code in self._plans

    @property
    def plans(self) -> list[Plan]:
        return list(self._plans.values())

    def get(self, code: str) -> Plan | None:
        return self._plans.get(code)

    def effective(self, code: str) -> Plan:
        """The plan a user on `code` gets: the default plan when an operator removed `code` from the
        catalog (a user is never left without limits)."""
        return self._plans.get(code, self.default)


# --- the file format -----------------------------------------------------------------------


class _CatalogFile(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    format: int
    default_plan: str | None = None
    # Only for operators' files: drop the built-in plans instead of extending them.
    replace_builtin: bool = False
    plans: dict[str, dict[str, Any]] = {}  # converted one by one, so errors name the plan


def parse_catalog(text: str | bytes, *, source: str, base: PlanCatalog | None = None) -> PlanCatalog:
    """The catalog a TOML document describes.

    With `base` (the built-in catalog), the document extends it: a plan with a known code replaces
    that plan, new codes are added, and `replace_builtin = true` starts from nothing instead.
    Raises PlanCatalogError naming `source` and the offending field.
    """
    try:
        document = msgspec.toml.decode(text, type=_CatalogFile)
    except msgspec.ValidationError as error:
        raise PlanCatalogError(f"{source}: {error}") from None
    except msgspec.DecodeError as error:
        raise PlanCatalogError(f"{source}: not valid TOML ({error})") from None
    if document.format != CATALOG_FORMAT:
        raise PlanCatalogError(f"{source}: format must be {CATALOG_FORMAT}, got {document.format}")
    plans: dict[str, Plan] = {}
    if base is not None and not document.replace_builtin:
        plans = {plan.code: plan for plan in base}
    for code, entry in document.plans.items():
        plans[code] = _plan_from(code, entry, source)
    if not plans:
        raise PlanCatalogError(f"{source}: the catalog has no plans")
    default_plan = document.default_plan or (base.default.code if base is not None else "free")
    try:
        return PlanCatalog(list(plans.values()), default_plan=default_plan)
    except PlanCatalogError as error:
        raise PlanCatalogError(f"{source}: {error}") from None


def _plan_from(code: str, raw: dict[str, Any], source: str) -> Plan:
    where = f"{source}: plans.{code}"
    if "code" in raw:
        raise PlanCatalogError(f"{where}: the code is the table's name, not a field")
    try:
        plan = msgspec.convert({**raw, "code": code}, Plan)
    except msgspec.ValidationError as error:
        raise PlanCatalogError(f"{where}: {error}".replace(" - at `$.", " - at `")) from None
    if not _CODE.match(code):
        raise PlanCatalogError(
            f"{where}: a plan code is 1-32 of a-z, 0-9, '_' or '-', starting with a letter"
        )
    if not plan.name.strip() or len(plan.name) > 80:
        raise PlanCatalogError(f"{where}.name: must be 1-80 characters")
    if not _CURRENCY.match(plan.currency):
        raise PlanCatalogError(f"{where}.currency: an ISO 4217 code such as 'USD', got {plan.currency!r}")
    for feature in plan.features:
        if not _FEATURE.match(feature):
            raise PlanCatalogError(f"{where}.features: {feature!r} is not a feature name (a-z, 0-9, '_.:-')")
    if len(set(plan.features)) != len(plan.features):
        raise PlanCatalogError(f"{where}.features: listed twice")
    if plan.rate_limit.burst > plan.rate_limit.requests * 10:
        raise PlanCatalogError(f"{where}.rate_limit.burst: at most ten times `requests`")
    return plan
