"""Correlation ids: a caller's `X-Request-ID` is kept when it is safe to log and echo."""

from __future__ import annotations

import re

_SAFE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def accept_request_id(candidate: str | None) -> str | None:
    """The caller's request id if it is 1-128 characters of [A-Za-z0-9._:-], else None."""
    if candidate and _SAFE_REQUEST_ID.fullmatch(candidate):
        return candidate
    return None
