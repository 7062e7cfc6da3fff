"""Resolving an API key to a principal: the work every API-key request does before its handler.

In one group: the baseline is a bare dict lookup by the key's hash; the subjects are
`CredentialResolver.resolve_api_key` on a warm principal cache (SHA-256, one in-process lookup,
expiry/IP/status checks: the hot path) and with the cache bypassed (as when a process cannot hear
invalidations: a unit of work per request, the shape of every request before the cache).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.invalidation_bus import MemoryInvalidationBus
from adapters.memory.password_hasher import FastPasswordHasher
from adapters.memory.session_store import MemorySessionStore
from adapters.near_cache import NearCache
from core.accounts.context import AccountPolicy, Caller
from core.accounts.credentials import CredentialResolver
from core.accounts.key_management import KeyManagement, NewApiKey
from core.accounts.principal import SESSION_SCOPES, CredentialKind, Principal
from core.accounts.registration import Registration
from core.accounts.users import Role

OPERATIONS = 500


class _NoJobs:
    async def enqueue(self, spec: Any) -> None:
        return None


Subject = tuple[dict[str, CredentialResolver], str, dict[str, Any]]


async def _setup() -> Subject:
    database, clock, ids = MemoryDatabase(), ManualClock(), SequentialIds()
    sessions, hasher, policy = MemorySessionStore(), FastPasswordHasher(), AccountPolicy()
    registration = Registration(
        database=database,
        sessions=sessions,
        hasher=hasher,
        blocklist=frozenset(),
        jobs=_NoJobs(),  # type: ignore[arg-type]
        ids=ids,
        clock=clock,
        policy=policy,
    )
    user = await registration.register(
        email="bench@example.com",
        password="an unrelated long passphrase",
        display_name=None,
        caller=Caller(),
        role=Role.USER,
        email_verified=True,
    )
    owner = Principal(
        user=user,
        scopes=SESSION_SCOPES,
        credential=CredentialKind.SESSION,
        credential_id="s",
    )
    created = await KeyManagement(database=database, ids=ids, clock=clock).create(
        owner, NewApiKey(name="bench"), Caller()
    )
    deaf = MemoryInvalidationBus()
    deaf.connected_flag = False
    resolvers = {
        "warm": CredentialResolver(
            database=database, sessions=sessions, principals=NearCache(MemoryInvalidationBus()), clock=clock
        ),
        "bypassed": CredentialResolver(
            database=database, sessions=sessions, principals=NearCache(deaf), clock=clock
        ),
    }
    return resolvers, created.secret, {created.key.key_hash: created.key}


@pytest.fixture(scope="module")
def subject(
    bench_loop: asyncio.AbstractEventLoop,
) -> tuple[dict[str, CredentialResolver], str, dict[str, Any]]:
    return bench_loop.run_until_complete(_setup())


@pytest.mark.benchmark(group="api key → principal (memory)")
def test_baseline_dict_lookup_by_hash(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, subject: Any
) -> None:
    _, _, by_hash = subject
    key_hash = next(iter(by_hash))

    async def batch() -> None:
        for _ in range(OPERATIONS):
            assert by_hash.get(key_hash) is not None

    benchmark(lambda: bench_loop.run_until_complete(batch()))


@pytest.mark.benchmark(group="api key → principal (memory)")
@pytest.mark.parametrize("cache", ["warm", "bypassed"])
def test_resolve_api_key(
    benchmark: Any, bench_loop: asyncio.AbstractEventLoop, subject: Any, cache: str
) -> None:
    resolvers, secret, _ = subject
    resolver = resolvers[cache]

    async def batch() -> None:
        for _ in range(OPERATIONS):
            principal = await resolver.resolve_api_key(secret, client_ip="127.0.0.1")
            assert principal.credential is CredentialKind.API_KEY

    benchmark(lambda: bench_loop.run_until_complete(batch()))
