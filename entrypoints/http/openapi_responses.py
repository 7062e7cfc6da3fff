"""OpenAPI descriptions of the error responses every route really sends: RFC 9457 problems."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.datastructures import ResponseSpec

from core.errors import ErrorCode


class ProblemField(msgspec.Struct):
    field: str
    message: str
    code: str


class Problem(msgspec.Struct):
    """An RFC 9457 problem: `code` is stable; quote `correlation_id` when reporting it."""

    type: str
    title: str
    status: int
    detail: str
    instance: str
    code: str
    correlation_id: str
    errors: list[ProblemField] | None = None


PROBLEM_MEDIA_TYPE = "application/problem+json"


def problem_responses(*codes: ErrorCode) -> dict[int, ResponseSpec]:
    """Responses for `codes` (grouped by status), plus the validation and server errors any route
    can answer with."""
    by_status: dict[int, list[str]] = {}
    # Every authenticated route (the ones that can answer `unauthenticated`) is rate limited.
    limited = (ErrorCode.RATE_LIMITED,) if ErrorCode.UNAUTHENTICATED in codes else ()
    for code in (
        *codes,
        *limited,
        ErrorCode.VALIDATION_FAILED,
        ErrorCode.BAD_REQUEST,
        ErrorCode.INTERNAL_ERROR,
    ):
        by_status.setdefault(code.status, []).append(code.value)
    return {
        status: ResponseSpec(
            data_container=Problem,
            media_type=PROBLEM_MEDIA_TYPE,
            description="Problem: " + ", ".join(f"`{c}`" for c in dict.fromkeys(names)),
            generate_examples=False,
        )
        for status, names in sorted(by_status.items())
    }


def health_response(description: str) -> ResponseSpec:
    return ResponseSpec(
        data_container=dict[str, Any],
        media_type="application/health+json",
        description=description,
        generate_examples=False,
    )
