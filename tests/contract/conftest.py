"""Fixtures the repository contract suites share: every suite runs once over the in-memory fake
and once over PostgreSQL (a fresh, migrated schema), through the unit of work that hands the
repositories out."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from adapters.memory.ids import SequentialIds
from core.accounts.users import User
from core.ports import Database
from tests.support.billing_data import add_users, make_user, open_database


@pytest.fixture(params=["memory", "postgres"])
def backend_url(request: pytest.FixtureRequest) -> str | None:
    """None for the in-memory fake; a fresh PostgreSQL schema's URL otherwise.

    A sync fixture, so the async `postgres_url` is only set up (or skipped) for the PostgreSQL case.
    """
    return None if request.param == "memory" else request.getfixturevalue("postgres_url")


@pytest.fixture
async def db(backend_url: str | None) -> AsyncIterator[Database]:
    async with open_database(backend_url) as database:
        yield database


@pytest.fixture
def ids() -> SequentialIds:
    """UUIDv7-shaped ids that increase: later ids are newer."""
    return SequentialIds()


@pytest.fixture
async def ada(db: Database, ids: SequentialIds) -> User:
    user = make_user(ids, "ada@example.com")
    await add_users(db, user)
    return user


@pytest.fixture
async def grace(db: Database, ids: SequentialIds) -> User:
    user = make_user(ids, "grace@example.com")
    await add_users(db, user)
    return user
