"""The FeatureFlagRepository contract, run against PostgreSQL (fresh schema, migration 0007) and the
in-memory fake through the unit of work that hands it out: flags read back as written (rules,
variants and defaults of both kinds, times in UTC), listed by key; `put` inserts or replaces keeping
the creation time; deletes; transaction visibility; the table's refusals leave the unit of work
usable; and row locks order concurrent writers of one key.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import msgspec
import pytest

from core.flags.model import Attribute, Flag, FlagKind, Operator, Rule, Variant
from core.ports import Database, UnitOfWork
from tests.support.units_of_work import committed, read, still_waiting

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
USER_ID = "0190f0e4-1b2c-7d3e-8f40-123456789abc"


def make_flag(key: str = "new-editor", **changes: Any) -> Flag:
    flag = Flag(
        key=key,
        description="The new editor",
        kind=FlagKind.BOOLEAN,
        enabled=True,
        default=False,
        rules=(),
        rollout=25,
        variants=(),
        expires_at=None,
        created_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(flag, **changes)


def variant_flag(key: str = "button-color", **changes: Any) -> Flag:
    return make_flag(
        key,
        kind=FlagKind.VARIANT,
        default="control",
        rules=(
            Rule(attribute=Attribute.PLAN, operator=Operator.NOT_IN, values=("free", "pro"), serve="blue"),
            Rule(attribute=Attribute.USER_ID, values=(USER_ID,), serve="control"),
        ),
        variants=(
            Variant(name="control", weight=0),
            Variant(name="blue", weight=600),
            Variant(name="green", weight=400),
        ),
        expires_at=T0 + timedelta(days=30),
        **changes,
    )


async def put(db: Database, *flags: Flag) -> list[bool]:
    async def work(uow: UnitOfWork) -> list[bool]:
        return [await uow.feature_flags.put(flag) for flag in flags]

    return await committed(db, work)


async def stored(db: Database, key: str) -> Flag | None:
    return await read(db, lambda uow: uow.feature_flags.get(key))


async def test_flags_read_back_as_written_in_utc_listed_by_key(db: Database) -> None:
    plus_two = timezone(timedelta(hours=2))
    boolean = make_flag(
        "zeta", default=True, created_at=T0.astimezone(plus_two), updated_at=T0.astimezone(plus_two)
    )
    variant = variant_flag("alpha.beta")
    assert await put(db, boolean, variant) == [True, True]
    expected_boolean = msgspec.structs.replace(boolean, created_at=T0, updated_at=T0)
    assert await stored(db, "zeta") == expected_boolean
    assert await stored(db, "alpha.beta") == variant
    found = await stored(db, "alpha.beta")
    assert found is not None and found.created_at.utcoffset() == timedelta(0)
    assert found.expires_at is not None and found.expires_at.utcoffset() == timedelta(0)
    assert isinstance(found.rules[0].operator, Operator) and isinstance(found.kind, FlagKind)
    assert await read(db, lambda uow: uow.feature_flags.list()) == [variant, expected_boolean]
    assert await stored(db, "nothing-here") is None
    assert await stored(db, "Not A Key") is None
    assert await read(db, lambda uow: uow.feature_flags.get_for_update("Not A Key")) is None


async def test_put_replaces_whole_and_keeps_the_creation_time(db: Database) -> None:
    await put(db, variant_flag())
    later = T0 + timedelta(hours=1)
    replacement = make_flag("button-color", enabled=False, rollout=100, created_at=later, updated_at=later)
    assert await put(db, replacement) == [False]
    assert await stored(db, "button-color") == msgspec.structs.replace(replacement, created_at=T0)
    assert len(await read(db, lambda uow: uow.feature_flags.list())) == 1


async def test_delete_removes_once(db: Database) -> None:
    await put(db, make_flag("a"), make_flag("b"))
    assert await committed(db, lambda uow: uow.feature_flags.delete("a")) is True
    assert await committed(db, lambda uow: uow.feature_flags.delete("a")) is False
    assert await committed(db, lambda uow: uow.feature_flags.delete("Not A Key")) is False
    assert await stored(db, "a") is None
    assert [flag.key for flag in await read(db, lambda uow: uow.feature_flags.list())] == ["b"]
    assert await put(db, make_flag("a")) == [True]  # a deleted key can be used again


async def test_writes_are_seen_by_others_only_once_committed(db: Database) -> None:
    async with db.unit_of_work() as uow:
        assert await uow.feature_flags.put(make_flag()) is True
        assert await uow.feature_flags.get("new-editor") == make_flag()  # its own write
        assert await stored(db, "new-editor") is None
        await uow.rollback()
    assert await stored(db, "new-editor") is None
    await put(db, make_flag())
    async with db.unit_of_work() as uow:
        assert await uow.feature_flags.delete("new-editor") is True
        assert await uow.feature_flags.list() == []
        assert await stored(db, "new-editor") == make_flag()
    assert await stored(db, "new-editor") == make_flag()  # left without commit: rolled back


@pytest.mark.parametrize(
    "bad",
    [
        make_flag("Not A Key"),
        make_flag("-leading"),
        make_flag("k" * 65),
        make_flag(rollout=101),
        make_flag(rollout=-1),
        make_flag(created_at=datetime(2026, 1, 1)),  # naive
        make_flag(expires_at=datetime(2026, 1, 1)),
    ],
)
async def test_what_the_table_refuses_is_a_value_error_and_the_unit_of_work_goes_on(
    db: Database, bad: Flag
) -> None:
    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError):
            await uow.feature_flags.put(bad)
        assert await uow.feature_flags.put(make_flag("fine")) is True
        await uow.commit()
    assert [flag.key for flag in await read(db, lambda uow: uow.feature_flags.list())] == ["fine"]


async def test_get_for_update_makes_other_writers_of_the_key_wait(db: Database) -> None:
    await put(db, make_flag(rollout=10))
    async with db.unit_of_work() as first:
        locked = await first.feature_flags.get_for_update("new-editor")
        assert locked is not None and locked.rollout == 10

        async def second_writer() -> Flag | None:
            async with db.unit_of_work() as second:
                seen = await second.feature_flags.get_for_update("new-editor")
                await second.feature_flags.put(make_flag(rollout=(seen.rollout if seen else 0) + 5))
                await second.commit()
                return seen

        other = asyncio.create_task(second_writer())
        assert await still_waiting(other)
        assert await stored(db, "new-editor") == make_flag(rollout=10)  # plain reads do not wait
        await first.feature_flags.put(make_flag(rollout=50))
        await first.commit()
    seen = await other
    assert seen is not None and seen.rollout == 50  # it read what the first committed
    assert (await stored(db, "new-editor")) == make_flag(rollout=55)


async def test_a_concurrent_insert_of_the_same_key_is_waited_for_then_replaced(db: Database) -> None:
    async with db.unit_of_work() as first:
        assert await first.feature_flags.put(make_flag(rollout=1)) is True

        async def second_insert() -> bool:
            async with db.unit_of_work() as second:
                created = await second.feature_flags.put(make_flag(rollout=2))
                await second.commit()
                return created

        other = asyncio.create_task(second_insert())
        assert await still_waiting(other)
        await first.commit()
    assert await other is False
    assert await stored(db, "new-editor") == make_flag(rollout=2)


async def test_a_delete_waits_for_a_writer_and_sees_its_outcome(db: Database) -> None:
    await put(db, make_flag())
    async with db.unit_of_work() as first:
        assert await first.feature_flags.delete("new-editor") is True

        async def second_delete() -> bool:
            async with db.unit_of_work() as second:
                deleted = await second.feature_flags.delete("new-editor")
                await second.commit()
                return deleted

        other = asyncio.create_task(second_delete())
        assert await still_waiting(other)
        await first.commit()
    assert await other is False
