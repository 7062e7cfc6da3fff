"""Append-only records of security events."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

import msgspec


class AuditAction(StrEnum):
    REGISTERED = "user.registered"
    EMAIL_VERIFIED = "user.email_verified"
    LOGIN_SUCCEEDED = "login.succeeded"
    LOGIN_FAILED = "login.failed"
    SUSPICIOUS_ACTIVITY = "login.suspicious_activity"
    LOGGED_OUT = "session.logged_out"
    SESSION_ENDED = "session.ended"
    ALL_SESSIONS_ENDED = "session.all_ended"
    PASSWORD_CHANGED = "password.changed"
    PASSWORD_RESET_REQUESTED = "password.reset_requested"
    PASSWORD_RESET = "password.reset"
    API_KEY_CREATED = "api_key.created"
    API_KEY_REVOKED = "api_key.revoked"
    ROLE_CHANGED = "user.role_changed"
    STATUS_CHANGED = "user.status_changed"
    PROFILE_UPDATED = "user.profile_updated"
    PLAN_CHANGED = "user.plan_changed"
    SUBSCRIPTION_UPDATED = "subscription.updated"  # recorded from the published domain event
    FLAG_CREATED = "feature_flag.created"
    FLAG_UPDATED = "feature_flag.updated"
    FLAG_DELETED = "feature_flag.deleted"
    JOB_RETRIED = "job.retried"  # an operator queued a failed or aborted job again
    JOB_ABORTED = "job.aborted"  # an operator stopped a queued or running job


class AuditRecord(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    occurred_at: datetime
    action: AuditAction
    actor_id: str | None  # who did it (None: anonymous, e.g. a failed login)
    target_type: str | None = None
    target_id: str | None = None
    ip: str | None = None
    correlation_id: str | None = None
    details: dict[str, Any] = {}  # never a secret: no passwords, tokens or keys
