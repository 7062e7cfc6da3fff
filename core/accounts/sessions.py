"""Login sessions: opaque tokens (only their SHA-256 stored), idle and absolute expiry."""

from __future__ import annotations

from datetime import datetime, timedelta

import msgspec

DEFAULT_IDLE_TIMEOUT = timedelta(hours=8)
DEFAULT_ABSOLUTE_LIFETIME = timedelta(days=7)
LAST_SEEN_RESOLUTION = timedelta(minutes=1)  # last_seen_at is written at most this often


class Session(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # public id (for listing and ending sessions); the token itself is never stored
    user_id: str
    token_hash: str
    created_at: datetime
    last_seen_at: datetime
    expires_at: datetime  # absolute end, whatever the activity
    idle_timeout_seconds: int
    ip: str | None = None
    user_agent: str | None = None

    def idle_expires_at(self) -> datetime:
        return self.last_seen_at + timedelta(seconds=self.idle_timeout_seconds)

    def effective_expires_at(self) -> datetime:
        return min(self.expires_at, self.idle_expires_at())

    def is_valid_at(self, now: datetime) -> bool:
        return now < self.effective_expires_at()

    def needs_touch(self, now: datetime) -> bool:
        """Whether `last_seen_at` is stale enough to be written again."""
        return now - self.last_seen_at >= LAST_SEEN_RESOLUTION


def new_session(
    *,
    session_id: str,
    user_id: str,
    token_hash: str,
    now: datetime,
    idle_timeout: timedelta = DEFAULT_IDLE_TIMEOUT,
    absolute_lifetime: timedelta = DEFAULT_ABSOLUTE_LIFETIME,
    ip: str | None = None,
    user_agent: str | None = None,
) -> Session:
    return Session(
        id=session_id,
        user_id=user_id,
        token_hash=token_hash,
        created_at=now,
        last_seen_at=now,
        expires_at=now + absolute_lifetime,
        idle_timeout_seconds=int(idle_timeout.total_seconds()),
        ip=ip,
        user_agent=(user_agent or "")[:512] or None,
    )
