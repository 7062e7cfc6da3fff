"""Evaluating a flag for one user: a pure function of the flag, the user's context and the time.

Reasons use OpenFeature's vocabulary (STATIC, TARGETING_MATCH, SPLIT, DEFAULT, DISABLED, STALE,
ERROR), so what `/v1/flags` and `pictor flags evaluate` report reads the same as any OpenFeature
provider's resolution details.

Bucketing follows Unleash's clients (unleash-client-python `utils.normalized_hash` and
`variants.Variants`, unleash-client-node `strategy/util.ts`):
- rollout: `murmur3_32("{flag}:{user}", seed=0) % 100 + 1`, and the user is in when that is at most
  the percentage, so raising the percentage keeps everyone who was already in;
- variants: `murmur3_32("{flag}:{user}", seed=86028157) % total_weight + 1`, then the first variant
  whose running total of weights reaches that number. Unleash hashes variants with a seed of their
  own so that who is in the rollout and which variant they get are independent, and its weights
  add up to 1000 (the normaliser); ours do too (`core.flags.model.TOTAL_VARIANT_WEIGHT`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from enum import StrEnum
from typing import Final

import msgspec

from core.flags.model import Attribute, Flag, FlagKind, FlagValue, Operator, Rule, Variant
from core.flags.murmur import murmur3_32

ROLLOUT_SEED: Final = 0
VARIANT_SEED: Final = 86028157  # Unleash's VARIANT_HASH_SEED
ROLLOUT_NORMALISER: Final = 100


class Reason(StrEnum):
    """Why a flag resolved to its value (OpenFeature's resolution reasons)."""

    STATIC = "STATIC"  # everyone the flag applies to gets the same value
    TARGETING_MATCH = "TARGETING_MATCH"  # a targeting rule matched
    SPLIT = "SPLIT"  # the user's bucket put them inside the rollout or in a variant
    DEFAULT = "DEFAULT"  # the flag is on but does not apply to this user: its default
    DISABLED = "DISABLED"  # the flag is switched off: its default
    STALE = "STALE"  # the flag has expired: its default
    ERROR = "ERROR"  # it could not be evaluated: the caller's default (see `error_code`)


class EvaluationError(StrEnum):
    """OpenFeature's error codes, for the ones that can happen here."""

    FLAG_NOT_FOUND = "FLAG_NOT_FOUND"
    TYPE_MISMATCH = "TYPE_MISMATCH"
    TARGETING_KEY_MISSING = "TARGETING_KEY_MISSING"


class EvaluationContext(msgspec.Struct, frozen=True, kw_only=True):
    """Who the flag is evaluated for. `user_id` is the targeting key buckets are hashed from."""

    user_id: str
    plan: str | None = None
    role: str | None = None
    email: str | None = None

    @property
    def email_domain(self) -> str | None:
        if self.email is None or "@" not in self.email:
            return None
        return self.email.rpartition("@")[2].strip().lower() or None

    def attribute(self, attribute: Attribute) -> str | None:
        if attribute is Attribute.USER_ID:
            return self.user_id.lower() or None
        if attribute is Attribute.PLAN:
            return self.plan
        if attribute is Attribute.ROLE:
            return self.role
        return self.email_domain


class Evaluation(msgspec.Struct, frozen=True, kw_only=True):
    """A flag's value for one user, the variant it came from (variant flags) and why."""

    value: FlagValue
    variant: str | None = None
    reason: Reason
    error_code: EvaluationError | None = None


def rollout_bucket(flag_key: str, user_id: str) -> int:
    """The user's bucket for the flag's rollout, 1..100 (Unleash's `normalizedHash`)."""
    return murmur3_32(f"{flag_key}:{user_id}", ROLLOUT_SEED) % ROLLOUT_NORMALISER + 1


def in_rollout(flag_key: str, user_id: str, percentage: int) -> bool:
    """Whether the user is among the `percentage` percent the flag is rolled out to."""
    return percentage > 0 and rollout_bucket(flag_key, user_id) <= percentage


def pick_variant(flag_key: str, user_id: str, variants: Sequence[Variant]) -> Variant | None:
    """The user's variant by weight (Unleash's variant selection); None when no weight is positive."""
    total = sum(variant.weight for variant in variants)
    if total <= 0:
        return None
    target = murmur3_32(f"{flag_key}:{user_id}", VARIANT_SEED) % total + 1
    reached = 0
    for variant in variants:
        reached += variant.weight
        if reached >= target:
            return variant
    return None  # unreachable: the last running total is `total` >= target


def matches(rule: Rule, context: EvaluationContext) -> bool:
    """Whether `rule` applies to the user. A rule on an attribute the user lacks never applies."""
    value = context.attribute(rule.attribute)
    if value is None:
        return False
    found = value.lower() in rule.values
    return found if rule.operator is Operator.IN else not found


def evaluate(flag: Flag, context: EvaluationContext, now: datetime) -> Evaluation:
    """The flag's value for the user at `now`: expired → its default (STALE); off → its default
    (DISABLED); else the first matching rule's value (TARGETING_MATCH); else the rollout: inside
    it the "on" value (a boolean flag's opposite of its default, or the user's weighted variant),
    outside it the default (DEFAULT)."""
    if flag.is_stale(now):
        return _default(flag, Reason.STALE)
    if not flag.enabled:
        return _default(flag, Reason.DISABLED)
    for rule in flag.rules:
        if matches(rule, context):
            return _served(flag, rule.serve, Reason.TARGETING_MATCH)
    splits = _splits(flag)
    if flag.rollout < 100 or splits:
        if not context.user_id:  # a bucket needs someone to hash
            return Evaluation(
                value=flag.default,
                variant=_variant_of(flag, flag.default),
                reason=Reason.ERROR,
                error_code=EvaluationError.TARGETING_KEY_MISSING,
            )
        if not in_rollout(flag.key, context.user_id, flag.rollout):
            return _default(flag, Reason.DEFAULT)
    if flag.kind is FlagKind.BOOLEAN:
        return _served(flag, not flag.default, Reason.SPLIT if flag.rollout < 100 else Reason.STATIC)
    variant = pick_variant(flag.key, context.user_id, flag.variants)
    if variant is None:  # a valid variant flag's weights add up to 1000; a stored row might not
        return _default(flag, Reason.DEFAULT)
    return _served(flag, variant.name, Reason.SPLIT if flag.rollout < 100 or splits else Reason.STATIC)


def _splits(flag: Flag) -> bool:
    """Whether the flag's variants split its users (more than one has a positive weight)."""
    return sum(1 for variant in flag.variants if variant.weight > 0) > 1


def _default(flag: Flag, reason: Reason) -> Evaluation:
    return _served(flag, flag.default, reason)


def _served(flag: Flag, value: FlagValue, reason: Reason) -> Evaluation:
    return Evaluation(value=value, variant=_variant_of(flag, value), reason=reason)


def _variant_of(flag: Flag, value: FlagValue) -> str | None:
    return value if flag.kind is FlagKind.VARIANT and isinstance(value, str) else None
