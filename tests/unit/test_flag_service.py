"""The feature flag use cases (`core.flags.service`) over the in-memory fakes: OpenFeature-style
errors for unknown flags and wrong types, operator changes audited without an actor, no-op
replacements that write nothing, evaluating a stored flag for a user by address."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from adapters.flag_cache import FlagSnapshotCache
from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.invalidation_bus import MemoryInvalidationBus
from core.accounts.context import Caller
from core.errors import DomainError, ErrorCode
from core.flags.evaluation import Evaluation, EvaluationContext, EvaluationError, Reason
from core.flags.model import Attribute, FlagDefinition, FlagKind, Rule, Variant
from core.flags.service import FeatureFlags, FlagAdministration
from tests.support.billing_data import add_users, make_user

CALLER = Caller(correlation_id="cli:flags")


class World:
    def __init__(self) -> None:
        self.database = MemoryDatabase()
        self.clock = ManualClock(datetime(2026, 3, 1, tzinfo=UTC))
        self.cache = FlagSnapshotCache(MemoryInvalidationBus(), monotonic=self.clock.monotonic)
        self.flags = FeatureFlags(database=self.database, cache=self.cache, clock=self.clock)
        self.admin = FlagAdministration(
            database=self.database, cache=self.cache, ids=SequentialIds(), clock=self.clock
        )


@pytest.fixture
def world() -> World:
    return World()


async def test_unknown_flags_and_wrong_types_resolve_to_the_callers_default(world: World) -> None:
    user = EvaluationContext(user_id="u")
    assert await world.flags.evaluate("missing", user, "fallback") == Evaluation(
        value="fallback", reason=Reason.ERROR, error_code=EvaluationError.FLAG_NOT_FOUND
    )
    assert await world.flags.is_enabled("missing", user) is False
    assert await world.flags.is_enabled("missing", user, default=True) is True
    variants = [Variant(name="a", weight=1000)]
    await world.admin.put(
        None, "v", FlagDefinition(kind=FlagKind.VARIANT, default="a", variants=variants), CALLER
    )
    assert await world.flags.evaluate("v", user, True) == Evaluation(
        value=True, reason=Reason.ERROR, error_code=EvaluationError.TYPE_MISMATCH
    )
    assert await world.flags.is_enabled("v", user) is False
    assert (await world.flags.evaluate("v", user, "b")).reason is Reason.DISABLED


async def test_operator_changes_are_audited_without_an_actor_and_no_ops_write_nothing(world: World) -> None:
    flag, created = await world.admin.put(None, "a", FlagDefinition(enabled=True, rollout=10), CALLER)
    assert created and flag.rollout == 10
    world.clock.advance(60)
    again, created = await world.admin.put(None, "a", FlagDefinition(enabled=True, rollout=10), CALLER)
    assert (again, created) == (flag, False)  # the same definition: nothing stored, nothing audited
    changed, created = await world.admin.put(None, "a", FlagDefinition(enabled=True, rollout=30), CALLER)
    assert not created and changed.updated_at > flag.updated_at and changed.created_at == flag.created_at
    await world.admin.delete(None, "a", CALLER)
    audit = world.database.committed_audit()
    assert [(r.action.value, r.actor_id, r.target_id, r.correlation_id) for r in audit] == [
        ("feature_flag.created", None, "a", "cli:flags"),
        ("feature_flag.updated", None, "a", "cli:flags"),
        ("feature_flag.deleted", None, "a", "cli:flags"),
    ]
    assert audit[1].details == {"changes": {"rollout": {"before": 10, "after": 30}}}
    assert audit[0].details["changes"]["enabled"] == {"before": None, "after": True}
    with pytest.raises(DomainError) as error:
        await world.admin.delete(None, "a", CALLER)
    assert error.value.code is ErrorCode.NOT_FOUND


async def test_an_invalid_definition_stores_nothing(world: World) -> None:
    with pytest.raises(DomainError) as error:
        await world.admin.put(None, "a", FlagDefinition(rollout=-5), CALLER)
    assert error.value.code is ErrorCode.VALIDATION_FAILED
    assert await world.admin.list(None) == []
    assert world.database.committed_audit() == []


async def test_evaluate_for_a_user_by_address(world: World) -> None:
    ids = SequentialIds()
    ada = make_user(ids, "ada@example.com")
    await add_users(world.database, ada)
    rule = Rule(attribute=Attribute.EMAIL_DOMAIN, values=("example.com",), serve=True)
    await world.admin.put(None, "beta", FlagDefinition(enabled=True, rollout=0, rules=[rule]), CALLER)
    assert await world.admin.evaluate_for(None, "beta", " ADA@example.com ") == Evaluation(
        value=True, reason=Reason.TARGETING_MATCH
    )
    for key, email in (("beta", "nobody@example.com"), ("nothing", "ada@example.com")):
        with pytest.raises(DomainError) as error:
            await world.admin.evaluate_for(None, key, email)
        assert error.value.code is ErrorCode.NOT_FOUND
    with pytest.raises(DomainError) as error:
        await world.admin.evaluate_for(None, "beta", "not an address")
    assert error.value.code is ErrorCode.VALIDATION_FAILED


async def test_reads_come_from_the_snapshot_until_a_change(world: World) -> None:
    await world.admin.put(None, "a", FlagDefinition(enabled=True), CALLER)
    user = EvaluationContext(user_id="u")
    for _ in range(5):
        assert await world.flags.is_enabled("a", user)
    assert world.cache.loads == 1
    await world.admin.put(None, "a", FlagDefinition(enabled=False), CALLER)
    assert not await world.flags.is_enabled("a", user)
    assert world.cache.loads == 2
