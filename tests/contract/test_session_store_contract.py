"""The SessionStore port's contract, run against every adapter: memory, Valkey and PostgreSQL.

Then what only some adapters promise: `delete_expired` (memory and PostgreSQL, for the clean-up
job), and the Valkey store's own expiry (key TTLs follow the session's idle and absolute ends).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from adapters.memory.session_store import MemorySessionStore
from core.accounts.api_keys import hash_secret
from core.accounts.sessions import Session
from core.ports import SessionStore

T0 = datetime(2026, 3, 1, 12, 0, 0, 123456, tzinfo=UTC)


@dataclass
class StoreUnderTest:
    store: Any  # a SessionStore; typed loosely so adapter-only methods can be called
    add_user: Callable[[], Awaitable[str]]  # a user the store may hold sessions for; returns its id


async def _new_user_id() -> str:
    return str(uuid.uuid4())


@dataclass
class Backend:
    """Which store to open, with the service fixtures it needs (resolved by a sync fixture, since
    the async `postgres_url` cannot be requested from inside another async fixture)."""

    kind: str
    url: str | None = None
    key_prefix: str = ""


def backend_for(kind: str, request: pytest.FixtureRequest) -> Backend:
    if kind == "valkey":
        return Backend(kind, request.getfixturevalue("valkey_url"), request.getfixturevalue("key_prefix"))
    if kind == "postgres":
        return Backend(kind, request.getfixturevalue("postgres_url"))
    return Backend(kind)


@asynccontextmanager
async def open_store(backend: Backend) -> AsyncIterator[StoreUnderTest]:
    kind = backend.kind
    if kind == "memory":
        yield StoreUnderTest(MemorySessionStore(), _new_user_id)
    elif kind == "valkey":
        from adapters.valkey.cache import escape_glob
        from adapters.valkey.client import create_valkey_client
        from adapters.valkey.session_store import ValkeySessionStore

        assert backend.url is not None
        prefix = backend.key_prefix
        client = create_valkey_client(backend.url)
        try:
            yield StoreUnderTest(ValkeySessionStore(client, key_prefix=prefix), _new_user_id)
        finally:
            async for key in client.scan_iter(match=escape_glob(prefix) + "*", count=500):
                await client.unlink(key)
            await client.aclose()
    else:
        from adapters.postgres import apply_migrations, open_pool
        from adapters.postgres.session_store import PostgresSessionStore

        database_url = backend.url
        assert database_url is not None
        await apply_migrations(database_url)
        pool = await open_pool(database_url, min_size=1, max_size=4, name="sessions-contract")

        async def add_user() -> str:
            # Sessions reference users (ON DELETE CASCADE): the row a real user would have.
            user_id = str(uuid.uuid4())
            async with pool.connection() as conn:
                await conn.execute(
                    """
                    INSERT INTO users (id, email, email_normalized, role, status, password_hash,
                                       created_at, updated_at)
                    VALUES (%s, %s, %s, 'user', 'active', 'not-a-hash', %s, %s)
                    """,
                    (user_id, f"{user_id}@example.com", f"{user_id}@example.com", T0, T0),
                )
            return user_id

        try:
            yield StoreUnderTest(PostgresSessionStore(pool), add_user)
        finally:
            await pool.close()


@pytest.fixture(params=["memory", "valkey", "postgres"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return backend_for(request.param, request)


@pytest.fixture
async def subject(backend: Backend) -> AsyncIterator[StoreUnderTest]:
    async with open_store(backend) as subject:
        yield subject


@pytest.fixture
def store(subject: StoreUnderTest) -> SessionStore:
    store: SessionStore = subject.store
    return store


def make_session(
    user_id: str,
    *,
    created_at: datetime = T0,
    last_seen_at: datetime | None = None,
    idle: timedelta = timedelta(hours=8),
    lifetime: timedelta = timedelta(days=7),
    ip: str | None = "203.0.113.7",
    user_agent: str | None = "Mozilla/5.0 (X11; Linux x86_64) ✓",
) -> Session:
    token = uuid.uuid4().hex
    return Session(
        id=str(uuid.uuid4()),
        user_id=user_id,
        token_hash=hash_secret(token),
        created_at=created_at,
        last_seen_at=created_at if last_seen_at is None else last_seen_at,
        expires_at=created_at + lifetime,
        idle_timeout_seconds=int(idle.total_seconds()),
        ip=ip,
        user_agent=user_agent,
    )


async def test_ping(store: SessionStore) -> None:
    await store.ping()


async def test_a_created_session_reads_back_with_every_field(
    subject: StoreUnderTest, store: SessionStore
) -> None:
    user_id = await subject.add_user()
    plus_two = timezone(timedelta(hours=2))
    session = make_session(user_id, created_at=datetime(2026, 3, 1, 14, 30, 15, 654321, tzinfo=plus_two))
    await store.create(session)

    got = await store.get(session.token_hash)

    assert got == session
    assert got is not None
    for moment in (got.created_at, got.last_seen_at, got.expires_at):
        assert moment.utcoffset() is not None


async def test_optional_fields_round_trip_as_none(subject: StoreUnderTest, store: SessionStore) -> None:
    session = make_session(await subject.add_user(), ip=None, user_agent=None)
    await store.create(session)
    assert await store.get(session.token_hash) == session


async def test_an_unknown_token_hash_finds_nothing(subject: StoreUnderTest, store: SessionStore) -> None:
    await store.create(make_session(await subject.add_user()))
    assert await store.get(hash_secret("never issued")) is None


async def test_touch_updates_last_seen_and_nothing_else(subject: StoreUnderTest, store: SessionStore) -> None:
    session = make_session(await subject.add_user())
    await store.create(session)
    later = T0 + timedelta(minutes=5, microseconds=7)

    await store.touch(session.token_hash, later)

    got = await store.get(session.token_hash)
    assert got is not None
    assert got.last_seen_at == later
    assert got == Session(**{**_fields(session), "last_seen_at": later})


async def test_touching_an_unknown_session_creates_nothing(store: SessionStore) -> None:
    token_hash = hash_secret("never issued")
    await store.touch(token_hash, T0)
    assert await store.get(token_hash) is None


async def test_a_users_sessions_are_listed_newest_first_and_only_theirs(
    subject: StoreUnderTest, store: SessionStore
) -> None:
    alice, bob = await subject.add_user(), await subject.add_user()
    oldest = make_session(alice, created_at=T0)
    newest = make_session(alice, created_at=T0 + timedelta(hours=2))
    middle = make_session(alice, created_at=T0 + timedelta(hours=1))
    bobs = make_session(bob, created_at=T0 + timedelta(hours=3))
    for session in (oldest, newest, bobs, middle):
        await store.create(session)

    assert await store.list_for_user(alice) == [newest, middle, oldest]
    assert await store.list_for_user(bob) == [bobs]
    assert await store.list_for_user(str(uuid.uuid4())) == []


async def test_a_listed_session_shows_its_last_touch(subject: StoreUnderTest, store: SessionStore) -> None:
    session = make_session(await subject.add_user())
    await store.create(session)
    later = T0 + timedelta(minutes=3)
    await store.touch(session.token_hash, later)
    [listed] = await store.list_for_user(session.user_id)
    assert listed.last_seen_at == later


async def test_a_user_ends_their_own_session(subject: StoreUnderTest, store: SessionStore) -> None:
    user_id = await subject.add_user()
    ending = make_session(user_id, created_at=T0)
    staying = make_session(user_id, created_at=T0 + timedelta(minutes=1))
    await store.create(ending)
    await store.create(staying)

    assert await store.delete(user_id, ending.id) is True

    assert await store.get(ending.token_hash) is None
    assert await store.list_for_user(user_id) == [staying]
    assert await store.delete(user_id, ending.id) is False  # already ended


async def test_nobody_ends_another_users_session(subject: StoreUnderTest, store: SessionStore) -> None:
    alice, mallory = await subject.add_user(), await subject.add_user()
    alices = make_session(alice)
    await store.create(alices)
    await store.create(make_session(mallory))

    assert await store.delete(mallory, alices.id) is False

    assert await store.get(alices.token_hash) == alices
    assert await store.list_for_user(alice) == [alices]


@pytest.mark.parametrize("session_id", [str(uuid.uuid4()), "not-a-uuid", ""])
async def test_ending_a_session_that_does_not_exist_is_false(
    subject: StoreUnderTest, store: SessionStore, session_id: str
) -> None:
    user_id = await subject.add_user()
    await store.create(make_session(user_id))
    assert await store.delete(user_id, session_id) is False
    assert len(await store.list_for_user(user_id)) == 1


async def test_ending_all_of_a_users_sessions_counts_them(
    subject: StoreUnderTest, store: SessionStore
) -> None:
    alice, bob = await subject.add_user(), await subject.add_user()
    alices = [make_session(alice, created_at=T0 + timedelta(minutes=i)) for i in range(3)]
    bobs = make_session(bob)
    for session in [*alices, bobs]:
        await store.create(session)

    assert await store.delete_all_for_user(alice) == 3

    assert await store.list_for_user(alice) == []
    for session in alices:
        assert await store.get(session.token_hash) is None
    assert await store.get(bobs.token_hash) == bobs
    assert await store.delete_all_for_user(alice) == 0


async def test_ending_all_sessions_but_the_current_one(subject: StoreUnderTest, store: SessionStore) -> None:
    user_id = await subject.add_user()
    sessions = [make_session(user_id, created_at=T0 + timedelta(minutes=i)) for i in range(3)]
    for session in sessions:
        await store.create(session)
    current = sessions[1]

    assert await store.delete_all_for_user(user_id, except_session_id=current.id) == 2

    assert await store.list_for_user(user_id) == [current]
    assert await store.get(current.token_hash) == current


async def test_ending_all_with_an_unknown_exception_ends_all(
    subject: StoreUnderTest, store: SessionStore
) -> None:
    user_id = await subject.add_user()
    for i in range(2):
        await store.create(make_session(user_id, created_at=T0 + timedelta(minutes=i)))
    assert await store.delete_all_for_user(user_id, except_session_id=str(uuid.uuid4())) == 2
    assert await store.list_for_user(user_id) == []


async def test_a_user_without_sessions_has_none_to_end(subject: StoreUnderTest, store: SessionStore) -> None:
    assert await store.delete_all_for_user(await subject.add_user()) == 0


# --- delete_expired: memory and PostgreSQL keep expired sessions until the clean-up job runs ---


@pytest.fixture(params=["memory", "postgres"])
def keeping_backend(request: pytest.FixtureRequest) -> Backend:
    return backend_for(request.param, request)


@pytest.fixture
async def keeping_subject(keeping_backend: Backend) -> AsyncIterator[StoreUnderTest]:
    async with open_store(keeping_backend) as subject:
        yield subject


async def test_delete_expired_removes_idle_and_outlived_sessions(keeping_subject: StoreUnderTest) -> None:
    store, user_id = keeping_subject.store, await keeping_subject.add_user()
    now = T0 + timedelta(days=1)
    live = make_session(user_id, created_at=now - timedelta(hours=1))
    idle = make_session(user_id, created_at=now - timedelta(hours=9), idle=timedelta(hours=8))
    outlived = make_session(
        user_id, created_at=now - timedelta(hours=3), last_seen_at=now, lifetime=timedelta(hours=2)
    )
    just_idle = make_session(user_id, created_at=now - timedelta(hours=1), idle=timedelta(hours=1))
    for session in (live, idle, outlived, just_idle):
        await store.create(session)

    assert await store.delete_expired(now) == 3

    assert await store.list_for_user(user_id) == [live]
    assert await store.delete_expired(now) == 0


async def test_a_touch_keeps_a_session_from_idling_out(keeping_subject: StoreUnderTest) -> None:
    store, user_id = keeping_subject.store, await keeping_subject.add_user()
    session = make_session(user_id, idle=timedelta(hours=1))
    await store.create(session)
    await store.touch(session.token_hash, T0 + timedelta(minutes=50))

    assert await store.delete_expired(T0 + timedelta(minutes=70)) == 0
    assert await store.delete_expired(T0 + timedelta(minutes=110)) == 1


# --- Valkey: sessions expire by themselves ---


@pytest.fixture
async def valkey_subject(valkey_url: str, key_prefix: str) -> AsyncIterator[StoreUnderTest]:
    async with open_store(Backend("valkey", valkey_url, key_prefix)) as subject:
        yield subject


def _pttl_seconds(value: int) -> float:
    assert value > 0, "the key must exist and have a TTL"
    return value / 1000


async def test_valkey_keys_expire_at_the_earlier_of_idle_and_absolute_end(
    valkey_subject: StoreUnderTest,
) -> None:
    store = valkey_subject.store
    client, prefix = store._client, store._prefix
    user_id = await valkey_subject.add_user()
    idle_first = make_session(user_id, idle=timedelta(hours=8), lifetime=timedelta(days=7))
    absolute_first = make_session(user_id, idle=timedelta(hours=8), lifetime=timedelta(hours=2))
    await store.create(idle_first)
    await store.create(absolute_first)

    idle_ttl = _pttl_seconds(await client.pttl(f"{prefix}session:{idle_first.token_hash}"))
    absolute_ttl = _pttl_seconds(await client.pttl(f"{prefix}session:{absolute_first.token_hash}"))
    index_ttl = _pttl_seconds(await client.pttl(f"{prefix}user_sessions:{user_id}"))
    assert 8 * 3600 - 60 < idle_ttl <= 8 * 3600
    assert 2 * 3600 - 60 < absolute_ttl <= 2 * 3600
    assert index_ttl > 8 * 3600 - 60  # as long as the longest-lived session

    # An hour later: the idle end moves out again, the absolute one does not.
    await store.touch(idle_first.token_hash, T0 + timedelta(hours=1))
    await store.touch(absolute_first.token_hash, T0 + timedelta(hours=1))
    idle_ttl = _pttl_seconds(await client.pttl(f"{prefix}session:{idle_first.token_hash}"))
    absolute_ttl = _pttl_seconds(await client.pttl(f"{prefix}session:{absolute_first.token_hash}"))
    assert 8 * 3600 - 60 < idle_ttl <= 8 * 3600
    assert 3600 - 60 < absolute_ttl <= 3600


async def test_valkey_prunes_index_entries_of_expired_sessions(valkey_subject: StoreUnderTest) -> None:
    store = valkey_subject.store
    client, prefix = store._client, store._prefix
    user_id = await valkey_subject.add_user()
    gone, kept = (
        make_session(user_id, created_at=T0),
        make_session(user_id, created_at=T0 + timedelta(seconds=1)),
    )
    await store.create(gone)
    await store.create(kept)
    await client.unlink(f"{prefix}session:{gone.token_hash}")  # as its TTL would

    assert await store.list_for_user(user_id) == [kept]
    assert await client.zrange(f"{prefix}user_sessions:{user_id}", 0, -1) == [kept.token_hash.encode()]
    assert await store.delete(user_id, gone.id) is False


async def test_valkey_touch_after_logout_does_not_bring_the_session_back(
    valkey_subject: StoreUnderTest,
) -> None:
    store = valkey_subject.store
    user_id = await valkey_subject.add_user()
    session = make_session(user_id)
    await store.create(session)

    # The touch read the session, then a logout ended it before the touch wrote it back.
    real_get = store.get

    async def get_then_logout(token_hash: str) -> Session | None:
        found: Session | None = await real_get(token_hash)
        assert await store.delete(user_id, session.id) is True
        return found

    store.get = get_then_logout
    await store.touch(session.token_hash, T0 + timedelta(minutes=2))
    del store.get

    assert await store.get(session.token_hash) is None
    assert await store.list_for_user(user_id) == []


async def test_deleting_a_user_in_postgres_ends_their_sessions(postgres_url: str) -> None:
    async with open_store(Backend("postgres", postgres_url)) as subject:
        user_id = await subject.add_user()
        session = make_session(user_id)
        await subject.store.create(session)
        async with subject.store._pool.connection() as conn:
            await conn.execute("DELETE FROM users WHERE id = %s", (user_id,))
        assert await subject.store.get(session.token_hash) is None


def _fields(session: Session) -> dict[str, Any]:
    return {name: getattr(session, name) for name in session.__struct_fields__}
