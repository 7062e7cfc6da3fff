"""The pure feature flag rules (`core.flags`): MurmurHash3 against the `mmh3` package, bucketing as
Unleash's clients do it, the issue's distribution properties, evaluation reasons, and validation.

Distributions are checked on 10 000 users with ids as Pictor makes them (UUIDv7). A 1-point bound
at 25 % is 2.3 standard deviations, so it holds for most flag keys, not all: that test names its
keys. The variant property uses a 2-point bound (at least 4 standard deviations) over generated
weights, derandomized so that it is the same check on every run.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import mmh3
import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.memory.ids import SequentialIds
from core.errors import DomainError, ErrorCode
from core.flags.evaluation import (
    Evaluation,
    EvaluationContext,
    EvaluationError,
    Reason,
    evaluate,
    in_rollout,
    pick_variant,
    rollout_bucket,
)
from core.flags.model import (
    Attribute,
    Flag,
    FlagDefinition,
    FlagKind,
    Operator,
    Rule,
    Variant,
    define_flag,
)
from core.flags.murmur import murmur3_32

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
_IDS = SequentialIds()
USERS = [_IDS.new_id() for _ in range(10_000)]
keys = st.from_regex(r"[a-z0-9]{1,12}([._-][a-z0-9]{1,12}){0,3}", fullmatch=True)
user_ids = st.uuids().map(str)


def flag(key: str = "new-editor", **fields: Any) -> Flag:
    return define_flag(key, FlagDefinition(**{"enabled": True, **fields}), created_at=NOW, now=NOW)


def context(user_id: str | None = None, **fields: Any) -> EvaluationContext:
    return EvaluationContext(user_id=user_id or USERS[0], **fields)


def field_errors(error: pytest.ExceptionInfo[DomainError]) -> dict[str, str]:
    assert error.value.code is ErrorCode.VALIDATION_FAILED
    return {field.field: field.code for field in error.value.errors}


# --- the hash and the buckets --------------------------------------------------------------------


@given(data=st.binary(max_size=64) | st.text(max_size=40), seed=st.integers(0, 2**32 - 1))
def test_murmur3_is_mmh3s_unsigned_32_bit_hash(data: bytes | str, seed: int) -> None:
    assert murmur3_32(data, seed) == mmh3.hash(data, seed, signed=False)


def test_murmur3_known_values() -> None:
    # The published MurmurHash3_x86_32 test vectors (SMHasher's verification strings).
    assert murmur3_32(b"", 0) == 0
    assert murmur3_32(b"", 1) == 0x514E28B7
    assert murmur3_32(b"", 0xFFFFFFFF) == 0x81F16F39
    assert murmur3_32(b"\x00\x00\x00\x00", 0) == 0x2362F9DE
    assert murmur3_32(b"Hello, world!", 1234) == 0xFAF6CDB3
    assert murmur3_32(b"The quick brown fox jumps over the lazy dog", 0x9747B28C) == 0x2FA826CD


@given(key=keys, user=user_ids)
def test_buckets_are_unleash_normalized_hashes(key: str, user: str) -> None:
    # unleash-client-python utils.normalized_hash(identifier, activation_group, normalizer, seed):
    # mmh3.hash(f"{activation_group}:{identifier}", signed=False, seed=seed) % normalizer + 1
    assert rollout_bucket(key, user) == mmh3.hash(f"{key}:{user}", signed=False, seed=0) % 100 + 1
    weights = [Variant(name="a", weight=333), Variant(name="b", weight=667)]
    # Variants.get_variant: normalized_hash(seed, group_id, total_weight, seed=VARIANT_HASH_SEED)
    target = mmh3.hash(f"{key}:{user}", signed=False, seed=86028157) % 1000 + 1
    assert pick_variant(key, user, weights) == (weights[0] if target <= 333 else weights[1])


@given(key=keys, user=user_ids, lower=st.integers(0, 100), raise_by=st.integers(0, 100))
def test_raising_the_percentage_keeps_everyone_in(key: str, user: str, lower: int, raise_by: int) -> None:
    higher = min(100, lower + raise_by)
    if in_rollout(key, user, lower):
        assert in_rollout(key, user, higher)
    assert in_rollout(key, user, 100)
    assert not in_rollout(key, user, 0)
    assert in_rollout(key, user, lower) == in_rollout(key, user, lower)  # stable across calls


@pytest.mark.parametrize("key", ["new-editor", "beta-style-sunset", "checkout.v2"])
def test_a_quarter_of_10000_users_then_half_keeping_the_quarter(key: str) -> None:
    quarter = {user for user in USERS if in_rollout(key, user, 25)}
    assert 2400 <= len(quarter) <= 2600
    half = {user for user in USERS if in_rollout(key, user, 50)}
    assert 4900 <= len(half) <= 5100
    assert quarter <= half
    # Evaluating the flag says the same, with the reason.
    at_25 = [evaluate(flag(key, rollout=25), context(user), NOW) for user in USERS]
    assert {user for user, e in zip(USERS, at_25, strict=True) if e.value is True} == quarter
    assert {e.reason for e in at_25} == {Reason.SPLIT, Reason.DEFAULT}


@st.composite
def weight_splits(draw: st.DrawFn) -> list[int]:
    """2 to 4 weights in thousandths adding up to 1000."""
    cuts = sorted(draw(st.lists(st.integers(0, 1000), min_size=1, max_size=3)))
    return [b - a for a, b in zip([0, *cuts], [*cuts, 1000], strict=True)]


@settings(max_examples=25, derandomize=True, deadline=None)
@given(key=keys, weights=weight_splits())
def test_variants_follow_their_weights_within_two_points(key: str, weights: list[int]) -> None:
    variants = [Variant(name=f"v{i}", weight=w) for i, w in enumerate(weights)]
    counts = dict.fromkeys((v.name for v in variants), 0)
    for user in USERS:
        chosen = pick_variant(key, user, variants)
        assert chosen is not None
        counts[chosen.name] += 1
    for variant in variants:
        share = 100 * counts[variant.name] / len(USERS)
        assert abs(share - variant.weight / 10) <= 2, (variant, share)
        if variant.weight == 0:
            assert counts[variant.name] == 0


@given(key=keys, user=user_ids, weights=weight_splits())
def test_a_users_variant_is_stable_and_independent_of_the_rollout_hash(
    key: str, user: str, weights: list[int]
) -> None:
    variants = [Variant(name=f"v{i}", weight=w) for i, w in enumerate(weights)]
    f = flag(key, kind=FlagKind.VARIANT, variants=variants, default="v0", rollout=100)
    first = evaluate(f, context(user), NOW)
    assert evaluate(f, context(user), NOW) == first
    assert first.variant == first.value == pick_variant(key, user, variants).name  # type: ignore[union-attr]


# --- evaluation ----------------------------------------------------------------------------------


def test_switched_off_expired_and_outside_the_rollout_serve_the_default() -> None:
    user = context(plan="pro")
    assert evaluate(flag(enabled=False), user, NOW) == _e(False, Reason.DISABLED)
    expired = flag(expires_at=NOW)
    assert expired.is_stale(NOW) and not expired.is_stale(NOW - timedelta(microseconds=1))
    assert evaluate(expired, user, NOW) == _e(False, Reason.STALE)
    assert evaluate(expired, user, NOW - timedelta(seconds=1)) == _e(True, Reason.STATIC)
    # Expiry wins over rules, rules over the rollout.
    rule = Rule(attribute=Attribute.PLAN, values=("pro",), serve=True)
    assert evaluate(flag(expires_at=NOW, rules=[rule]), user, NOW).reason is Reason.STALE
    assert evaluate(flag(rollout=0, rules=[rule]), user, NOW) == _e(True, Reason.TARGETING_MATCH)
    assert evaluate(flag(rollout=0), user, NOW) == _e(False, Reason.DEFAULT)


def test_a_boolean_flag_serves_the_opposite_of_its_default_to_those_inside() -> None:
    kill_switch = flag(default=True)  # on for everyone unless the flag applies: then off
    assert evaluate(kill_switch, context(), NOW) == _e(False, Reason.STATIC)
    assert evaluate(flag(default=True, enabled=False), context(), NOW) == _e(True, Reason.DISABLED)


def test_rules_match_on_user_plan_role_and_email_domain_in_order() -> None:
    ada = context(USERS[1], plan="free", role="user", email="Ada@Example.COM")
    rules = [
        Rule(attribute=Attribute.USER_ID, values=(USERS[2],), serve=False),
        Rule(attribute=Attribute.EMAIL_DOMAIN, values=("example.com",), serve=True),
        Rule(attribute=Attribute.PLAN, operator=Operator.NOT_IN, values=("pro",), serve=False),
    ]
    f = flag(rules=rules, rollout=0)
    assert evaluate(f, ada, NOW) == _e(True, Reason.TARGETING_MATCH)  # the domain rule, first to match
    assert evaluate(f, context(USERS[2], email="x@example.com"), NOW) == _e(False, Reason.TARGETING_MATCH)
    assert evaluate(f, context(USERS[3], plan="free"), NOW) == _e(False, Reason.TARGETING_MATCH)
    assert evaluate(f, context(USERS[3], plan="pro"), NOW) == _e(False, Reason.DEFAULT)
    # An attribute the user lacks matches neither `in` nor `not_in`.
    no_plan = flag(
        rules=[Rule(attribute=Attribute.PLAN, operator=Operator.NOT_IN, values=("pro",), serve=True)]
    )
    assert evaluate(no_plan, context(USERS[3]), NOW).reason is not Reason.TARGETING_MATCH
    admins = flag(rules=[Rule(attribute=Attribute.ROLE, values=("admin",), serve=True)], rollout=0)
    assert evaluate(admins, context(role="admin"), NOW).value is True
    assert evaluate(admins, context(role="user"), NOW).value is False


def test_a_variant_flag_serves_variant_names() -> None:
    variants = [
        Variant(name="control", weight=0),
        Variant(name="blue", weight=500),
        Variant(name="green", weight=500),
    ]
    rule = Rule(attribute=Attribute.PLAN, values=("team",), serve="control")
    f = flag("button-color", kind=FlagKind.VARIANT, variants=variants, default="control", rules=[rule])
    served = {evaluate(f, context(user), NOW).value for user in USERS[:200]}
    assert served == {"blue", "green"}
    assert evaluate(f, context(plan="team"), NOW) == _e("control", Reason.TARGETING_MATCH, "control")
    off = msgspec.structs.replace(f, enabled=False)
    assert evaluate(off, context(), NOW) == _e("control", Reason.DISABLED, "control")
    single = flag("one", kind=FlagKind.VARIANT, variants=[Variant(name="only", weight=1000)], default="only")
    assert evaluate(single, context(), NOW) == _e("only", Reason.STATIC, "only")


def test_bucketing_without_a_user_is_an_error_serving_the_default() -> None:
    result = evaluate(flag(rollout=50), EvaluationContext(user_id=""), NOW)
    assert result == Evaluation(
        value=False, reason=Reason.ERROR, error_code=EvaluationError.TARGETING_KEY_MISSING
    )
    assert evaluate(flag(rollout=100), EvaluationContext(user_id=""), NOW).value is True  # no bucket needed


def _e(value: bool | str, reason: Reason, variant: str | None = None) -> Evaluation:
    return Evaluation(value=value, variant=variant, reason=reason)


# --- validation ----------------------------------------------------------------------------------


def test_a_definition_is_cleaned() -> None:
    f = define_flag(
        "beta.sunset-style_2",
        FlagDefinition(
            description="  The sunset style  ",
            kind=FlagKind.VARIANT,
            default=" Control ",
            variants=[Variant(name="Control", weight=250), Variant(name="treatment", weight=750)],
            rules=[
                Rule(
                    attribute=Attribute.EMAIL_DOMAIN,
                    values=("Example.com", "example.com "),
                    serve="TREATMENT",
                )
            ],
            expires_at=datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1))),
        ),
        created_at=NOW - timedelta(days=1),
        now=NOW,
    )
    assert f.description == "The sunset style"
    assert f.default == "control"
    assert f.variants[0].name == "control"
    assert f.rules[0].values == ("example.com",)
    assert f.rules[0].serve == "treatment"
    assert f.expires_at == datetime(2030, 1, 1, tzinfo=UTC)
    assert (f.created_at, f.updated_at) == (NOW - timedelta(days=1), NOW)
    assert f.definition() == FlagDefinition(
        description=f.description,
        kind=f.kind,
        enabled=False,
        default="control",
        rules=f.rules,
        rollout=100,
        variants=f.variants,
        expires_at=f.expires_at,
    )
    assert flag().default is False  # a boolean flag's default may be left out


def test_every_invalid_field_is_reported_at_once() -> None:
    with pytest.raises(DomainError) as error:
        define_flag(
            "Not A Key!",
            FlagDefinition(
                description="tab\there",
                kind=FlagKind.BOOLEAN,
                default="yes",
                rollout=101,
                variants=[Variant(name="a", weight=1000)],
                rules=[
                    Rule(attribute=Attribute.USER_ID, values=("not-an-id",), serve=True),
                    Rule(attribute=Attribute.ROLE, values=("owner",), serve="on"),
                    Rule(attribute=Attribute.EMAIL_DOMAIN, values=(), serve=True),
                    Rule(attribute=Attribute.EMAIL_DOMAIN, values=("no spaces.com",), serve=True),
                    Rule(attribute=Attribute.PLAN, values=("Pro Plan",), serve=False),
                ],
                expires_at=datetime(2030, 1, 1),  # naive
            ),
            created_at=NOW,
            now=NOW,
        )
    assert field_errors(error) == {
        "key": "invalid_key",
        "description": "invalid",
        "default": "invalid",
        "rollout": "out_of_range",
        "variants": "not_allowed",
        "rules[0].values": "invalid",
        "rules[1].serve": "invalid",
        "rules[1].values": "invalid",
        "rules[2].values": "required",
        "rules[3].values": "invalid",
        "rules[4].values": "invalid",
        "expires_at": "invalid",
    }


def test_variant_flags_need_unique_named_variants_weighing_1000_and_a_known_default() -> None:
    with pytest.raises(DomainError) as error:
        define_flag("v", FlagDefinition(kind=FlagKind.VARIANT), created_at=NOW, now=NOW)
    assert field_errors(error) == {"variants": "required", "default": "unknown_variant"}
    with pytest.raises(DomainError) as error:
        define_flag(
            "v",
            FlagDefinition(
                kind=FlagKind.VARIANT,
                default="c",
                variants=[
                    Variant(name="a", weight=600),
                    Variant(name="A", weight=300),
                    Variant(name="b c", weight=-1),
                    Variant(name="d", weight=1001),
                ],
                rules=[Rule(attribute=Attribute.PLAN, values=("pro",), serve=True)],
            ),
            created_at=NOW,
            now=NOW,
        )
    assert field_errors(error) == {
        "variants[1].name": "duplicate",
        "variants[2].name": "invalid",
        "variants[2].weight": "out_of_range",
        "variants[3].weight": "out_of_range",
        "variants": "invalid_weights",
        "default": "unknown_variant",
        "rules[0].serve": "unknown_variant",
    }


def test_limits_on_sizes() -> None:
    many_values = tuple(f"d{i}.example.com" for i in range(1001))
    with pytest.raises(DomainError) as error:
        define_flag(
            "k" * 65,
            FlagDefinition(
                description="x" * 501,
                rules=[Rule(attribute=Attribute.EMAIL_DOMAIN, values=many_values, serve=True)]
                + [Rule(attribute=Attribute.PLAN, values=("pro",), serve=True)] * 50,
            ),
            created_at=NOW,
            now=NOW,
        )
    assert field_errors(error) == {
        "key": "invalid_key",
        "description": "too_long",
        "rules[0].values": "too_many",
        "rules": "too_many",
    }
    assert flag("k" * 64).key == "k" * 64
