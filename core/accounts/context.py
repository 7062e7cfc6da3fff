"""Facts about the request a use case serves, passed in as values (the core never sees HTTP)."""

from __future__ import annotations

from datetime import timedelta

import msgspec

from core.accounts.passwords import DEFAULT_MIN_LENGTH
from core.accounts.sessions import DEFAULT_ABSOLUTE_LIFETIME, DEFAULT_IDLE_TIMEOUT
from core.rate_limit import RateLimit


class Caller(msgspec.Struct, frozen=True, kw_only=True):
    ip: str | None = None
    user_agent: str | None = None
    correlation_id: str | None = None


class AccountPolicy(msgspec.Struct, frozen=True, kw_only=True):
    """Operator-tunable rules of the accounts use cases."""

    password_min_length: int = DEFAULT_MIN_LENGTH
    session_idle_timeout: timedelta = DEFAULT_IDLE_TIMEOUT
    session_absolute_lifetime: timedelta = DEFAULT_ABSOLUTE_LIFETIME
    # Failed logins: per account, then per client address (a spray across many accounts).
    login_failures_per_account: RateLimit = RateLimit(requests=5, period_seconds=900, burst=5)
    login_failures_per_ip: RateLimit = RateLimit(requests=30, period_seconds=900, burst=30)
