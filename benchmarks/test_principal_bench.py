"""Resolving an API key to a principal: the work every API-key request does before its handler.

In one group: the baseline is the bare lookup the resolution wraps (a dict lookup by the key's hash
for the in-memory database); the subject is `Authentication.resolve_api_key` (checksum, SHA-256,
lookup of key and user in a unit of work, expiry/IP/status checks). Without a principal cache
(issue 4) this is also the shape of the PostgreSQL path: one unit of work per request.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.database import MemoryDatabase
from adapters.memory.ids import SequentialIds
from adapters.memory.password_hasher import FastPasswordHasher
from adapters.memory.rate_limiter import MemoryRateLimiter
from adapters.memory.session_store import MemorySessionStore
from core.accounts.authentication import Authentication
from core.accounts.context import AccountPolicy, Caller
from core.accounts.key_management import KeyManagement, NewApiKey
from core.accounts.principal import SESSION_SCOPES, CredentialKind, Principal
from core.accounts.registration import Registration
from core.accounts.users import Role

OPERATIONS = 500


class _NoJobs:
    async def enqueue(self, spec: Any) -> None:
        return None


async def _setup() -> tuple[Authentication, str, dict[str, Any]]:
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
        user_id=user.id,
        email=user.email,
        role=user.role,
        plan=user.plan,
        scopes=SESSION_SCOPES,
        credential=CredentialKind.SESSION,
        credential_id="s",
    )
    created = await KeyManagement(database=database, ids=ids, clock=clock).create(
        owner, NewApiKey(name="bench"), Caller()
    )
    authentication = Authentication(
        database=database,
        sessions=sessions,
        hasher=hasher,
        limiter=MemoryRateLimiter(),
        ids=ids,
        clock=clock,
        policy=policy,
    )
    return authentication, created.secret, {created.key.key_hash: created.key}


@pytest.fixture(scope="module")
def subject(bench_loop: asyncio.AbstractEventLoop) -> tuple[Authentication, str, dict[str, Any]]:
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
def test_resolve_api_key(benchmark: Any, bench_loop: asyncio.AbstractEventLoop, subject: Any) -> None:
    authentication, secret, _ = subject

    async def batch() -> None:
        for _ in range(OPERATIONS):
            principal = await authentication.resolve_api_key(secret, client_ip="127.0.0.1")
            assert principal.credential is CredentialKind.API_KEY

    benchmark(lambda: bench_loop.run_until_complete(batch()))
