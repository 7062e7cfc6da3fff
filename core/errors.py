"""The error catalog: every failure a client can see has a stable code, status, category and title.

Use cases raise `DomainError(ErrorCode.X, "what happened", **context)`; the HTTP layer renders it as
RFC 9457 problem+json. Codes are part of the public contract: add new ones, never rename.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple


class ErrorCategory(StrEnum):
    CLIENT = "client"  # the request itself is wrong
    AUTH = "auth"  # who you are or what you may do
    LIMIT = "limit"  # quotas, rate limits, sizes
    CONFLICT = "conflict"  # the state of the resource forbids it
    DEPENDENCY = "dependency"  # a service we rely on failed
    SERVER = "server"  # our fault


class ErrorSpec(NamedTuple):
    status: int
    category: ErrorCategory
    title: str


class ErrorCode(StrEnum):
    BAD_REQUEST = "bad_request"
    VALIDATION_FAILED = "validation_failed"
    INVALID_CURSOR = "invalid_cursor"
    UNAUTHENTICATED = "unauthenticated"
    INVALID_CREDENTIALS = "invalid_credentials"
    FORBIDDEN = "forbidden"
    INSUFFICIENT_SCOPE = "insufficient_scope"
    INVALID_SIGNATURE = "invalid_signature"
    LINK_EXPIRED = "link_expired"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    CONFLICT = "conflict"
    EMAIL_TAKEN = "email_taken"
    INVALID_STATE = "invalid_state"
    IDEMPOTENCY_IN_PROGRESS = "idempotency_in_progress"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    WEAK_PASSWORD = "weak_password"
    PROMPT_REJECTED = "prompt_rejected"
    UNSAFE_URL = "unsafe_url"
    UNKNOWN_PLAN = "unknown_plan"
    QUOTA_EXCEEDED = "quota_exceeded"
    PAYLOAD_TOO_LARGE = "payload_too_large"
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"
    RATE_LIMITED = "rate_limited"
    TOO_MANY_ATTEMPTS = "too_many_attempts"
    CONCURRENCY_LIMIT = "concurrency_limit"
    SECRET_MISSING = "secret_missing"
    SERVICE_UNAVAILABLE = "service_unavailable"
    DEPENDENCY_TIMEOUT = "dependency_timeout"
    INTERNAL_ERROR = "internal_error"

    @property
    def spec(self) -> ErrorSpec:
        return CATALOG[self]

    @property
    def status(self) -> int:
        return CATALOG[self].status

    @property
    def category(self) -> ErrorCategory:
        return CATALOG[self].category


_C, _A, _L = ErrorCategory.CLIENT, ErrorCategory.AUTH, ErrorCategory.LIMIT
_X, _D, _S = ErrorCategory.CONFLICT, ErrorCategory.DEPENDENCY, ErrorCategory.SERVER

CATALOG: dict[ErrorCode, ErrorSpec] = {
    ErrorCode.BAD_REQUEST: ErrorSpec(400, _C, "Bad request"),
    ErrorCode.VALIDATION_FAILED: ErrorSpec(422, _C, "Validation failed"),
    ErrorCode.INVALID_CURSOR: ErrorSpec(400, _C, "Invalid pagination cursor"),
    ErrorCode.UNAUTHENTICATED: ErrorSpec(401, _A, "Authentication required"),
    ErrorCode.INVALID_CREDENTIALS: ErrorSpec(401, _A, "Invalid credentials"),
    ErrorCode.FORBIDDEN: ErrorSpec(403, _A, "Forbidden"),
    ErrorCode.INSUFFICIENT_SCOPE: ErrorSpec(403, _A, "Insufficient scope"),
    ErrorCode.INVALID_SIGNATURE: ErrorSpec(403, _A, "Invalid signature"),
    ErrorCode.LINK_EXPIRED: ErrorSpec(403, _A, "Link expired"),
    ErrorCode.NOT_FOUND: ErrorSpec(404, _C, "Not found"),
    ErrorCode.METHOD_NOT_ALLOWED: ErrorSpec(405, _C, "Method not allowed"),
    ErrorCode.CONFLICT: ErrorSpec(409, _X, "Conflict"),
    ErrorCode.EMAIL_TAKEN: ErrorSpec(409, _X, "Email already registered"),
    ErrorCode.INVALID_STATE: ErrorSpec(409, _X, "Invalid state for this operation"),
    ErrorCode.IDEMPOTENCY_IN_PROGRESS: ErrorSpec(
        409, _X, "A request with this idempotency key is in progress"
    ),
    ErrorCode.IDEMPOTENCY_KEY_REUSED: ErrorSpec(422, _C, "Idempotency key reused with a different request"),
    ErrorCode.WEAK_PASSWORD: ErrorSpec(422, _C, "Password does not meet the policy"),
    ErrorCode.PROMPT_REJECTED: ErrorSpec(422, _C, "Prompt rejected by policy"),
    ErrorCode.UNSAFE_URL: ErrorSpec(422, _C, "URL not allowed"),
    ErrorCode.UNKNOWN_PLAN: ErrorSpec(422, _C, "Unknown plan"),
    ErrorCode.QUOTA_EXCEEDED: ErrorSpec(402, _L, "Quota exceeded"),
    ErrorCode.PAYLOAD_TOO_LARGE: ErrorSpec(413, _L, "Payload too large"),
    ErrorCode.UNSUPPORTED_MEDIA_TYPE: ErrorSpec(415, _C, "Unsupported media type"),
    ErrorCode.RATE_LIMITED: ErrorSpec(429, _L, "Rate limit exceeded"),
    ErrorCode.TOO_MANY_ATTEMPTS: ErrorSpec(429, _L, "Too many attempts"),
    ErrorCode.CONCURRENCY_LIMIT: ErrorSpec(429, _L, "Too many concurrent jobs"),
    ErrorCode.SECRET_MISSING: ErrorSpec(500, _S, "Secret not configured"),
    ErrorCode.SERVICE_UNAVAILABLE: ErrorSpec(503, _D, "Service unavailable"),
    ErrorCode.DEPENDENCY_TIMEOUT: ErrorSpec(504, _D, "A dependency timed out"),
    ErrorCode.INTERNAL_ERROR: ErrorSpec(500, _S, "Internal server error"),
}


class FieldError(NamedTuple):
    """One invalid input field, as listed in a `validation_failed` problem's `errors`."""

    field: str
    message: str
    code: str = "invalid"


class DomainError(Exception):
    """A failure the client can act on. `context` is safe to show (it ends up in the problem body)."""

    def __init__(
        self,
        code: ErrorCode,
        detail: str | None = None,
        *,
        errors: list[FieldError] | None = None,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> None:
        self.code = code
        self.detail = detail or code.spec.title
        self.errors = errors or []
        self.headers = headers or {}
        self.context = context
        super().__init__(f"{code}: {self.detail}")


class BlobNotFound(DomainError):
    def __init__(self, key: str) -> None:
        super().__init__(ErrorCode.NOT_FOUND, "No such file", key=key)
