"""The Clock and Ids ports: the real ones and the test doubles promise the same things."""

from __future__ import annotations

import uuid
from datetime import UTC

import pytest

from adapters.memory.clock import ManualClock
from adapters.memory.ids import SequentialIds
from adapters.system import SystemClock, SystemIds
from core.ports import Clock, Ids


@pytest.fixture(params=[SystemClock, ManualClock], ids=["system", "manual"])
def clock(request: pytest.FixtureRequest) -> Clock:
    return request.param()


@pytest.fixture(params=[SystemIds, SequentialIds], ids=["system", "sequential"])
def ids(request: pytest.FixtureRequest) -> Ids:
    return request.param()


def test_now_is_timezone_aware_utc(clock: Clock):
    now = clock.now()
    assert now.tzinfo is not None
    assert now.utcoffset() == UTC.utcoffset(now)


def test_time_never_goes_back(clock: Clock):
    first_now, first_mono = clock.now(), clock.monotonic()
    assert clock.now() >= first_now
    assert clock.monotonic() >= first_mono


def test_ids_are_uuid7_unique_and_ordered(ids: Ids):
    made = [ids.new_id() for _ in range(1000)]
    assert len(set(made)) == 1000
    assert made == sorted(made)
    assert all(uuid.UUID(i).version == 7 for i in made[:10])


def test_tokens_are_url_safe_and_long_enough(ids: Ids):
    token = ids.token()
    assert len(token) >= 43
    assert all(c.isalnum() or c in "-_" for c in token)
    assert ids.token() != token
    assert len(ids.token(16)) < len(token)


def test_random_is_in_the_unit_interval(ids: Ids):
    assert all(0.0 <= ids.random() < 1.0 for _ in range(100))


def test_random_bytes_have_the_requested_length_and_vary(ids: Ids):
    first = ids.random_bytes(24)
    assert len(first) == 24
    assert ids.random_bytes(24) != first
