"""Authentication use cases on the memory adapters: what the HTTP tests cannot easily see."""

from __future__ import annotations

from typing import Any

import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.invalidation_bus import MemoryInvalidationBus
from adapters.memory.password_hasher import FastPasswordHasher
from adapters.memory.rate_limiter import MemoryRateLimiter
from adapters.memory.session_store import MemorySessionStore
from adapters.near_cache import NearCache
from core.accounts.authentication import Authentication
from core.accounts.context import AccountPolicy, Caller
from core.accounts.credentials import CredentialResolver
from core.accounts.registration import Registration
from core.errors import DomainError, ErrorCode

PASSWORD = "an unremarkable passphrase"


class NoJobs:
    async def enqueue(self, spec: Any) -> None:
        return None


class CountingHasher(FastPasswordHasher):
    def __init__(self) -> None:
        super().__init__()
        self.verifications = 0
        self.hashes = 0

    async def hash(self, password: str) -> str:
        self.hashes += 1
        return await super().hash(password)

    async def verify(self, password_hash: str, password: str) -> bool:
        self.verifications += 1
        return await super().verify(password_hash, password)


@pytest.fixture
def parts() -> dict[str, Any]:
    clock = ManualClock()
    return {
        "database": MemoryDatabase(),
        "sessions": MemorySessionStore(),
        "hasher": CountingHasher(),
        "ids": SequentialIds(),
        "clock": clock,
        "policy": AccountPolicy(),
    }


async def _register(parts: dict[str, Any], email: str = "ann@example.com") -> None:
    registration = Registration(blocklist=frozenset(), jobs=NoJobs(), **parts)  # type: ignore[arg-type]
    await registration.register(email=email, password=PASSWORD, display_name=None, caller=Caller())


def _authentication(parts: dict[str, Any]) -> Authentication:
    return Authentication(limiter=MemoryRateLimiter(monotonic=parts["clock"].monotonic), **parts)


def _resolver(parts: dict[str, Any]) -> CredentialResolver:
    cache = NearCache(MemoryInvalidationBus(), monotonic=parts["clock"].monotonic)
    return CredentialResolver(
        database=parts["database"], sessions=parts["sessions"], principals=cache, clock=parts["clock"]
    )


async def test_login_rehashes_when_the_parameters_changed(parts):
    await _register(parts)
    parts["hasher"].iterations = 3  # an operator raised the cost
    result = await _authentication(parts).login(email="ann@example.com", password=PASSWORD, caller=Caller())
    assert result.user.password_hash.startswith("fake$3$")
    stored = parts["database"].committed_users()[0]
    assert stored.password_hash == result.user.password_hash


async def test_unknown_accounts_cost_the_same_hashing_work(parts):
    await _register(parts)
    hasher: CountingHasher = parts["hasher"]
    with pytest.raises(DomainError):  # the first unknown login in a process makes the dummy hash
        await _authentication(parts).login(email="x@example.com", password="warm up", caller=Caller())
    for email in ("ann@example.com", "nobody@example.com"):
        before = (hasher.verifications, hasher.hashes)
        with pytest.raises(DomainError) as caught:
            # A fresh use-case object per request, as the HTTP layer makes them.
            await _authentication(parts).login(email=email, password="wrong password here", caller=Caller())
        assert caught.value.code is ErrorCode.INVALID_CREDENTIALS
        assert (hasher.verifications, hasher.hashes) == (before[0] + 1, before[1])  # one check, no hash


async def test_sessions_expire_when_idle_and_at_their_absolute_end(parts):
    await _register(parts)
    authentication = _authentication(parts)
    resolver = _resolver(parts)
    clock: ManualClock = parts["clock"]
    token = (await authentication.login(email="ann@example.com", password=PASSWORD, caller=Caller())).token

    for _ in range(3):  # active every 7 hours: the 8-hour idle timeout never ends it
        clock.advance(7 * 3600)
        await resolver.resolve_session(token)
    clock.advance(8 * 3600 + 1)
    with pytest.raises(DomainError):
        await resolver.resolve_session(token)

    fresh = (await authentication.login(email="ann@example.com", password=PASSWORD, caller=Caller())).token
    for _ in range(24):  # active every 7 hours for a week: the absolute lifetime ends it anyway
        clock.advance(7 * 3600)
        try:
            await resolver.resolve_session(fresh)
        except DomainError:
            break
    else:
        raise AssertionError("the session outlived its absolute lifetime")
    with pytest.raises(DomainError):
        await resolver.resolve_session(fresh)


async def test_last_seen_is_written_at_most_once_a_minute(parts):
    await _register(parts)
    authentication = _authentication(parts)
    resolver = _resolver(parts)
    clock: ManualClock = parts["clock"]
    token = (await authentication.login(email="ann@example.com", password=PASSWORD, caller=Caller())).token
    _, session = await resolver.resolve_session(token)
    clock.advance(30)
    await resolver.resolve_session(token)
    stored = await parts["sessions"].get(session.token_hash)
    assert stored.last_seen_at == session.last_seen_at  # not written again within the minute
    clock.advance(31)
    await resolver.resolve_session(token)
    stored = await parts["sessions"].get(session.token_hash)
    assert stored.last_seen_at == clock.now()
