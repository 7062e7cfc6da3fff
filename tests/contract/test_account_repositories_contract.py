"""The account repositories' contract (users, API keys, one-time tokens, audit log).

Run against PostgreSQL (fresh schema, migrated) and the in-memory fake, through the unit of work that
hands them out, so the fake is held to the real tables: unique normalized emails, keyset order by
time-ordered ids, atomic token consumption, and the transaction rules of the outbox contract.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, TypeVar

import msgspec
import pytest

from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from core.accounts.api_keys import ApiKey
from core.accounts.audit import AuditAction, AuditRecord
from core.accounts.tokens import OneTimeToken, TokenPurpose
from core.accounts.users import Role, User, UserStatus
from core.errors import DomainError, ErrorCode
from core.outbox import OutboxMessage
from core.ports import Database, UnitOfWork
from tests.support.units_of_work import committed, read

T = TypeVar("T")
T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)
NOT_A_UUID = "not-a-uuid"


@pytest.fixture(params=["memory", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory fake; a fresh PostgreSQL schema's URL otherwise."""
    return None if request.param == "memory" else request.getfixturevalue("postgres_url")


@pytest.fixture
async def db(backend_url: str | None) -> AsyncIterator[Database]:
    if backend_url is None:
        yield MemoryDatabase()
        return
    from adapters.postgres import PostgresDatabase, apply_migrations, open_pool

    await apply_migrations(backend_url)
    pool = await open_pool(backend_url, min_size=1, max_size=4, name="accounts-contract")
    try:
        yield PostgresDatabase(pool)
    finally:
        await pool.close()


@pytest.fixture
def ids() -> SequentialIds:
    """UUIDv7-shaped ids that increase: later ids are newer."""
    return SequentialIds()


