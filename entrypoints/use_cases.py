"""Use cases built from a request's or a job's svcs container: the one place that knows which
ports each needs, shared by the HTTP routes, the CLI and the tests."""

from __future__ import annotations

import svcs

from core.accounts.context import AccountPolicy
from core.accounts.registration import Registration
from core.ports import Clock, Database, Ids, JobQueue, PasswordBlocklist, PasswordHasher, SessionStore


async def registration_from(container: svcs.Container) -> Registration:
    database, sessions, hasher, blocklist, jobs, ids, clock, policy = await container.aget(
        Database, SessionStore, PasswordHasher, PasswordBlocklist, JobQueue, Ids, Clock, AccountPolicy
    )
    return Registration(
        database=database,
        sessions=sessions,
        hasher=hasher,
        blocklist=blocklist,
        jobs=jobs,
        ids=ids,
        clock=clock,
        policy=policy,
    )
