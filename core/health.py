"""Readiness as the health+json draft describes it: each check passes, warns or fails."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum

import msgspec


class HealthStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"


class CheckResult(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    status: HealthStatus
    required: bool = True
    duration_ms: float = 0.0
    output: str | None = None  # why it failed; never a secret or a connection string


def overall_status(checks: Iterable[CheckResult], *, shutting_down: bool = False) -> HealthStatus:
    """Fail when shutting down or a required check fails; warn when an optional one does."""
    if shutting_down:
        return HealthStatus.FAIL
    status = HealthStatus.PASS
    for check in checks:
        if check.status is HealthStatus.PASS:
            continue
        if check.required and check.status is HealthStatus.FAIL:
            return HealthStatus.FAIL
        status = HealthStatus.WARN
    return status