def make_user(ids: SequentialIds, normalized: str, **changes: Any) -> User:
    user = User(
        id=ids.new_id(),
        email=normalized.title(),
        email_normalized=normalized,
        display_name="Ada",
        role=Role.USER,
        status=UserStatus.ACTIVE,
        email_verified=False,
        password_hash="$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
        plan="free",
        created_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(user, **changes)


def make_key(ids: SequentialIds, user: User, key_hash: str, **changes: Any) -> ApiKey:
    key = ApiKey(
        id=ids.new_id(),
        user_id=user.id,
        name=f"key {key_hash}",
        prefix="pk_live_Ab12",
        key_hash=key_hash,
        scopes=["generations:read", "generations:write"],
        allowed_ips=["203.0.113.0/24", "2001:db8::/32"],
        created_at=T0,
    )
    return msgspec.structs.replace(key, **changes)


def make_token(user: User, token_hash: str, **changes: Any) -> OneTimeToken:
    token = OneTimeToken(
        token_hash=token_hash,
        purpose=TokenPurpose.RESET_PASSWORD,
        user_id=user.id,
        created_at=T0,
        expires_at=T0 + timedelta(hours=1),
    )
    return msgspec.structs.replace(token, **changes)


def make_record(ids: SequentialIds, action: AuditAction, **changes: Any) -> AuditRecord:
    record = AuditRecord(id=ids.new_id(), occurred_at=T0, action=action, actor_id=None)
    return msgspec.structs.replace(record, **changes)


async def add_users(db: Database, *users: User) -> None:
    async with db.unit_of_work() as uow:
        for user in users:
            await uow.users.add(user)
        await uow.commit()


# Users


async def test_a_user_reads_back_as_written_by_id_and_by_email(db: Database, ids: SequentialIds) -> None:
    user = make_user(
        ids,
        "ada@example.com",
        role=Role.ADMIN,
        email_verified=True,
        plan="pro",
        created_at=datetime(2026, 3, 1, 14, 0, tzinfo=timezone(timedelta(hours=2))),
        updated_at=T0 + timedelta(seconds=1),
    )
    await add_users(db, user)

    by_id = await read(db, lambda uow: uow.users.get(user.id))
    by_email = await read(db, lambda uow: uow.users.get_by_email("ada@example.com"))

    expected = User(
        id=user.id,
        email="Ada@Example.Com",
        email_normalized="ada@example.com",
        display_name="Ada",
        role=Role.ADMIN,
        status=UserStatus.ACTIVE,
        email_verified=True,
        password_hash=user.password_hash,
        plan="pro",
        created_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        updated_at=T0 + timedelta(seconds=1),
    )
    assert by_id == expected
    assert by_email == expected
    assert by_id is not None and by_id.created_at.utcoffset() == timedelta(0)
    assert by_id.role is Role.ADMIN and by_id.status is UserStatus.ACTIVE


async def test_unknown_and_malformed_user_ids_find_nothing(db: Database, ids: SequentialIds) -> None:
    await add_users(db, make_user(ids, "ada@example.com"))

    async with db.unit_of_work() as uow:
        assert await uow.users.get(ids.new_id()) is None
        assert await uow.users.get(NOT_A_UUID) is None
        assert await uow.users.get(f"{{{ids.new_id()}}}") is None  # only the canonical form is an id
        assert await uow.users.get_by_email("ADA@example.com") is None  # callers pass the normalized form
        # Nothing above broke the transaction.
        assert await uow.users.get_by_email("ada@example.com") is not None


async def test_update_replaces_the_user_but_keeps_created_at(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    changed = make_user(
        ids,
        "ada.lovelace@example.com",
        id=user.id,
        email="Ada.Lovelace@example.com",
        display_name=None,
        role=Role.ADMIN,
        status=UserStatus.SUSPENDED,
        email_verified=True,
        password_hash="$argon2id$new",
        plan="studio",
        created_at=T0 + timedelta(days=9),  # not a column update writes
        updated_at=T0 + timedelta(days=1),
    )

    await committed(db, lambda uow: uow.users.update(changed))

    stored = await read(db, lambda uow: uow.users.get(user.id))
    assert stored == msgspec.structs.replace(changed, created_at=T0)
    assert stored is not None
    assert (stored.email, stored.email_normalized, stored.display_name) == (
        "Ada.Lovelace@example.com",
        "ada.lovelace@example.com",
        None,
    )
    assert (stored.role, stored.status, stored.email_verified) == (Role.ADMIN, UserStatus.SUSPENDED, True)
    assert (stored.password_hash, stored.plan) == ("$argon2id$new", "studio")
    assert (stored.created_at, stored.updated_at) == (T0, T0 + timedelta(days=1))
    assert await read(db, lambda uow: uow.users.get_by_email("ada@example.com")) is None


async def test_updating_an_unknown_user_stores_nothing(db: Database, ids: SequentialIds) -> None:
    ghost = make_user(ids, "ghost@example.com")
    await committed(db, lambda uow: uow.users.update(ghost))

    assert await read(db, lambda uow: uow.users.get(ghost.id)) is None
    assert await read(db, lambda uow: uow.users.get_by_email("ghost@example.com")) is None


async def test_a_taken_email_is_email_taken_and_the_unit_of_work_still_commits(
    db: Database, ids: SequentialIds
) -> None:
    first = make_user(ids, "ada@example.com")
    await add_users(db, first)
    # Typed differently by the user; the repository compares the normalized form.
    duplicate = make_user(ids, "ada@example.com", email="ADA@EXAMPLE.COM")
    other = make_user(ids, "grace@example.com")

    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.users.add(duplicate)
        await uow.users.add(other)
        await uow.commit()

    assert raised.value.code is ErrorCode.EMAIL_TAKEN
    assert await read(db, lambda uow: uow.users.get(duplicate.id)) is None
    assert await read(db, lambda uow: uow.users.get(other.id)) == other
    stored = await read(db, lambda uow: uow.users.get_by_email("ada@example.com"))
    assert stored is not None and stored.id == first.id


async def test_an_email_added_twice_in_one_unit_of_work_is_email_taken(
    db: Database, ids: SequentialIds
) -> None:
    async with db.unit_of_work() as uow:
        await uow.users.add(make_user(ids, "ada@example.com"))
        with pytest.raises(DomainError) as raised:
            await uow.users.add(make_user(ids, "ada@example.com"))
        await uow.commit()

    assert raised.value.code is ErrorCode.EMAIL_TAKEN
    assert len(await read(db, lambda uow: uow.users.list(limit=10))) == 1


async def test_updating_to_a_taken_email_is_email_taken_and_keeps_the_unit_of_work_usable(
    db: Database, ids: SequentialIds
) -> None:
    ada, grace = make_user(ids, "ada@example.com"), make_user(ids, "grace@example.com")
    await add_users(db, ada, grace)
    stolen = make_user(ids, "ada@example.com", id=grace.id, updated_at=T0 + timedelta(hours=1))
    renamed = make_user(ids, "ada@example.com", id=ada.id, display_name="Countess")

    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.users.update(stolen)
        await uow.users.update(renamed)  # keeping one's own email is no conflict
        await uow.commit()

    assert raised.value.code is ErrorCode.EMAIL_TAKEN
    assert await read(db, lambda uow: uow.users.get(grace.id)) == grace
    stored = await read(db, lambda uow: uow.users.get(ada.id))
    assert stored is not None and stored.display_name == "Countess"


async def test_a_reused_user_id_is_a_conflict(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)

    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.users.add(make_user(ids, "other@example.com", id=user.id))
        await uow.commit()

    assert raised.value.code is ErrorCode.CONFLICT
    assert await read(db, lambda uow: uow.users.get_by_email("other@example.com")) is None


async def test_user_writes_are_isolated_until_commit_and_discarded_by_rollback(
    db: Database, ids: SequentialIds
) -> None:
    kept, dropped, raised = (make_user(ids, f"{name}@example.com") for name in ("kept", "dropped", "raised"))

    async with db.unit_of_work() as uow:
        await uow.users.add(kept)
        assert await uow.users.get(kept.id) == kept  # reads its own write
        assert await read(db, lambda other: other.users.get(kept.id)) is None
        await uow.commit()

    async with db.unit_of_work() as uow:
        await uow.users.add(dropped)
        await uow.users.update(make_user(ids, "kept@example.com", id=kept.id, plan="pro"))
        await uow.rollback()

    async def fail_half_way() -> None:
        async with db.unit_of_work() as uow:
            await uow.users.add(raised)
            raise ZeroDivisionError

    with pytest.raises(ZeroDivisionError):
        await fail_half_way()

    assert [u.id for u in await read(db, lambda uow: uow.users.list(limit=10))] == [kept.id]
    assert await read(db, lambda uow: uow.users.get(kept.id)) == kept


async def test_account_and_outbox_writes_commit_or_roll_back_together(
    db: Database, ids: SequentialIds
) -> None:
    user = make_user(ids, "ada@example.com")
    event = OutboxMessage(id="e1", type="user.registered", occurred_at=T0, payload={"user_id": user.id})

    async with db.unit_of_work() as uow:
        await uow.users.add(user)
        await uow.audit.add(make_record(ids, AuditAction.REGISTERED, actor_id=user.id))
        await uow.outbox.add(event)

    assert await read(db, lambda uow: uow.users.get(user.id)) is None
    assert await read(db, lambda uow: uow.audit.list(limit=10)) == []
    assert await read(db, lambda uow: uow.outbox.claim_unpublished(10)) == []


async def test_an_email_another_unit_of_work_is_adding_waits_for_its_outcome(
    db: Database, ids: SequentialIds
) -> None:
    async with db.unit_of_work() as first, db.unit_of_work() as second:
        await first.users.add(make_user(ids, "ada@example.com"))
        duplicate = asyncio.create_task(second.users.add(make_user(ids, "ada@example.com")))
        await asyncio.sleep(0)  # let the second insert start while the first is uncommitted
        await first.commit()
        with pytest.raises(DomainError) as raised:
            await duplicate
    assert raised.value.code is ErrorCode.EMAIL_TAKEN

    retried = make_user(ids, "grace@example.com")
    async with db.unit_of_work() as first, db.unit_of_work() as second:
        await first.users.add(make_user(ids, "grace@example.com"))
        retry = asyncio.create_task(second.users.add(retried))
        await asyncio.sleep(0)
        await first.rollback()
        await retry  # the first insert is gone: this one goes through
        await second.commit()

    stored = await read(db, lambda uow: uow.users.get_by_email("grace@example.com"))
    assert stored == retried


async def test_the_user_list_is_newest_first_in_keyset_pages(db: Database, ids: SequentialIds) -> None:
    users = [make_user(ids, f"user{n}@example.com") for n in range(7)]
    # Added out of order: only the ids can give the order.
    await add_users(db, *users[3:], *users[:3])
    newest_first = [u.id for u in reversed(users)]

    async def page(after: str | None) -> list[User]:
        return await read(db, lambda uow: uow.users.list(after=after, limit=3))

    pages: list[list[str]] = []
    found = await page(None)
    while found:
        pages.append([u.id for u in found])
        found = await page(found[-1].id)

    assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:7]]
    assert await read(db, lambda uow: uow.users.list(limit=0)) == []


