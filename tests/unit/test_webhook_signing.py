"""Standard Webhooks signing: round trips, rotation, tampering, tolerance, and the reference package."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from core.webhooks.signing import (
    WebhookVerificationError,
    new_secret,
    secret_key,
    sign,
    signature_header,
    verify,
)

SECRET = new_secret(bytes(range(32)))
OTHER_SECRET = new_secret(bytes(range(100, 132)))
NOW = 1_760_000_000
BODY = b'{"type":"generation.succeeded","timestamp":"2025-10-09T08:53:20Z","data":{"id":"gen_1"}}'


def headers(signature: str, *, msg_id: str = "msg_1", timestamp: int = NOW) -> dict[str, str]:
    return {"webhook-id": msg_id, "webhook-timestamp": str(timestamp), "webhook-signature": signature}


def test_new_secret_is_whsec_base64_of_the_bytes_and_needs_24_bytes() -> None:
    raw = bytes(range(24))
    assert new_secret(raw) == "whsec_" + base64.b64encode(raw).decode()
    assert secret_key(new_secret(raw)) == raw
    with pytest.raises(ValueError, match="24"):
        new_secret(bytes(23))


@pytest.mark.parametrize("bad", ["", "whsec_", "sk_" + "A" * 40, "whsec_not*base64!", "whsec_" + "QUJD"])
def test_secret_key_refuses_bad_secrets(bad: str) -> None:
    with pytest.raises(ValueError, match="webhook secret"):
        secret_key(bad)


@given(
    raw=st.binary(min_size=24, max_size=64),
    msg_id=st.text(min_size=1, max_size=40).filter(lambda s: "\x00" not in s),
    timestamp=st.integers(min_value=0, max_value=2**40),
    body=st.binary(max_size=500),
)
def test_round_trip(raw: bytes, msg_id: str, timestamp: int, body: bytes) -> None:
    secret = new_secret(raw)
    verify(
        secret,
        headers(sign(secret, msg_id, timestamp, body), msg_id=msg_id, timestamp=timestamp),
        body,
        now=timestamp,
    )


def test_signature_has_the_standard_form() -> None:
    signature = sign(SECRET, "msg_1", NOW, BODY)
    version, _, encoded = signature.partition(",")
    assert version == "v1"
    assert len(base64.b64decode(encoded, validate=True)) == 32


def test_rotation_header_carries_two_signatures_and_either_secret_verifies() -> None:
    header = signature_header([SECRET, OTHER_SECRET], "msg_1", NOW, BODY)
    assert header.split(" ") == [sign(SECRET, "msg_1", NOW, BODY), sign(OTHER_SECRET, "msg_1", NOW, BODY)]
    verify(SECRET, headers(header), BODY, now=NOW)
    verify(OTHER_SECRET, headers(header), BODY, now=NOW)
    third = new_secret(bytes(range(200, 232)))
    with pytest.raises(WebhookVerificationError, match="no matching signature"):
        verify(third, headers(header), BODY, now=NOW)


def test_signature_header_needs_a_secret() -> None:
    with pytest.raises(ValueError):
        signature_header([], "msg_1", NOW, BODY)


def test_tampered_body_id_or_timestamp_fail() -> None:
    signature = sign(SECRET, "msg_1", NOW, BODY)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers(signature), BODY + b" ", now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers(signature, msg_id="msg_2"), BODY, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers(signature, timestamp=NOW + 1), BODY, now=NOW)


@given(flip=st.integers(min_value=0, max_value=len(BODY) * 8 - 1))
def test_any_flipped_body_bit_fails(flip: int) -> None:
    tampered = bytearray(BODY)
    tampered[flip // 8] ^= 1 << (flip % 8)
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, headers(sign(SECRET, "msg_1", NOW, BODY)), bytes(tampered), now=NOW)


def test_tolerance_window_both_ways() -> None:
    signature = sign(SECRET, "msg_1", NOW, BODY)
    verify(SECRET, headers(signature), BODY, now=NOW + 300)
    verify(SECRET, headers(signature), BODY, now=NOW - 300)
    with pytest.raises(WebhookVerificationError, match="too old"):
        verify(SECRET, headers(signature), BODY, now=NOW + 301)
    with pytest.raises(WebhookVerificationError, match="future"):
        verify(SECRET, headers(signature), BODY, now=NOW - 301)
    verify(SECRET, headers(signature), BODY, now=NOW + 3600, tolerance_seconds=3600)


@pytest.mark.parametrize("missing", ["webhook-id", "webhook-timestamp", "webhook-signature"])
def test_missing_headers_fail(missing: str) -> None:
    given_headers = headers(sign(SECRET, "msg_1", NOW, BODY))
    del given_headers[missing]
    with pytest.raises(WebhookVerificationError, match="missing"):
        verify(SECRET, given_headers, BODY, now=NOW)


@pytest.mark.parametrize("timestamp", ["abc", "1.5", "-1", "١٧٦٠٠٠٠٠٠٠", "9" * 20])
def test_malformed_timestamp_fails(timestamp: str) -> None:
    given_headers = headers(sign(SECRET, "msg_1", NOW, BODY))
    given_headers["webhook-timestamp"] = timestamp
    with pytest.raises(WebhookVerificationError):
        verify(SECRET, given_headers, BODY, now=NOW)


def test_header_names_are_case_insensitive_and_junk_entries_are_skipped() -> None:
    signature = "v2,abc v1,not*base64 garbage " + sign(SECRET, "msg_1", NOW, BODY)
    mixed = {"Webhook-Id": "msg_1", "WEBHOOK-TIMESTAMP": str(NOW), "Webhook-Signature": signature}
    verify(SECRET, mixed, BODY, now=NOW)


def test_reference_implementation_accepts_our_signatures_including_rotation() -> None:
    now = int(datetime.now(UTC).timestamp())
    header = signature_header([OTHER_SECRET, SECRET], "msg_ref", now, BODY)
    for secret in (SECRET, OTHER_SECRET):
        payload = standardwebhooks.Webhook(secret).verify(
            BODY, headers(header, msg_id="msg_ref", timestamp=now)
        )
        assert payload["data"] == {"id": "gen_1"}


def test_we_accept_the_reference_implementations_signatures() -> None:
    moment = datetime.fromtimestamp(NOW, tz=UTC)
    reference = standardwebhooks.Webhook(SECRET).sign("msg_ref", moment, BODY.decode())
    assert reference == sign(SECRET, "msg_ref", NOW, BODY)
    verify(SECRET, headers(reference, msg_id="msg_ref"), BODY, now=NOW)
    with pytest.raises(WebhookVerificationError):
        verify(OTHER_SECRET, headers(reference, msg_id="msg_ref"), BODY, now=NOW)
