"""Every failure leaves as RFC 9457 problem+json carrying a stable `code` and the correlation id.

Built on Litestar's problem-details plugin: each exception type is converted to a `Problem`,
whose `to_response` adds what only the request knows (instance, correlation id).
"""

from __future__ import annotations

import logging
from typing import Any

import psycopg
import psycopg_pool
import valkey.exceptions
from litestar import Request, Response
from litestar.exceptions import HTTPException, ValidationException
from litestar.plugins.problem_details import (
    ProblemDetailsConfig,
    ProblemDetailsException,
    ProblemDetailsPlugin,
)

from core.errors import DomainError, ErrorCode, FieldError
from entrypoints.http.request_context import CORRELATION_SCOPE_KEY

log = logging.getLogger("pictor.http")

PROBLEM_TYPE_BASE = "/problems/"

_CODE_FOR_STATUS: dict[int, ErrorCode] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHENTICATED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    405: ErrorCode.METHOD_NOT_ALLOWED,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.PAYLOAD_TOO_LARGE,
    415: ErrorCode.UNSUPPORTED_MEDIA_TYPE,
    422: ErrorCode.VALIDATION_FAILED,
    429: ErrorCode.RATE_LIMITED,
    503: ErrorCode.SERVICE_UNAVAILABLE,
    504: ErrorCode.DEPENDENCY_TIMEOUT,
}


class Problem(ProblemDetailsException):
    """A problem with a catalog code; renders the contract's body shape."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, Any] | None = None,
        status: int | None = None,
    ) -> None:
        self.code = code
        self.errors = errors or []
        super().__init__(
            detail=detail or code.spec.title,
            status_code=status or code.status,
            headers=headers,
            extra=extra,
            type_=f"{PROBLEM_TYPE_BASE}{code.value}",
            title=code.spec.title,
        )

    def to_response(self, request: Request[Any, Any, Any]) -> Response[dict[str, Any]]:
        body: dict[str, Any] = {
            "type": self.type_,
            "title": self.title,
            "status": self.status_code,
            "detail": self.detail,
            "instance": request.url.path,
            "code": self.code.value,
            "correlation_id": request.scope.get(CORRELATION_SCOPE_KEY),
        }
        if self.errors or self.code is ErrorCode.VALIDATION_FAILED:
            body["errors"] = [{"field": e.field, "message": e.message, "code": e.code} for e in self.errors]
        if self.extra and isinstance(self.extra, dict):
            body.update({k: v for k, v in self.extra.items() if k not in body})
        return Response(
            body,
            status_code=self.status_code,
            headers=self.headers,
            media_type="application/problem+json",
        )


def from_domain_error(error: DomainError) -> Problem:
    return Problem(
        error.code,
        error.detail,
        errors=error.errors,
        headers=error.headers,
        extra=_json_safe(error.context),
    )


def from_validation_error(error: ValidationException) -> Problem:
    """Litestar's request validation (bodies, query and path parameters) → 422 with fields."""
    fields: list[FieldError] = []
    if isinstance(error.extra, list):
        for item in error.extra:
            if isinstance(item, dict):
                source = item.get("source")
                source = getattr(source, "value", source)  # Litestar's ParamType: "query", "path", …
                key = str(item.get("key") or "")
                field = f"{source}.{key}" if source and source != "body" and key else key or "body"
                fields.append(FieldError(field, str(item.get("message", "invalid")), "invalid"))
    detail = error.detail if isinstance(error.detail, str) else "The request is invalid"
    if not fields:
        fields.append(FieldError("body", detail, "invalid"))
    return Problem(ErrorCode.VALIDATION_FAILED, "The request is invalid; see errors", errors=fields)


def from_http_exception(error: HTTPException) -> Problem:
    code = _CODE_FOR_STATUS.get(error.status_code)
    if code is None:
        code = ErrorCode.INTERNAL_ERROR if error.status_code >= 500 else ErrorCode.BAD_REQUEST
    detail = error.detail if error.status_code < 500 else None
    return Problem(code, detail, headers=error.headers, status=error.status_code)


# A store that does not answer (PostgreSQL, Valkey, a pool with no free connection) is an outage
# the client can wait out, not a bug: 503 with Retry-After, not 500.
_UNAVAILABLE: tuple[type[BaseException], ...] = (
    ConnectionError,
    TimeoutError,
    valkey.exceptions.ConnectionError,
    valkey.exceptions.TimeoutError,
    psycopg.OperationalError,
    psycopg_pool.PoolTimeout,
)


def from_unexpected(error: Exception) -> Problem:
    # Logged with the traceback (and the correlation id, from the log context); the client sees
    # only the code and the id to quote.
    if isinstance(error, _UNAVAILABLE):
        log.warning("a dependency is unavailable: %r", error)
        return Problem(
            ErrorCode.SERVICE_UNAVAILABLE,
            "A service Pictor depends on is unavailable; retry shortly",
            headers={"Retry-After": "1"},
        )
    log.error("unhandled exception", exc_info=error)
    return Problem(ErrorCode.INTERNAL_ERROR, "An unexpected error occurred; quote the correlation id")


def _json_safe(context: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | None | list) else str(v) for k, v in context.items()
    }


def problem_details_plugin() -> ProblemDetailsPlugin:
    return ProblemDetailsPlugin(
        ProblemDetailsConfig(
            exception_to_problem_detail_map={
                DomainError: from_domain_error,
                ValidationException: from_validation_error,
                HTTPException: from_http_exception,
                Exception: from_unexpected,
            }
        )
    )
