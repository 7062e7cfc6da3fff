"""Webhook signing secrets: versions, rotation with overlap, and recovery through a master key.

A secret is never stored. Each version stores a random salt and the version of the master key
(`WEBHOOK_SECRET_KEY` in the Secrets port) it was made with; the secret is
`whsec_` + base64(HMAC-SHA256(master key, salt)). A copy of the database alone reveals nothing,
and the secret can be shown once and re-derived for every delivery. Rotating keeps the previous
version signing alongside the new one for `ROTATION_OVERLAP`, so receivers can switch without
losing a message.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime, timedelta
from enum import StrEnum

import msgspec

from core.webhooks.signing import SECRET_PREFIX

ROTATION_OVERLAP = timedelta(hours=24)
SALT_BYTES = 32
_DERIVATION_CONTEXT = b"pictor webhook signing secret v1\x00"


class SecretOwner(StrEnum):
    ENDPOINT = "endpoint"  # one registered endpoint's secret; owner_id is the endpoint's id
    ACCOUNT = "account"  # the account's secret for per-request webhook_url; owner_id is the user's id


class WebhookSecretVersion(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    owner: SecretOwner
    owner_id: str
    user_id: str
    key_version: str  # the master key version it was derived with
    salt: str  # base64 of SALT_BYTES random bytes
    created_at: datetime
    expires_at: datetime | None = None  # set when a rotation replaced it

    def is_live(self, now: datetime) -> bool:
        return self.expires_at is None or self.expires_at > now


def new_version(
    *, id: str, owner: SecretOwner, owner_id: str, user_id: str, key_version: str, salt: bytes, now: datetime
) -> WebhookSecretVersion:
    if len(salt) < SALT_BYTES:
        raise ValueError(f"a webhook secret needs {SALT_BYTES} random bytes of salt")
    return WebhookSecretVersion(
        id=id,
        owner=owner,
        owner_id=owner_id,
        user_id=user_id,
        key_version=key_version,
        salt=base64.b64encode(salt).decode("ascii"),
        created_at=now,
    )


def derive_secret(master_key: str, version: WebhookSecretVersion) -> str:
    """The `whsec_…` secret of `version` under the master key it names."""
    digest = hmac.new(
        master_key.encode(), _DERIVATION_CONTEXT + base64.b64decode(version.salt), hashlib.sha256
    ).digest()
    return SECRET_PREFIX + base64.b64encode(digest).decode("ascii")


def live_versions(versions: Sequence[WebhookSecretVersion], now: datetime) -> list[WebhookSecretVersion]:
    """The versions that sign now, newest first: the current one and any still in its overlap."""
    return sorted((v for v in versions if v.is_live(now)), key=lambda v: (v.created_at, v.id), reverse=True)


def retire(version: WebhookSecretVersion, now: datetime) -> WebhookSecretVersion:
    """`version` as a rotation leaves it: signing for ROTATION_OVERLAP more, then never again.
    A version already retiring keeps its earlier end (rotating twice does not extend it)."""
    ends = now + ROTATION_OVERLAP
    if version.expires_at is not None and version.expires_at <= ends:
        return version
    return msgspec.structs.replace(version, expires_at=ends)