async def test_the_user_list_filters_by_email_substring_and_status(db: Database, ids: SequentialIds) -> None:
    ada = make_user(ids, "ada@example.com")
    ada_percent = make_user(ids, "ada%x@example.org")
    bob = make_user(ids, "bob_b@example.com", status=UserStatus.SUSPENDED)
    bobby = make_user(ids, "bobxb@example.com", status=UserStatus.SUSPENDED)
    grace = make_user(ids, "grace@example.org")
    await add_users(db, ada, ada_percent, bob, bobby, grace)

    async def emails(**filters: object) -> list[str]:
        found = await read(db, lambda uow: uow.users.list(limit=10, **filters))
        return [u.email_normalized for u in found]

    assert await emails(email="ada") == ["ada%x@example.org", "ada@example.com"]
    assert await emails(email="example.org") == ["grace@example.org", "ada%x@example.org"]
    # LIKE's wildcards in the filter are matched literally.
    assert await emails(email="%") == ["ada%x@example.org"]
    assert await emails(email="b_b") == ["bob_b@example.com"]
    assert await emails(status=UserStatus.SUSPENDED) == ["bobxb@example.com", "bob_b@example.com"]
    assert await emails(status=UserStatus.ACTIVE, email=".com") == ["ada@example.com"]
    assert await emails(status=UserStatus.SUSPENDED, after=bobby.id) == ["bob_b@example.com"]
    assert await emails(email="nobody") == []


