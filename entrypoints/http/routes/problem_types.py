"""`/problems/{code}`: what each problem `type` URI means, straight from the error catalog."""

from __future__ import annotations

from typing import Any

from litestar import get
from litestar.params import FromPath

from core.errors import CATALOG, DomainError, ErrorCode
from entrypoints.http.openapi_responses import problem_responses


def _describe(code: ErrorCode) -> dict[str, Any]:
    spec = CATALOG[code]
    return {"code": code.value, "status": spec.status, "category": spec.category.value, "title": spec.title}


@get("/problems", tags=["operations"], sync_to_thread=False)
def list_problem_types() -> dict[str, Any]:
    """Every error code a client can receive."""
    return {"data": [_describe(code) for code in ErrorCode]}


@get(
    "/problems/{code:str}",
    tags=["operations"],
    sync_to_thread=False,
    responses=problem_responses(ErrorCode.NOT_FOUND),
)
def get_problem_type(code: FromPath[str]) -> dict[str, Any]:
    try:
        return _describe(ErrorCode(code))
    except ValueError:
        raise DomainError(ErrorCode.NOT_FOUND, f"No problem type {code!r}") from None
