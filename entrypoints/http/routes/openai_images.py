"""The OpenAI-compatible endpoint (API.md "OpenAI-compatible endpoint"): `POST /v1/images/generations`.

The official `openai` client works against Pictor with only `base_url` changed: the request is the
OpenAI Images API's, translated into a Pictor generation that is accepted and waited for (up to
`PICTOR_GENERATION_WAIT_MAX_SECONDS`); the answer is `{created, data: [{url | b64_json,
revised_prompt}]}`. Errors on this path, and only here, use OpenAI's body
`{"error": {"message", "type", "param", "code"}}` with `code` our stable error code, so the client
raises its usual exceptions (`AuthenticationError`, `BadRequestError`, ...).

Translation choices:
- `size` defaults to 1024x1024 (OpenAI's default) when the caller's plan allows it, else to the
  largest square size the plan allows; `"auto"` means the same default.
- `style` `vivid` → `digital-art`, `natural` → `photographic`; Pictor's own styles pass through.
- `model`, `quality`, `user` and any other field OpenAI defines are accepted and ignored.
- Request validation errors answer `400` (OpenAI's status for a bad request) instead of `422`.
- A generation that has not finished at the deadline is canceled (its images go back to the quota:
  the client cannot fetch it later) and the answer is `504` with code `timeout` and
  `x-should-retry: false` (a retry would wait just as long).
"""

from __future__ import annotations

import asyncio
import base64
import logging
from typing import Any, Final, Literal

import msgspec
from litestar import Controller, Request, Response, post
from litestar.exceptions import HTTPException, ValidationException
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.plugins.problem_details import ProblemDetailsException
from litestar.types import ExceptionHandlersMap

from core.accounts.api_keys import Scope
from core.accounts.principal import Principal
from core.billing.plans import Plan, PlanCatalog
from core.errors import DomainError, ErrorCategory, ErrorCode
from core.generations.generation import Generation, GenerationStatus
from core.generations.requests import ALLOWED_SIZES, GenerationRequest, parse_size
from core.generations.service import Generations
from core.ports import BlobStore
from entrypoints.business_metrics import observe_generation_canceled, observing_generation_acceptance
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal
from entrypoints.http.problems import (
    Problem,
    from_domain_error,
    from_http_exception,
    from_unexpected,
    from_validation_error,
)
from entrypoints.http.routes.generations import IMAGE_LINK_LIFETIME
from entrypoints.http.svcs_plugin import SvcsContainer
from entrypoints.settings import Settings
from entrypoints.use_cases import generations_from

log = logging.getLogger("pictor.openai")

OPENAI_DEFAULT_SIZE: Final = "1024x1024"
# OpenAI's two styles, in Pictor's words.
OPENAI_STYLES: Final = {"vivid": "digital-art", "natural": "photographic"}
TIMEOUT_CODE: Final = "timeout"


class OpenAIImageRequest(msgspec.Struct, kw_only=True):
    """OpenAI's `images.generate` body. Unknown fields are ignored: the client and newer models
    send more than Pictor uses."""

    prompt: str
    model: str | None = None
    n: int | None = None
    size: str | None = None
    response_format: str | None = None  # "url" (default) or "b64_json"
    quality: str | None = None
    style: str | None = None
    user: str | None = None  # OpenAI's end-user id; Pictor knows its caller already


class OpenAIImage(msgspec.Struct, kw_only=True, omit_defaults=True):
    url: str | None = None  # a signed link, valid for an hour
    b64_json: str | None = None  # the PNG's bytes
    revised_prompt: str | None = None  # the prompt as rendered (cleaned)


class OpenAIImagesResponse(msgspec.Struct, kw_only=True):
    created: int  # Unix seconds
    data: list[OpenAIImage]


class OpenAIErrorDetail(msgspec.Struct, kw_only=True):
    message: str
    type: str
    param: str | None
    code: str


class OpenAIErrorBody(msgspec.Struct, kw_only=True):
    error: OpenAIErrorDetail


