"""Uploads (API.md): `POST /v1/uploads`, an init image as multipart/form-data with one `file` part."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

import msgspec
from litestar import Controller, Request, Router, post
from litestar.datastructures import UploadFile

from core.accounts.api_keys import Scope
from core.errors import DomainError, ErrorCode, FieldError
from core.generations.upload_service import Uploads
from core.generations.uploads import Upload
from core.images import UPLOAD_FIELD, ImageLimits
from core.ports import BlobStore, Clock, Database, Ids, ImageInspector
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.svcs_plugin import SvcsContainer

UPLOADS_PATH: Final = "/v1/uploads"
# Room for the multipart framing (boundaries, part headers, a few small fields) around the file.
MULTIPART_OVERHEAD_BYTES: Final = 64 * 1024


class UploadOut(msgspec.Struct, kw_only=True):
    id: str
    content_type: str
    width: int
    height: int
    bytes: int
    created_at: datetime

    @classmethod
    def of(cls, upload: Upload) -> UploadOut:
        return cls(
            id=upload.id,
            content_type=upload.content_type,
            width=upload.width,
            height=upload.height,
            bytes=upload.bytes,
            created_at=upload.created_at,
        )


async def uploads_from(svcs_container: SvcsContainer) -> Uploads:
    database, blobs, inspector, limits, ids, clock = await svcs_container.aget(
        Database, BlobStore, ImageInspector, ImageLimits, Ids, Clock
    )
    return Uploads(database=database, blobs=blobs, inspector=inspector, limits=limits, ids=ids, clock=clock)


def _one_file_missing(message: str) -> DomainError:
    return DomainError(
        ErrorCode.VALIDATION_FAILED,
        "The request is invalid; see errors",
        errors=[FieldError(UPLOAD_FIELD, message, "required")],
    )


async def read_file_part(request: Request[Any, Any, Any]) -> bytes:
    """The bytes of the single `file` part; `validation_failed` when there is none or several."""
    if request.content_type[0] != "multipart/form-data":
        raise DomainError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "Send the image as multipart/form-data with one `file` part",
            content_type=request.content_type[0] or None,
        )
    form = await request.form()
    parts = form.getall(UPLOAD_FIELD) if UPLOAD_FIELD in form else []
    files = [part for part in parts if isinstance(part, UploadFile)]
    try:
        if len(parts) != 1 or len(files) != 1:
            raise _one_file_missing(f"Send exactly one `{UPLOAD_FIELD}` part holding the image")
        return await files[0].read()
    finally:
        for part in form.multi_items():
            if isinstance(part[1], UploadFile):
                await part[1].close()


class UploadsController(Controller):
    path = "/"
    tags = ["uploads"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @post(
        "/",
        status_code=201,
        responses=problem_responses(
            ErrorCode.UNAUTHENTICATED,
            ErrorCode.INSUFFICIENT_SCOPE,
            ErrorCode.PAYLOAD_TOO_LARGE,
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            ErrorCode.VALIDATION_FAILED,
        ),
    )
    async def create_upload(
        self, request: Request[Any, Any, Any], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> UploadOut:
        """An init image (PNG, JPEG or WebP, recognised by its content), stored without its
        metadata; use its `id` as `init_image` in a generation. Send the credential as
        `Authorization: Bearer` (a multipart body with only the session cookie is refused)."""
        uploads = await uploads_from(svcs_container)
        principal.require_scope(Scope.GENERATIONS_WRITE)  # before reading a byte of the body
        data = await read_file_part(request)
        return UploadOut.of(await uploads.accept(principal, data))


def uploads_router(limits: ImageLimits) -> Router:
    """The uploads route, with a body limit of the configured file size plus multipart framing
    (the app-wide limit is for JSON bodies and may be smaller or larger)."""
    return Router(
        path=UPLOADS_PATH,
        route_handlers=[UploadsController],
        request_max_body_size=limits.max_bytes + MULTIPART_OVERHEAD_BYTES,
    )