async def test_a_malformed_cursor_is_invalid_cursor(db: Database) -> None:
    async with db.unit_of_work() as uow:
        for listing in (uow.users.list(after=NOT_A_UUID, limit=5), uow.audit.list(after="", limit=5)):
            with pytest.raises(DomainError) as raised:
                await listing
            assert raised.value.code is ErrorCode.INVALID_CURSOR


# API keys


async def test_an_api_key_reads_back_by_its_hash(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    key = make_key(
        ids,
        user,
        "h1",
        allowed_ips=[],
        expires_at=datetime(2026, 4, 1, 2, 0, tzinfo=timezone(timedelta(hours=2))),
    )
    key_with_ips = make_key(ids, user, "h2")

    async def add(uow: UnitOfWork) -> None:
        await uow.api_keys.add(key)
        await uow.api_keys.add(key_with_ips)

    await committed(db, add)

    stored = await read(db, lambda uow: uow.api_keys.get_by_hash("h1"))
    assert stored == key
    assert stored is not None and stored.expires_at == datetime(2026, 4, 1, tzinfo=UTC)
    assert stored.expires_at.utcoffset() == timedelta(0)
    assert await read(db, lambda uow: uow.api_keys.get_by_hash("h2")) == key_with_ips
    assert await read(db, lambda uow: uow.api_keys.get_by_hash("unknown")) is None


async def test_a_key_for_an_unknown_user_is_refused(db: Database, ids: SequentialIds) -> None:
    ghost = make_user(ids, "ghost@example.com")
    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError):
            await uow.api_keys.add(make_key(ids, ghost, "h1"))