class OpenAIError(Exception):
    """A failure that exists only on this path (the render's outcome, the deadline)."""

    def __init__(
        self,
        status: int,
        type_: str,
        code: str,
        message: str,
        *,
        param: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.type_ = type_
        self.code = code
        self.message = message
        self.param = param
        self.headers = headers or {}


# --- request → generation ------------------------------------------------------------------


def default_size(plan: Plan) -> str:
    """OpenAI's default size when the plan allows it, else the largest square size within the
    plan's pixel cap (the smallest allowed size when none fits: validation then says why)."""
    squares = [
        (width, size)
        for size in ALLOWED_SIZES
        if (dimensions := parse_size(size)) is not None
        and (width := dimensions[0]) == dimensions[1]
        and width * width <= plan.max_image_pixels
    ]
    wanted = parse_size(OPENAI_DEFAULT_SIZE)
    assert wanted is not None
    fitting = [(width, size) for width, size in squares if width <= wanted[0]]
    if not fitting:
        return min(ALLOWED_SIZES, key=_pixels)
    return max(fitting)[1]


def _pixels(size: str) -> int:
    dimensions = parse_size(size)
    return 0 if dimensions is None else dimensions[0] * dimensions[1]


def generation_request(body: OpenAIImageRequest, plan: Plan) -> GenerationRequest:
    """The Pictor request an OpenAI request stands for (validated by the use case as usual)."""
    size = body.size
    if size is None or size.strip().lower() == "auto":
        size = default_size(plan)
    style = body.style
    if style is not None:
        style = OPENAI_STYLES.get(style.strip().lower(), style)
    return GenerationRequest(prompt=body.prompt, size=size, n=1 if body.n is None else body.n, style=style)


def response_format_of(body: OpenAIImageRequest) -> Literal["url", "b64_json"]:
    value = (body.response_format or "url").strip().lower()
    if value == "url":
        return "url"
    if value == "b64_json":
        return "b64_json"
    raise OpenAIError(
        400,
        "invalid_request_error",
        ErrorCode.VALIDATION_FAILED.value,
        "response_format must be 'url' or 'b64_json'",
        param="response_format",
    )


# --- generation → response -----------------------------------------------------------------


async def images_of(
    generation: Generation, blobs: BlobStore, response_format: Literal["url", "b64_json"]
) -> list[OpenAIImage]:
    if response_format == "url":
        links = await asyncio.gather(
            *(blobs.signed_url(image.blob_key, expires_in=IMAGE_LINK_LIFETIME) for image in generation.images)
        )
        return [OpenAIImage(url=link.url, revised_prompt=generation.prompt) for link in links]
    blobs_read = await asyncio.gather(*(blobs.get(image.blob_key) for image in generation.images))
    return [
        OpenAIImage(b64_json=base64.b64encode(blob.data).decode("ascii"), revised_prompt=generation.prompt)
        for blob in blobs_read
    ]


async def finished_or_canceled(
    generations: Generations, principal: Principal, generation: Generation
) -> Generation:
    """A generation still running at the deadline is canceled (refunded); if it finished in the
    meantime, the finished one."""
    if generation.is_finished:
        return generation
    try:
        await generations.cancel(principal, generation.id)
        observe_generation_canceled()
    except DomainError as error:
        if error.code is not ErrorCode.INVALID_STATE:
            raise
        return await generations.get(principal, generation.id)  # it just finished
    raise OpenAIError(
        504,
        "server_error",
        TIMEOUT_CODE,
        "The images were not ready in time; the generation was canceled and not charged",
        headers={"x-should-retry": "false"},
    )


def unsuccessful(generation: Generation) -> OpenAIError:
    if generation.status is GenerationStatus.FAILED:
        return OpenAIError(
            500,
            "server_error",
            generation.error_code or ErrorCode.INTERNAL_ERROR.value,
            generation.error_message or "The generation failed",
        )
    # Canceled by another request (POST /v1/generations/{id}/cancel) while this one waited.
    return OpenAIError(
        409,
        "invalid_request_error",
        ErrorCode.INVALID_STATE.value,
        "The generation was canceled",
        headers={"x-should-retry": "false"},
    )


# --- errors in OpenAI's shape ----------------------------------------------------------------

_TYPE_OF_CODE: Final = {
    ErrorCode.UNAUTHENTICATED: "authentication_error",
    ErrorCode.INVALID_CREDENTIALS: "authentication_error",
    ErrorCode.FORBIDDEN: "permission_error",
    ErrorCode.INSUFFICIENT_SCOPE: "permission_error",
    ErrorCode.QUOTA_EXCEEDED: "insufficient_quota",
    ErrorCode.RATE_LIMITED: "rate_limit_error",
    ErrorCode.CONCURRENCY_LIMIT: "rate_limit_error",
}
_TYPE_OF_CATEGORY: Final = {
    ErrorCategory.DEPENDENCY: "server_error",
    ErrorCategory.SERVER: "server_error",
}


def openai_error_response(
    status: int, type_: str, code: str, message: str, param: str | None, headers: dict[str, str]
) -> Response[bytes]:
    body = OpenAIErrorBody(error=OpenAIErrorDetail(message=message, type=type_, param=param, code=code))
    return Response(
        msgspec.json.encode(body), status_code=status, headers=headers, media_type="application/json"
    )


def problem_as_openai(problem: Problem) -> Response[bytes]:
    """A Pictor problem in OpenAI's body. Validation (422) answers 400, OpenAI's status for it."""
    code = problem.code
    status = 400 if problem.status_code == 422 else problem.status_code
    type_ = _TYPE_OF_CODE.get(code) or _TYPE_OF_CATEGORY.get(code.category, "invalid_request_error")
    message = str(problem.detail or code.spec.title)
    if problem.errors:
        message += ": " + "; ".join(f"{e.field}: {e.message}" for e in problem.errors)
    param = problem.errors[0].field if problem.errors else None
    return openai_error_response(status, type_, code.value, message, param, dict(problem.headers or {}))


def handle_openai_error(_: Request[Any, Any, Any], error: OpenAIError) -> Response[bytes]:
    return openai_error_response(
        error.status, error.type_, error.code, error.message, error.param, dict(error.headers)
    )


def handle_domain_error(_: Request[Any, Any, Any], error: DomainError) -> Response[bytes]:
    return problem_as_openai(from_domain_error(error))


def handle_validation_error(_: Request[Any, Any, Any], error: ValidationException) -> Response[bytes]:
    return problem_as_openai(from_validation_error(error))


def handle_problem(_: Request[Any, Any, Any], error: ProblemDetailsException) -> Response[bytes]:
    if isinstance(error, Problem):
        return problem_as_openai(error)
    return handle_http_exception(_, error)


def handle_http_exception(_: Request[Any, Any, Any], error: HTTPException) -> Response[bytes]:
    return problem_as_openai(from_http_exception(error))


def handle_unexpected(_: Request[Any, Any, Any], error: Exception) -> Response[bytes]:
    return problem_as_openai(from_unexpected(error))  # logged there, nothing internal leaves


# Every exception type the app's problem-details plugin handles, so none of its problem+json
# bodies leaves this path (Litestar picks the handler of the nearest layer, by exception MRO).
OPENAI_EXCEPTION_HANDLERS: Final[ExceptionHandlersMap] = {
    OpenAIError: handle_openai_error,
    DomainError: handle_domain_error,
    ValidationException: handle_validation_error,
    ProblemDetailsException: handle_problem,
    HTTPException: handle_http_exception,
    Exception: handle_unexpected,
}


def _error_spec(description: str) -> ResponseSpec:
    return ResponseSpec(data_container=OpenAIErrorBody, description=description, generate_examples=False)


_ERROR_RESPONSES: Final = {
    400: _error_spec("OpenAI error body: invalid request (`validation_failed`, `prompt_rejected`)"),
    401: _error_spec("OpenAI error body: `unauthenticated`"),
    402: _error_spec("OpenAI error body: `quota_exceeded`"),
    403: _error_spec("OpenAI error body: `insufficient_scope`"),
    429: _error_spec("OpenAI error body: `rate_limited`, `concurrency_limit`"),
    500: _error_spec("OpenAI error body: the generation failed (its error code), `internal_error`"),
    504: _error_spec("OpenAI error body: `timeout` (the generation was canceled, not charged)"),
}


class OpenAIImagesController(Controller):
    path = "/v1/images"
    tags = ["openai"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY
    exception_handlers = OPENAI_EXCEPTION_HANDLERS

    @post("/generations", status_code=200, responses=_ERROR_RESPONSES)
    async def create_images(
        self, data: JSONBody[OpenAIImageRequest], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> OpenAIImagesResponse:
        """OpenAI's `images.generate`: renders and waits (up to the server's limit, 60 s by default),
        answering the images as signed links (`url`) or base64 PNGs (`b64_json`). Needs the
        `generations:write` and `generations:read` scopes."""
        # Both scopes up front: a generation must not be created that this request cannot read.
        principal.require_scope(Scope.GENERATIONS_WRITE)
        principal.require_scope(Scope.GENERATIONS_READ)
        response_format = response_format_of(data)
        generations = await generations_from(svcs_container)
        blobs, catalog, settings = await svcs_container.aget(BlobStore, PlanCatalog, Settings)
        request = generation_request(data, catalog.effective(principal.plan))
        with observing_generation_acceptance():
            accepted = await generations.accept(principal, request)
        waited = await generations.wait(
            principal, accepted.id, timeout_seconds=settings.generation_wait_max_seconds
        )
        generation = await finished_or_canceled(generations, principal, waited)
        if generation.status is not GenerationStatus.SUCCEEDED:
            raise unsuccessful(generation)
        return OpenAIImagesResponse(
            created=int(generation.created_at.timestamp()),
            data=await images_of(generation, blobs, response_format),
        )
