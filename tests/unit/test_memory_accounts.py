"""What the in-memory account tables offer beyond the repositories' contract (tests/contract covers that)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from core.accounts.api_keys import ApiKey
from core.accounts.audit import AuditAction, AuditRecord
from core.accounts.tokens import OneTimeToken, TokenPurpose
from core.accounts.users import Role, User, UserStatus

T0 = datetime(2026, 3, 1, tzinfo=UTC)


async def test_the_committed_rows_are_listed_for_assertions_and_uncommitted_ones_are_not() -> None:
    db, ids = MemoryDatabase(), SequentialIds()
    user = User(
        id=ids.new_id(),
        email="ada@example.com",
        email_normalized="ada@example.com",
        display_name=None,
        role=Role.USER,
        status=UserStatus.ACTIVE,
        email_verified=False,
        password_hash="$argon2id$hash",
        plan="free",
        created_at=T0,
        updated_at=T0,
    )
    key = ApiKey(
        id=ids.new_id(),
        user_id=user.id,
        name="ci",
        prefix="pk_live_Ab12",
        key_hash="h1",
        scopes=["generations:read"],
        allowed_ips=[],
        created_at=T0,
    )
    token = OneTimeToken(
        token_hash="t1",
        purpose=TokenPurpose.VERIFY_EMAIL,
        user_id=user.id,
        created_at=T0,
        expires_at=T0 + timedelta(days=2),
    )
    record = AuditRecord(id=ids.new_id(), occurred_at=T0, action=AuditAction.REGISTERED, actor_id=user.id)

    async with db.unit_of_work() as uow:
        await uow.users.add(user)
        await uow.api_keys.add(key)
        await uow.tokens.add(token)
        await uow.audit.add(record)
        assert (
            db.committed_users(),
            db.committed_api_keys(),
            db.committed_tokens(),
            db.committed_audit(),
        ) == (
            [],
            [],
            [],
            [],
        )
        await uow.commit()

    assert db.committed_users() == [user]
    assert db.committed_api_keys() == [key]
    assert db.committed_tokens() == [token]
    assert db.committed_audit() == [record]


async def test_the_stored_details_are_a_copy() -> None:
    db, ids = MemoryDatabase(), SequentialIds()
    details: dict[str, object] = {"changed": ["role"]}
    async with db.unit_of_work() as uow:
        await uow.audit.add(
            AuditRecord(
                id=ids.new_id(),
                occurred_at=T0,
                action=AuditAction.ROLE_CHANGED,
                actor_id=None,
                details=details,
            )
        )
        await uow.commit()
    details["changed"] = ["status"]

    assert db.committed_audit()[0].details == {"changed": ["role"]}
