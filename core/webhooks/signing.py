"""Standard Webhooks signatures (https://www.standardwebhooks.com/), as pure functions.

A secret is `whsec_` + base64 of random bytes. A signature is
`v1,<base64 HMAC-SHA256 of "{msg_id}.{timestamp}.{body}">`; during a secret rotation the
`webhook-signature` header carries one such value per live secret, separated by spaces, and a
receiver accepts the message when any of them matches. Time and randomness come in as values.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

SECRET_PREFIX = "whsec_"
MIN_SECRET_BYTES = 24
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
# Unix seconds fit in 19 digits; longer values are garbage, refused before int() parses them.
_MAX_TIMESTAMP_DIGITS = 19


class WebhookVerificationError(Exception):
    """The message cannot be trusted: headers missing or malformed, timestamp outside tolerance,
    or no signature made with the secret."""


def new_secret(random_bytes: bytes) -> str:
    """A new endpoint secret from `random_bytes` (the caller draws them from the Ids/Secrets port)."""
    if len(random_bytes) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret needs at least {MIN_SECRET_BYTES} random bytes")
    return SECRET_PREFIX + base64.b64encode(random_bytes).decode("ascii")


def secret_key(secret: str) -> bytes:
    """The HMAC key inside a `whsec_…` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError(f"a webhook secret must start with {SECRET_PREFIX!r}")
    encoded = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("a webhook secret must be whsec_ followed by standard base64") from exc
    if len(key) < MIN_SECRET_BYTES:
        raise ValueError(f"a webhook secret must hold at least {MIN_SECRET_BYTES} bytes")
    return key


def _digest(key: bytes, msg_id: str, timestamp: int, body: bytes) -> bytes:
    signed_content = f"{msg_id}.{timestamp}.".encode() + body
    return hmac.new(key, signed_content, hashlib.sha256).digest()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `v1,…` signature of one message under one secret."""
    digest = _digest(secret_key(secret), msg_id, timestamp, body)
    return f"{SIGNATURE_VERSION},{base64.b64encode(digest).decode('ascii')}"


def signature_header(secrets: Sequence[str], msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value: one signature per live secret (several during a rotation)."""
    if not secrets:
        raise ValueError("at least one secret is needed to sign a webhook")
    return " ".join(sign(secret, msg_id, timestamp, body) for secret in secrets)


def _parse_timestamp(raw: str) -> int:
    if not (0 < len(raw) <= _MAX_TIMESTAMP_DIGITS and raw.isascii() and raw.isdigit()):
        raise WebhookVerificationError("webhook-timestamp is not a Unix time in seconds")
    return int(raw)


def _candidate_digests(header: str) -> list[bytes]:
    """The decoded `v1` signatures of a header; other versions and malformed entries are skipped."""
    digests: list[bytes] = []
    for entry in header.split(" "):
        version, sep, encoded = entry.partition(",")
        if not sep or version != SIGNATURE_VERSION:
            continue
        try:
            digests.append(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            continue
    return digests


def verify(
    secret: str,
    headers: Mapping[str, str],
    body: bytes,
    now: int,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> None:
    """Accept the message or raise WebhookVerificationError.

    Header names are case-insensitive. The timestamp must lie within `tolerance_seconds` of
    `now` either way (replay protection), and one `v1` signature must match in constant time.
    A malformed `secret` is a configuration error and raises ValueError, not a verification error.
    """
    lowered = {name.lower(): value for name, value in headers.items()}
    msg_id = lowered.get("webhook-id")
    raw_timestamp = lowered.get("webhook-timestamp")
    signatures = lowered.get("webhook-signature")
    if not (msg_id and raw_timestamp and signatures):
        raise WebhookVerificationError("missing webhook-id, webhook-timestamp or webhook-signature")
    timestamp = _parse_timestamp(raw_timestamp)
    if timestamp < now - tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is too old")
    if timestamp > now + tolerance_seconds:
        raise WebhookVerificationError("webhook-timestamp is in the future")
    expected = _digest(secret_key(secret), msg_id, timestamp, body)
    # Compare against every candidate without stopping early, so timing reveals nothing about
    # which entry matched.
    matched = False
    for candidate in _candidate_digests(signatures):
        matched |= hmac.compare_digest(expected, candidate)
    if not matched:
        raise WebhookVerificationError("no matching signature")
