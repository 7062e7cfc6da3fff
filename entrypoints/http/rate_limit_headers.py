"""The IETF RateLimit header fields (draft-ietf-httpapi-ratelimit-headers), structured-field syntax.

`RateLimit-Policy: "default";q=60;w=60` — the caller's plan allows q requests per w seconds;
`RateLimit: "default";r=59;t=1` — r more requests may be sent now, and the limit is fully
replenished in t seconds. A 429 adds `Retry-After`.
"""

from __future__ import annotations

import math
from typing import Final

from core.billing.plans import PlanRateLimit
from core.rate_limit import RateLimitDecision

POLICY_NAME: Final = "default"


def rate_limit_policy(policy: PlanRateLimit) -> tuple[bytes, bytes]:
    """The `RateLimit-Policy` field of a plan (the same on every response: callers build it once)."""
    return b"ratelimit-policy", f'"{POLICY_NAME}";q={policy.requests};w={policy.per_seconds}'.encode()


def rate_limit_headers(policy: tuple[bytes, bytes], decision: RateLimitDecision) -> list[tuple[bytes, bytes]]:
    """The policy field, and the `RateLimit` field of this decision (+ `Retry-After` when denied)."""
    reset = max(0, math.ceil(decision.reset_after_seconds))
    headers = [policy, (b"ratelimit", f'"{POLICY_NAME}";r={decision.remaining};t={reset}'.encode())]
    if not decision.allowed:
        headers.append((b"retry-after", str(retry_after_seconds(decision)).encode()))
    return headers


def retry_after_seconds(decision: RateLimitDecision) -> int:
    """Whole seconds, rounded up and at least 1: a client that waits this long is let in."""
    return max(1, math.ceil(decision.retry_after_seconds))
