"""The idempotency rules: key syntax, request fingerprints and what a repeated request gets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.errors import DomainError, ErrorCode
from core.idempotency import (
    RETENTION,
    Decision,
    IdempotencyStatus,
    canonical_json,
    complete,
    decide,
    fingerprint,
    new_record,
    validate_key,
)

T0 = datetime(2026, 3, 1, 12, tzinfo=UTC)
USER = "01900000-0000-7000-8000-000000000002"
BODY = {"prompt": "a cat", "n": 2, "size": "512x512"}
PRINT = fingerprint("POST", "/v1/generations", BODY)

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**53), 2**53) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("key", ["a", "x" * 255, "order-42:retry", "!~ key with spaces ~!", "0" * 36])
def test_keys_of_printable_ascii_are_accepted(key: str) -> None:
    assert validate_key(key) == key


@pytest.mark.parametrize("key", ["", "x" * 256, "tab\there", "new\nline", "caf\u00e9", "\x7f", "nul\x00"])
def test_other_keys_are_validation_failed(key: str) -> None:
    with pytest.raises(DomainError) as raised:
        validate_key(key)
    assert raised.value.code is ErrorCode.VALIDATION_FAILED
    assert [(e.field, e.code) for e in raised.value.errors] == [
        ("Idempotency-Key", "invalid_idempotency_key")
    ]


def test_the_fingerprint_ignores_key_order_and_whitespace_but_not_values() -> None:
    reordered = {"size": "512x512", "n": 2, "prompt": "a cat"}
    assert fingerprint("post", "/v1/generations", reordered) == PRINT
    assert canonical_json(reordered) == b'{"n":2,"prompt":"a cat","size":"512x512"}'
    assert fingerprint("POST", "/v1/generations", {**BODY, "n": 3}) != PRINT
    assert fingerprint("POST", "/v1/uploads", BODY) != PRINT
    assert fingerprint("PUT", "/v1/generations", BODY) != PRINT
    assert len(PRINT) == 64 and int(PRINT, 16) >= 0


def test_parts_cannot_shift_into_each_other() -> None:
    assert fingerprint("POST", "/a", "b") != fingerprint("POST", "/a\x00", "b")
    assert fingerprint("POS", "T/a", None) != fingerprint("POST", "/a", None)


@given(st.dictionaries(st.text(max_size=8), json_values, max_size=6))
def test_equal_bodies_have_equal_fingerprints_whatever_their_order(body: dict[str, Any]) -> None:
    backwards = dict(reversed(list(body.items())))
    assert fingerprint("POST", "/v1/generations", backwards) == fingerprint("POST", "/v1/generations", body)


@given(json_values, json_values)
def test_different_bodies_have_different_fingerprints(first: Any, second: Any) -> None:
    same = canonical_json(first) == canonical_json(second)
    assert (fingerprint("POST", "/p", first) == fingerprint("POST", "/p", second)) == same


def test_a_new_record_is_in_progress_for_24_hours() -> None:
    record = new_record(USER, "k1", PRINT, T0)
    assert record.status is IdempotencyStatus.IN_PROGRESS
    assert record.expires_at == T0 + timedelta(hours=24) == T0 + RETENTION
    assert record.response_status is None
    with pytest.raises(DomainError):
        new_record(USER, "", PRINT, T0)


def test_no_record_or_an_expired_one_means_proceed() -> None:
    assert decide(None, PRINT, T0) is Decision.PROCEED
    done = complete(new_record(USER, "k1", PRINT, T0), response_status=202, response_body=b"{}")
    assert decide(done, "another-request", T0 + RETENTION) is Decision.PROCEED
    assert decide(new_record(USER, "k1", PRINT, T0), PRINT, T0 + RETENTION) is Decision.PROCEED


def test_the_same_request_after_completion_is_replayed() -> None:
    done = complete(
        new_record(USER, "k1", PRINT, T0),
        response_status=202,
        response_body=b'{"id": "g"}',
        response_headers=(("Location", "/v1/generations/g"),),
    )
    assert (done.status, done.response_status, done.response_body) == (
        IdempotencyStatus.COMPLETED,
        202,
        b'{"id": "g"}',
    )
    assert decide(done, PRINT, T0 + RETENTION - timedelta(microseconds=1)) is Decision.REPLAY
    with pytest.raises(DomainError) as raised:
        complete(done, response_status=200, response_body=b"")
    assert raised.value.code is ErrorCode.INVALID_STATE


def test_the_same_request_while_in_progress_is_409_with_retry_after() -> None:
    with pytest.raises(DomainError) as raised:
        decide(new_record(USER, "k1", PRINT, T0), PRINT, T0 + timedelta(seconds=1))
    assert raised.value.code is ErrorCode.IDEMPOTENCY_IN_PROGRESS
    assert raised.value.code.status == 409
    assert raised.value.headers == {"Retry-After": "1"}


@pytest.mark.parametrize("status", list(IdempotencyStatus))
def test_another_request_under_the_key_is_422_whatever_the_state(status: IdempotencyStatus) -> None:
    record = new_record(USER, "k1", PRINT, T0)
    if status is IdempotencyStatus.COMPLETED:
        record = complete(record, response_status=202, response_body=b"{}")
    with pytest.raises(DomainError) as raised:
        decide(record, fingerprint("POST", "/v1/generations", {**BODY, "n": 1}), T0)
    assert raised.value.code is ErrorCode.IDEMPOTENCY_KEY_REUSED
    assert raised.value.code.status == 422
