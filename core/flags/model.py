"""What a feature flag is, and the rules a definition must follow.

An administrator writes a `FlagDefinition` (PUT /admin/flags/{key}, `pictor flags set`);
`define_flag` checks every field at once (`validation_failed` with one FieldError each), cleans
what can be cleaned (case, whitespace, duplicates) and returns the `Flag` to store.

A flag serves `default` when it is switched off, has expired, or does not apply to the user. When
it is on, the first targeting rule that matches serves its value; otherwise the rollout decides:
a boolean flag serves the opposite of its default to the users inside the rollout percentage, a
variant flag serves them one of its weighted variants.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import UTC, datetime
from enum import StrEnum
from typing import Final

import msgspec

from core.accounts.users import Role
from core.errors import DomainError, ErrorCode, FieldError
from core.identifiers import is_id

FlagValue = bool | str  # a boolean flag's value, or the name of a variant

MAX_KEY_LENGTH: Final = 64
MAX_DESCRIPTION_LENGTH: Final = 500
MAX_RULES: Final = 50
MAX_RULE_VALUES: Final = 1000
MAX_VALUE_LENGTH: Final = 254
MAX_VARIANTS: Final = 20
# Unleash's convention: variant weights are thousandths, and a flag's add up to 1000.
TOTAL_VARIANT_WEIGHT: Final = 1000

# Lower-case words joined by single dots, dashes or underscores ("beta-style.sunset").
_KEY: Final = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*")
_PLAN_CODE: Final = re.compile(r"[a-z][a-z0-9_-]{0,31}")  # as core.billing.plans writes plan codes
_DOMAIN: Final = re.compile(
    r"(?=.{1,253}\Z)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)+"
)


class FlagKind(StrEnum):
    BOOLEAN = "boolean"
    VARIANT = "variant"


class Attribute(StrEnum):
    """What a targeting rule looks at in the evaluation context."""

    USER_ID = "user_id"
    PLAN = "plan"
    ROLE = "role"
    EMAIL_DOMAIN = "email_domain"  # the part after the @, lower-case, matched exactly


class Operator(StrEnum):
    IN = "in"
    NOT_IN = "not_in"


class Rule(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """When `attribute` is (`in`) or is not (`not_in`) one of `values`, serve `serve`."""

    attribute: Attribute
    operator: Operator = Operator.IN
    values: tuple[str, ...]
    serve: FlagValue


class Variant(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    name: str
    weight: int  # thousandths of the users inside the rollout


class FlagDefinition(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """What an administrator may set on a flag, as sent. `default` may be left out on boolean
    flags (it is then false); a variant flag names one of its variants."""

    description: str = ""
    kind: FlagKind = FlagKind.BOOLEAN
    enabled: bool = False
    default: FlagValue | None = None
    rules: tuple[Rule, ...] = ()
    rollout: int = 100  # percent of the users the rules did not match, 0..100
    variants: tuple[Variant, ...] = ()
    expires_at: datetime | None = None  # from then on the flag serves its default and is stale


class Flag(msgspec.Struct, frozen=True, kw_only=True):
    """A stored, valid feature flag."""

    key: str
    description: str
    kind: FlagKind
    enabled: bool
    default: FlagValue
    rules: tuple[Rule, ...]
    rollout: int
    variants: tuple[Variant, ...]
    expires_at: datetime | None
    created_at: datetime
    updated_at: datetime

    def is_stale(self, now: datetime) -> bool:
        """Past its expiry: it serves its default to everyone and should be removed from the code."""
        return self.expires_at is not None and now >= self.expires_at

    def definition(self) -> FlagDefinition:
        """The definition this flag was made from (for `pictor flags get` and replacements)."""
        return FlagDefinition(
            description=self.description,
            kind=self.kind,
            enabled=self.enabled,
            default=self.default,
            rules=self.rules,
            rollout=self.rollout,
            variants=self.variants,
            expires_at=self.expires_at,
        )


def is_flag_key(key: str) -> bool:
    return len(key) <= MAX_KEY_LENGTH and _KEY.fullmatch(key) is not None


def define_flag(key: str, definition: FlagDefinition, *, created_at: datetime, now: datetime) -> Flag:
    """The flag `key` as `definition` describes it, cleaned; or `validation_failed` listing every
    invalid field. `created_at` is the stored flag's when it replaces one, else `now`."""
    errors: list[FieldError] = []
    if not is_flag_key(key):
        errors.append(
            FieldError(
                "key",
                f"1 to {MAX_KEY_LENGTH} lower-case letters and digits, words joined by '.', '-' or '_'",
                "invalid_key",
            )
        )
    description = definition.description.strip()
    if len(description) > MAX_DESCRIPTION_LENGTH:
        errors.append(FieldError("description", f"At most {MAX_DESCRIPTION_LENGTH} characters", "too_long"))
    elif any(unicodedata.category(char)[0] == "C" for char in description):
        errors.append(FieldError("description", "No control characters", "invalid"))
    if isinstance(definition.rollout, bool) or not 0 <= definition.rollout <= 100:
        errors.append(FieldError("rollout", "A percentage, 0 to 100", "out_of_range"))
    variants = _check_variants(definition, errors)
    names = {variant.name for variant in variants}
    default = _check_value(definition.kind, definition.default, names, "default", errors)
    rules = tuple(
        _check_rule(definition.kind, rule, names, f"rules[{index}]", errors)
        for index, rule in enumerate(definition.rules[:MAX_RULES])
    )
    if len(definition.rules) > MAX_RULES:
        errors.append(FieldError("rules", f"At most {MAX_RULES} rules", "too_many"))
    expires_at = definition.expires_at
    if expires_at is not None and (expires_at.tzinfo is None or expires_at.utcoffset() is None):
        errors.append(
            FieldError("expires_at", "A time with its offset (e.g. 2030-01-01T00:00:00Z)", "invalid")
        )
    if errors:
        raise DomainError(ErrorCode.VALIDATION_FAILED, "The flag is invalid; see errors", errors=errors)
    return Flag(
        key=key,
        description=description,
        kind=definition.kind,
        enabled=definition.enabled,
        default=default,
        rules=rules,
        rollout=definition.rollout,
        variants=variants,
        expires_at=None if expires_at is None else expires_at.astimezone(UTC),
        created_at=created_at,
        updated_at=now,
    )