async def test_a_reused_key_hash_is_a_conflict(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    await committed(db, lambda uow: uow.api_keys.add(make_key(ids, user, "h1")))

    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.api_keys.add(make_key(ids, user, "h1"))
        await uow.api_keys.add(make_key(ids, user, "h2"))
        await uow.commit()

    assert raised.value.code is ErrorCode.CONFLICT
    listed = await read(db, lambda uow: uow.api_keys.list_for_user(user.id))
    assert [k.key_hash for k in listed] == ["h2", "h1"]


async def test_listing_keys_shows_the_users_live_keys_newest_first(db: Database, ids: SequentialIds) -> None:
    ada, grace = make_user(ids, "ada@example.com"), make_user(ids, "grace@example.com")
    await add_users(db, ada, grace)
    old, revoked, new = (make_key(ids, ada, h) for h in ("old", "revoked", "new"))
    revoked = make_key(ids, ada, "revoked", id=revoked.id, revoked_at=T0)
    graces = make_key(ids, grace, "grace's")

    async def add(uow: UnitOfWork) -> None:
        for key in (new, graces, old, revoked):
            await uow.api_keys.add(key)

    await committed(db, add)

    assert await read(db, lambda uow: uow.api_keys.list_for_user(ada.id)) == [new, old]
    assert await read(db, lambda uow: uow.api_keys.list_for_user(grace.id)) == [graces]
    assert await read(db, lambda uow: uow.api_keys.list_for_user(NOT_A_UUID)) == []
    # Revoked keys are still found by hash: the caller tells the client why it fails.
    assert await read(db, lambda uow: uow.api_keys.get_by_hash("revoked")) == revoked


async def test_a_user_revokes_only_their_own_live_key(db: Database, ids: SequentialIds) -> None:
    ada, grace = make_user(ids, "ada@example.com"), make_user(ids, "grace@example.com")
    await add_users(db, ada, grace)
    key = make_key(ids, ada, "h1")
    await committed(db, lambda uow: uow.api_keys.add(key))
    at = T0 + timedelta(hours=1)

    async with db.unit_of_work() as uow:
        assert await uow.api_keys.revoke(grace.id, key.id, at) is False
        assert await uow.api_keys.revoke(ada.id, ids.new_id(), at) is False
        assert await uow.api_keys.revoke(NOT_A_UUID, NOT_A_UUID, at) is False
        await uow.commit()
    assert await read(db, lambda uow: uow.api_keys.get_by_hash("h1")) == key

    assert await committed(db, lambda uow: uow.api_keys.revoke(ada.id, key.id, at)) is True
    assert await committed(db, lambda uow: uow.api_keys.revoke(ada.id, key.id, at + timedelta(1))) is False

    stored = await read(db, lambda uow: uow.api_keys.get_by_hash("h1"))
    assert stored is not None and stored.revoked_at == at
    assert await read(db, lambda uow: uow.api_keys.list_for_user(ada.id)) == []


async def test_a_rolled_back_revocation_leaves_the_key_live(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    key = make_key(ids, user, "h1")
    await committed(db, lambda uow: uow.api_keys.add(key))

    assert await read(db, lambda uow: uow.api_keys.revoke(user.id, key.id, T0)) is True

    assert await read(db, lambda uow: uow.api_keys.list_for_user(user.id)) == [key]


async def test_of_two_concurrent_revocations_one_succeeds(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    key = make_key(ids, user, "h1")
    await committed(db, lambda uow: uow.api_keys.add(key))

    async def revoke(at: datetime) -> bool:
        async with db.unit_of_work() as uow:
            revoked = await uow.api_keys.revoke(user.id, key.id, at)
            await asyncio.sleep(0)  # hold the row while the other revocation runs
            await uow.commit()
            return revoked

    results = await asyncio.gather(revoke(T0), revoke(T0 + timedelta(minutes=1)))

    assert sorted(results) == [False, True]


async def test_touch_records_the_latest_use(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    key = make_key(ids, user, "h1")
    await committed(db, lambda uow: uow.api_keys.add(key))
    later, earlier = T0 + timedelta(minutes=5), T0 + timedelta(minutes=1)

    await committed(db, lambda uow: uow.api_keys.touch(key.id, later))
    await committed(db, lambda uow: uow.api_keys.touch(key.id, earlier))  # a slower request's touch
    await committed(db, lambda uow: uow.api_keys.touch(NOT_A_UUID, later))

    stored = await read(db, lambda uow: uow.api_keys.get_by_hash("h1"))
    assert stored is not None and stored.last_used_at == later


# One-time tokens


async def test_a_token_is_consumed_once(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    token = make_token(user, "t1")
    await committed(db, lambda uow: uow.tokens.add(token))
    now = T0 + timedelta(minutes=10)

    async with db.unit_of_work() as uow:
        consumed = await uow.tokens.consume("t1", TokenPurpose.RESET_PASSWORD, now)
        assert await uow.tokens.consume("t1", TokenPurpose.RESET_PASSWORD, now) is None
        await uow.commit()

    assert consumed == make_token(user, "t1", used_at=now)
    assert await committed(db, lambda uow: uow.tokens.consume("t1", TokenPurpose.RESET_PASSWORD, now)) is None


async def test_a_token_is_not_consumed_for_another_purpose_after_expiry_or_when_unknown(
    db: Database, ids: SequentialIds
) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    token = make_token(user, "t1", purpose=TokenPurpose.VERIFY_EMAIL)
    await committed(db, lambda uow: uow.tokens.add(token))
    reset, verify = TokenPurpose.RESET_PASSWORD, TokenPurpose.VERIFY_EMAIL

    async with db.unit_of_work() as uow:
        assert await uow.tokens.consume("t1", reset, T0) is None
        assert await uow.tokens.consume("t1", verify, token.expires_at) is None  # expires at that instant
        assert await uow.tokens.consume("t1", verify, token.expires_at + timedelta(days=1)) is None
        assert await uow.tokens.consume("unknown", verify, T0) is None
        before_expiry = token.expires_at - timedelta(microseconds=1)
        assert await uow.tokens.consume("t1", verify, before_expiry) == make_token(
            user, "t1", purpose=verify, used_at=before_expiry
        )


async def test_a_rolled_back_consumption_leaves_the_token_usable(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    await committed(db, lambda uow: uow.tokens.add(make_token(user, "t1")))

    async with db.unit_of_work() as first:
        assert await first.tokens.consume("t1", TokenPurpose.RESET_PASSWORD, T0) is not None
        async with db.unit_of_work() as second:
            waiting = asyncio.create_task(second.tokens.consume("t1", TokenPurpose.RESET_PASSWORD, T0))
            await asyncio.sleep(0)
            await first.rollback()
            assert await waiting is not None  # the first consumption is gone: this one gets the token
            await second.commit()

    assert await read(db, lambda uow: uow.tokens.consume("t1", TokenPurpose.RESET_PASSWORD, T0)) is None


async def test_of_concurrent_consumers_exactly_one_gets_the_token(db: Database, ids: SequentialIds) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    await committed(db, lambda uow: uow.tokens.add(make_token(user, "t1")))

    async def consume() -> OneTimeToken | None:
        async with db.unit_of_work() as uow:
            token = await uow.tokens.consume("t1", TokenPurpose.RESET_PASSWORD, T0)
            await asyncio.sleep(0)  # hold the row while the others try
            await uow.commit()
            return token

    results = await asyncio.gather(*(consume() for _ in range(4)))

    assert sum(result is not None for result in results) == 1


async def test_revoking_a_users_tokens_uses_up_the_outstanding_ones_of_that_purpose(
    db: Database, ids: SequentialIds
) -> None:
    ada, grace = make_user(ids, "ada@example.com"), make_user(ids, "grace@example.com")
    await add_users(db, ada, grace)
    reset, verify = TokenPurpose.RESET_PASSWORD, TokenPurpose.VERIFY_EMAIL
    tokens = [
        make_token(ada, "a1"),
        make_token(ada, "a2", expires_at=T0 - timedelta(hours=1)),  # expired but never used
        make_token(ada, "a3", used_at=T0),
        make_token(ada, "a4", purpose=verify),
        make_token(grace, "g1"),
    ]

    async def add(uow: UnitOfWork) -> None:
        for token in tokens:
            await uow.tokens.add(token)

    await committed(db, add)
    at = T0 + timedelta(minutes=1)

    assert await committed(db, lambda uow: uow.tokens.revoke_for_user(ada.id, reset, at)) == 2
    assert await committed(db, lambda uow: uow.tokens.revoke_for_user(ada.id, reset, at)) == 0
    assert await committed(db, lambda uow: uow.tokens.revoke_for_user(NOT_A_UUID, reset, at)) == 0

    async with db.unit_of_work() as uow:
        assert await uow.tokens.consume("a1", reset, T0) is None
        assert await uow.tokens.consume("a4", verify, T0) is not None
        assert await uow.tokens.consume("g1", reset, T0) is not None


async def test_a_token_for_an_unknown_user_or_a_reused_hash_is_refused(
    db: Database, ids: SequentialIds
) -> None:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    await committed(db, lambda uow: uow.tokens.add(make_token(user, "t1")))

    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.tokens.add(make_token(user, "t1", purpose=TokenPurpose.VERIFY_EMAIL))
        await uow.tokens.add(make_token(user, "t2"))
        await uow.commit()
    assert raised.value.code is ErrorCode.CONFLICT
    assert await read(db, lambda uow: uow.tokens.consume("t2", TokenPurpose.RESET_PASSWORD, T0)) is not None

    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError):
            await uow.tokens.add(make_token(make_user(ids, "ghost@example.com"), "t3"))


# Audit log


async def test_an_audit_record_reads_back_as_written(db: Database, ids: SequentialIds) -> None:
    record = make_record(
        ids,
        AuditAction.LOGIN_FAILED,
        occurred_at=datetime(2026, 3, 1, 7, 0, tzinfo=timezone(timedelta(hours=-5))),
        actor_id=None,
        target_type="user",
        target_id=ids.new_id(),
        ip="2001:db8::1",
        correlation_id="req-1",
        details={"reason": "wrong_password", "attempts": 3, "nested": {"ok": [True, None, 1.5]}},
    )
    await committed(db, lambda uow: uow.audit.add(record))

    [stored] = await read(db, lambda uow: uow.audit.list(limit=10))

    assert stored == AuditRecord(
        id=record.id,
        occurred_at=datetime(2026, 3, 1, 12, 0, tzinfo=UTC),
        action=AuditAction.LOGIN_FAILED,
        actor_id=None,
        target_type="user",
        target_id=record.target_id,
        ip="2001:db8::1",
        correlation_id="req-1",
        details={"reason": "wrong_password", "attempts": 3, "nested": {"ok": [True, None, 1.5]}},
    )
    assert stored.action is AuditAction.LOGIN_FAILED
    assert stored.occurred_at.utcoffset() == timedelta(0)


async def test_a_reused_audit_id_is_a_conflict(db: Database, ids: SequentialIds) -> None:
    record = make_record(ids, AuditAction.LOGGED_OUT)
    await committed(db, lambda uow: uow.audit.add(record))

    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.audit.add(make_record(ids, AuditAction.LOGIN_SUCCEEDED, id=record.id))
        await uow.commit()

    assert raised.value.code is ErrorCode.CONFLICT
    assert await read(db, lambda uow: uow.audit.list(limit=10)) == [record]


async def test_the_audit_list_filters_and_pages_newest_first(db: Database, ids: SequentialIds) -> None:
    ada, grace, key = ids.new_id(), ids.new_id(), ids.new_id()
    records = [
        make_record(ids, AuditAction.REGISTERED, actor_id=ada, target_type="user", target_id=ada),
        make_record(ids, AuditAction.LOGIN_FAILED, target_type="user", target_id=ada),
        make_record(ids, AuditAction.LOGIN_SUCCEEDED, actor_id=ada, target_type="user", target_id=ada),
        make_record(ids, AuditAction.API_KEY_CREATED, actor_id=ada, target_type="api_key", target_id=key),
        make_record(ids, AuditAction.ROLE_CHANGED, actor_id=grace, target_type="user", target_id=ada),
        make_record(ids, AuditAction.LOGIN_SUCCEEDED, actor_id=grace, target_type="user", target_id=grace),
    ]

    async def add(uow: UnitOfWork) -> None:
        for record in reversed(records):  # insertion order must not matter
            await uow.audit.add(record)

    await committed(db, add)
    r = records

    async def listed(**filters: object) -> list[AuditRecord]:
        return await read(db, lambda uow: uow.audit.list(limit=10, **filters))

    assert await listed() == r[::-1]
    assert await listed(action=AuditAction.LOGIN_SUCCEEDED) == [r[5], r[2]]
    assert await listed(action="login.succeeded") == [r[5], r[2]]
    assert await listed(actor_id=ada) == [r[3], r[2], r[0]]
    assert await listed(target_id=ada) == [r[4], r[2], r[1], r[0]]
    assert await listed(actor_id=grace, target_id=ada) == [r[4]]
    assert await listed(action=AuditAction.LOGIN_SUCCEEDED, actor_id=ada) == [r[2]]
    assert await listed(target_id=ada, after=r[2].id) == [r[1], r[0]]
    assert await listed(action=AuditAction.PASSWORD_RESET) == []

    async def page(after: str | None) -> list[AuditRecord]:
        return await read(db, lambda uow: uow.audit.list(after=after, limit=4))

    pages: list[list[AuditRecord]] = []
    found = await page(None)
    while found:
        pages.append(found)
        found = await page(found[-1].id)
    newest_first = r[::-1]
    assert pages == [newest_first[:4], newest_first[4:]]


async def test_a_finished_unit_of_work_refuses_account_work(db: Database, ids: SequentialIds) -> None:
    uow = db.unit_of_work()
    with pytest.raises(RuntimeError):
        await uow.users.get(ids.new_id())
    async with uow:
        await uow.commit()
        with pytest.raises(RuntimeError):
            await uow.users.add(make_user(ids, "late@example.com"))
        with pytest.raises(RuntimeError):
            await uow.audit.list(limit=1)


@pytest.mark.parametrize("backend_url", ["postgres"], indirect=True)
async def test_the_audit_log_table_refuses_updates_and_deletes(db: Database, ids: SequentialIds) -> None:
    import psycopg

    from adapters.postgres import PostgresDatabase

    assert isinstance(db, PostgresDatabase)
    record = make_record(ids, AuditAction.LOGIN_SUCCEEDED, actor_id=ids.new_id())
    await committed(db, lambda uow: uow.audit.add(record))

    for statement in (
        "UPDATE audit_log SET action = 'login.failed'",
        "DELETE FROM audit_log",
        "TRUNCATE audit_log",
    ):
        async with db.pool.connection() as conn:
            with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
                await conn.execute(statement)

    assert await read(db, lambda uow: uow.audit.list(limit=10)) == [record]


async def test_get_for_update_makes_a_second_writer_wait_and_see_the_first_ones_change(
    db: Database, ids: SequentialIds
) -> None:
    user = make_user(ids, "locked@example.com")
    await add_users(db, user)

    order: list[str] = []

    async def first() -> None:
        async with db.unit_of_work() as uow:
            locked = await uow.users.get_for_update(user.id)
            assert locked is not None
            order.append("first read")
            await asyncio.sleep(0.2)  # the second writer must wait for this transaction
            await uow.users.update(msgspec.structs.replace(locked, display_name="first"))
            await uow.commit()
            order.append("first committed")

    async def second() -> None:
        await asyncio.sleep(0.05)
        async with db.unit_of_work() as uow:
            locked = await uow.users.get_for_update(user.id)
            order.append("second read")
            assert locked is not None
            assert locked.display_name == "first"  # it saw the committed change, not a stale copy
            await uow.commit()

    await asyncio.gather(first(), second())
    assert order == ["first read", "first committed", "second read"]
