"""Generations (API.md "Generations"): create (Idempotency-Key, `Prefer: wait=N`), read, list,
cancel, and follow one as Server-Sent Events."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Annotated, Any, Final

import msgspec
from litestar import Controller, Request, Response, get, post
from litestar.openapi import ResponseSpec
from litestar.params import FromPath, FromQuery, JSONBody, QueryParameter
from litestar.response import ServerSentEvent, ServerSentEventMessage

from core.accounts.api_keys import Scope
from core.errors import DomainError, ErrorCode, FieldError
from core.generations.generation import Generation, GenerationStatus
from core.generations.requests import GenerationRequest
from core.pagination import encode_cursor
from core.ports import BlobStore, Clock, Database
from entrypoints.business_metrics import observe_generation_canceled, observing_generation_acceptance
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal
from entrypoints.http.idempotency import Answer, answer_once
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.schemas import PageLimit
from entrypoints.http.svcs_plugin import SvcsContainer
from entrypoints.settings import Settings
from entrypoints.use_cases import generations_from

GENERATIONS_PATH: Final = "/v1/generations"
IMAGE_LINK_LIFETIME: Final = timedelta(hours=1)

_READ_PROBLEMS = (ErrorCode.UNAUTHENTICATED, ErrorCode.INSUFFICIENT_SCOPE, ErrorCode.NOT_FOUND)
_CREATE_PROBLEMS = (
    ErrorCode.UNAUTHENTICATED,
    ErrorCode.INSUFFICIENT_SCOPE,
    ErrorCode.QUOTA_EXCEEDED,
    ErrorCode.PROMPT_REJECTED,
    ErrorCode.IDEMPOTENCY_KEY_REUSED,
    ErrorCode.IDEMPOTENCY_IN_PROGRESS,
)


class ErrorOut(msgspec.Struct, kw_only=True):
    code: str
    message: str


class ImageOut(msgspec.Struct, kw_only=True):
    index: int
    url: str  # a signed link that expires at url_expires_at
    url_expires_at: datetime
    content_type: str
    width: int
    height: int
    bytes: int
    sha256: str


class GenerationOut(msgspec.Struct, kw_only=True, omit_defaults=True):
    id: str
    status: str
    prompt: str
    negative_prompt: str | None
    size: str
    n: int
    seed: int
    style: str | None
    init_image: str | None
    progress: float
    images: list[ImageOut]
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: ErrorOut | None = None  # only when failed
    images_expired_at: datetime | None = None  # retention deleted the images' bytes


class GenerationListOut(msgspec.Struct, kw_only=True):
    data: list[GenerationOut]
    next_cursor: str | None


async def generation_out(generation: Generation, blobs: BlobStore) -> GenerationOut:
    """The API shape of a generation, with a fresh signed link per image."""
    images: list[ImageOut] = []
    if generation.images_expired_at is None:
        links = await asyncio.gather(
            *(blobs.signed_url(image.blob_key, expires_in=IMAGE_LINK_LIFETIME) for image in generation.images)
        )
        images = [
            ImageOut(
                index=image.index,
                url=link.url,
                url_expires_at=link.expires_at,
                content_type=image.content_type,
                width=image.width,
                height=image.height,
                bytes=image.bytes,
                sha256=image.sha256,
            )
            for image, link in zip(generation.images, links, strict=True)
        ]
    error = None
    if generation.error_code is not None:
        error = ErrorOut(code=generation.error_code, message=generation.error_message or "")
    return GenerationOut(
        id=generation.id,
        status=generation.status.value,
        prompt=generation.prompt,
        negative_prompt=generation.negative_prompt,
        size=generation.size,
        n=generation.n,
        seed=generation.seed,
        style=generation.style,
        init_image=generation.init_image_id,
        progress=generation.progress,
        images=images,
        created_at=generation.created_at,
        started_at=generation.started_at,
        finished_at=generation.finished_at,
        error=error,
        images_expired_at=generation.images_expired_at,
    )


def requested_wait_seconds(prefer: str | None, max_seconds: int) -> int | None:
    """The `wait` preference of a `Prefer` header (RFC 7240), at most `max_seconds`; None when
    absent or malformed (a preference is a hint: an unreadable one is ignored, not an error)."""
    if not prefer:
        return None
    for preference in prefer.split(","):
        name, _, value = preference.split(";", 1)[0].partition("=")
        if name.strip().lower() == "wait":
            value = value.strip().strip('"')
            if value.isascii() and value.isdigit():
                return min(int(value), max_seconds)
            return None
    return None


StatusFilter = Annotated[
    str | None,
    QueryParameter(
        pattern=f"^({'|'.join(s.value for s in GenerationStatus)})?$",
        description="Only generations in this status.",
    ),
]


def parse_status(status: str | None) -> GenerationStatus | None:
    if status is None or status == "":
        return None
    try:
        return GenerationStatus(status)
    except ValueError:
        allowed = ", ".join(s.value for s in GenerationStatus)
        raise DomainError(
            ErrorCode.VALIDATION_FAILED,
            "The request is invalid; see errors",
            errors=[FieldError("query.status", f"One of {allowed}", "invalid")],
        ) from None


def _sse(event: str, generation: GenerationOut) -> ServerSentEventMessage:
    return ServerSentEventMessage(data=msgspec.json.encode(generation).decode(), event=event)


class GenerationsController(Controller):
    path = GENERATIONS_PATH
    tags = ["generations"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @post(
        "/",
        status_code=202,
        responses={
            202: ResponseSpec(GenerationOut, description="Queued (`Location` names it)"),
            200: ResponseSpec(GenerationOut, description="Finished within `Prefer: wait=N`"),
            **problem_responses(*_CREATE_PROBLEMS),
        },
    )
    async def create_generation(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[GenerationRequest],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> Response[bytes]:  # encoded once, for idempotent replays: the schema comes from `responses`
        """Queue a generation: `202` with `Location`. With `Prefer: wait=N` (N capped by the
        server, 60 s by default) it answers `200` with the finished generation when it ends within
        N seconds. With `Idempotency-Key`, a repeat replays the first answer."""
        generations = await generations_from(svcs_container)
        database, clock, blobs, settings = await svcs_container.aget(Database, Clock, BlobStore, Settings)
        wait = requested_wait_seconds(request.headers.get("prefer"), settings.generation_wait_max_seconds)
        if Scope.GENERATIONS_READ not in principal.scopes:
            wait = None  # waiting reads the generation; ignore the hint rather than fail after creating

        async def create() -> Answer:
            with observing_generation_acceptance():
                generation = await generations.accept(principal, data)
            status = 202
            headers = [("Location", f"{GENERATIONS_PATH}/{generation.id}")]
            if wait is not None:
                headers.append(("Preference-Applied", f"wait={wait}"))
                if wait > 0:
                    generation = await generations.wait(principal, generation.id, timeout_seconds=wait)
                if generation.is_finished:
                    status = 200
            return Answer.json(status, await generation_out(generation, blobs), tuple(headers))

        return await answer_once(request, principal, database=database, clock=clock, work=create)

    @get("/", responses=problem_responses(*_READ_PROBLEMS))
    async def list_generations(
        self,
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
        status: StatusFilter = None,
    ) -> GenerationListOut:
        """The caller's generations, newest first; pass `next_cursor` back as `cursor`."""
        generations = await generations_from(svcs_container)
        blobs = await svcs_container.aget(BlobStore)
        page, after = await generations.list(
            principal, status=parse_status(status), cursor=cursor, limit=limit
        )
        return GenerationListOut(
            data=[await generation_out(g, blobs) for g in page],
            next_cursor=None if after is None else encode_cursor(after),
        )

    @get("/{generation_id:str}", responses=problem_responses(*_READ_PROBLEMS))
    async def get_generation(
        self, generation_id: FromPath[str], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> GenerationOut:
        generations = await generations_from(svcs_container)
        blobs = await svcs_container.aget(BlobStore)
        return await generation_out(await generations.get(principal, generation_id), blobs)

    @post(
        "/{generation_id:str}/cancel",
        status_code=200,
        responses={
            200: ResponseSpec(GenerationOut, description="The canceled generation"),
            **problem_responses(*_READ_PROBLEMS, ErrorCode.INVALID_STATE),
        },
    )
    async def cancel_generation(
        self,
        request: Request[Any, Any, Any],
        generation_id: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> Response[bytes]:  # encoded once, for idempotent replays: the schema comes from `responses`
        """Stop a queued or running generation and give its images back to the quota; `409
        invalid_state` once it has finished."""
        generations = await generations_from(svcs_container)
        database, clock, blobs = await svcs_container.aget(Database, Clock, BlobStore)

        async def cancel() -> Answer:
            canceled = await generations.cancel(principal, generation_id)
            observe_generation_canceled()
            return Answer.json(200, await generation_out(canceled, blobs))

        return await answer_once(request, principal, database=database, clock=clock, work=cancel)

    @get("/{generation_id:str}/events", responses=problem_responses(*_READ_PROBLEMS))
    async def generation_events(
        self, generation_id: FromPath[str], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> ServerSentEvent:
        """`text/event-stream`: a `progress` event for each change while it is queued or running,
        then one `succeeded`, `failed` or `canceled` event, then the stream ends."""
        generations = await generations_from(svcs_container)
        blobs = await svcs_container.aget(BlobStore)
        changes = await generations.watch(principal, generation_id)  # not_found before streaming

        async def events() -> AsyncIterator[ServerSentEventMessage]:
            try:
                async for generation in changes:
                    event = generation.status.value if generation.is_finished else "progress"
                    yield _sse(event, await generation_out(generation, blobs))
            finally:
                # The client went away (or the stream ended): stop polling at once.
                await changes.aclose()  # type: ignore[attr-defined]

        return ServerSentEvent(events())