def _check_variants(definition: FlagDefinition, errors: list[FieldError]) -> tuple[Variant, ...]:
    variants = definition.variants
    if definition.kind is FlagKind.BOOLEAN:
        if variants:
            errors.append(FieldError("variants", "Only variant flags have variants", "not_allowed"))
        return ()
    if not variants:
        errors.append(FieldError("variants", "A variant flag needs at least one variant", "required"))
        return ()
    if len(variants) > MAX_VARIANTS:
        errors.append(FieldError("variants", f"At most {MAX_VARIANTS} variants", "too_many"))
        return ()
    cleaned: list[Variant] = []
    seen: set[str] = set()
    for index, variant in enumerate(variants):
        name = variant.name.strip().lower()
        if not is_flag_key(name):
            errors.append(
                FieldError(
                    f"variants[{index}].name", "Lower-case letters, digits, '.', '-' or '_'", "invalid"
                )
            )
        elif name in seen:
            errors.append(FieldError(f"variants[{index}].name", "Variant names are unique", "duplicate"))
        seen.add(name)
        weight = variant.weight
        if isinstance(weight, bool) or not 0 <= weight <= TOTAL_VARIANT_WEIGHT:
            errors.append(
                FieldError(f"variants[{index}].weight", f"0 to {TOTAL_VARIANT_WEIGHT}", "out_of_range")
            )
        cleaned.append(Variant(name=name, weight=weight))
    total = sum(variant.weight for variant in variants)
    if total != TOTAL_VARIANT_WEIGHT:
        errors.append(
            FieldError(
                "variants",
                f"The weights are thousandths and add up to {TOTAL_VARIANT_WEIGHT} (they add up to {total})",
                "invalid_weights",
            )
        )
    return tuple(cleaned)


def _check_value(
    kind: FlagKind, value: FlagValue | None, variants: set[str], field: str, errors: list[FieldError]
) -> FlagValue:
    """A value the flag may serve: a boolean, or the name of one of its variants."""
    if kind is FlagKind.BOOLEAN:
        if value is None:
            return False
        if not isinstance(value, bool):
            errors.append(FieldError(field, "A boolean flag serves true or false", "invalid"))
        return value
    name = value.strip().lower() if isinstance(value, str) else None
    if name is None or name not in variants:
        listed = ", ".join(sorted(variants)) or "none yet"
        errors.append(
            FieldError(field, f"The name of one of the flag's variants ({listed})", "unknown_variant")
        )
        return ""
    return name


def _check_rule(kind: FlagKind, rule: Rule, variants: set[str], field: str, errors: list[FieldError]) -> Rule:
    serve = _check_value(kind, rule.serve, variants, f"{field}.serve", errors)
    if not rule.values:
        errors.append(FieldError(f"{field}.values", "At least one value", "required"))
        return rule
    if len(rule.values) > MAX_RULE_VALUES:
        errors.append(FieldError(f"{field}.values", f"At most {MAX_RULE_VALUES} values", "too_many"))
        return rule
    values = tuple(dict.fromkeys(value.strip().lower() for value in rule.values))  # order kept
    problem = next((problem for value in values if (problem := _value_problem(rule.attribute, value))), None)
    if problem is not None:
        errors.append(FieldError(f"{field}.values", problem, "invalid"))
    return Rule(attribute=rule.attribute, operator=rule.operator, values=values, serve=serve)


def _value_problem(attribute: Attribute, value: str) -> str | None:
    """What is wrong with one value of a rule on `attribute`, if anything."""
    if not value or len(value) > MAX_VALUE_LENGTH:
        return f"Values have 1 to {MAX_VALUE_LENGTH} characters"
    if attribute is Attribute.USER_ID and not is_id(value):
        return f"{value!r} is not a user id"
    if attribute is Attribute.ROLE and value not in set(Role):
        return f"{value!r} is not a role ({', '.join(Role)})"
    if attribute is Attribute.EMAIL_DOMAIN and _DOMAIN.fullmatch(value) is None:
        return f"{value!r} is not a domain name (e.g. example.com)"
    if attribute is Attribute.PLAN and _PLAN_CODE.fullmatch(value) is None:
        return f"{value!r} is not a plan code"
    return None
