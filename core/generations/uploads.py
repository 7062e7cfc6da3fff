"""Uploaded init images: the metadata of what a user stored, recognised by content.

The bytes live in the BlobStore under `blob_key`; decoding, limits and metadata stripping happen
where the upload is received. An upload is read only through its owner's id, so one user can never
start a generation from another's image.
"""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec

UPLOAD_CONTENT_TYPES: Final = ("image/png", "image/jpeg", "image/webp")


class Upload(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    blob_key: str
    content_type: str  # one of UPLOAD_CONTENT_TYPES, from the bytes, not from the client
    width: int
    height: int
    bytes: int
    sha256: str  # hex digest of the stored bytes
    created_at: datetime


def upload_blob_key(user_id: str, upload_id: str, content_type: str) -> str:
    """Where an upload's bytes go: per user, named by id, with the extension of its type."""
    extension = {"image/png": "png", "image/jpeg": "jpg", "image/webp": "webp"}[content_type]
    return f"uploads/{user_id}/{upload_id}.{extension}"


def generation_image_key(user_id: str, generation_id: str, index: int) -> str:
    """Where a generated image goes (issue 5): `generations/{user}/{generation}/{index}.png`."""
    return f"generations/{user_id}/{generation_id}/{index}.png"
