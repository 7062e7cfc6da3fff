"""`GET /v1/files/{key}`: downloads behind HMAC-signed, expiring links (file and memory stores).

S3 links are presigned by S3 itself and never come here.
"""

from __future__ import annotations

from email.utils import format_datetime
from typing import Any

from litestar import HttpMethod, Request, route
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import FromPath, FromQuery
from litestar.response import Stream

from core.errors import ErrorCode
from core.ports import BlobStore, SignedLinks
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.svcs_plugin import SvcsContainer


@route(
    "/v1/files/{key:path}",
    http_method=[HttpMethod.GET, HttpMethod.HEAD],
    tags=["files"],
    summary="Download a file through a signed link",
    responses={
        200: ResponseSpec(
            data_container=bytes,
            media_type="*/*",  # whatever type the file was stored with, e.g. image/png
            description="The file's bytes, served with the content type it was stored with",
            generate_examples=False,
        ),
        **problem_responses(ErrorCode.INVALID_SIGNATURE, ErrorCode.LINK_EXPIRED, ErrorCode.NOT_FOUND),
    },
)
async def download_file(
    request: Request[Any, Any, Any],
    key: FromPath[str],
    svcs_container: SvcsContainer,
    expires: FromQuery[str | None] = None,
    kid: FromQuery[str | None] = None,
    sig: FromQuery[str | None] = None,
) -> Stream:
    """Checks the link's signature, then its expiry (`403 invalid_signature` / `403 link_expired`)."""
    signer, store = await svcs_container.aget(SignedLinks, BlobStore)
    key = key.lstrip("/")
    await signer.verify(key, expires=expires, kid=kid, sig=sig)
    info = await store.head(key)
    headers = {
        "Content-Length": str(info.size),
        "Cache-Control": "private, max-age=300",
        "Last-Modified": format_datetime(info.last_modified, usegmt=True),
        "Content-Disposition": "inline",
        "Cross-Origin-Resource-Policy": "cross-origin",
    }
    if info.etag:
        headers["ETag"] = f'"{info.etag.strip(chr(34))}"'
    body = store.stream(key) if request.method == "GET" else _empty()
    return Stream(body, media_type=info.content_type, headers=headers)


async def _empty() -> Any:
    return
    yield  # an async generator that yields nothing (HEAD)
