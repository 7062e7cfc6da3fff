"""An in-memory BlobStore: a dict of objects, for tests and the one-process embedded mode."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from datetime import timedelta

import msgspec

from adapters.storage.blob_rules import (
    check_content_type,
    check_key,
    check_metadata,
    check_prefix,
)
from adapters.storage.link_signer import LinkSigner
from core.errors import BlobNotFound
from core.ports import Clock
from core.storage import Blob, BlobInfo, SignedUrl


class MemoryBlobStore:
    """BlobStore fake that keeps every object in a dict.

    It applies the same key and metadata rules as the obstore adapters and signs links with the
    same `LinkSigner`, so code tested against it behaves the same on real storage.
    """

    def __init__(self, *, clock: Clock, link_signer: LinkSigner) -> None:
        self._clock = clock
        self._link_signer = link_signer
        self._objects: dict[str, Blob] = {}

    async def put(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str] | None = None
    ) -> BlobInfo:
        check_key(key)
        info = BlobInfo(
            key=key,
            size=len(data),
            content_type=check_content_type(content_type),
            last_modified=self._clock.now(),
            etag=f'"{hashlib.blake2b(data, digest_size=16).hexdigest()}"',
            metadata=check_metadata(metadata),
        )
        self._objects[key] = Blob(info=info, data=bytes(data))
        return _copy_info(info)

    async def get(self, key: str) -> Blob:
        blob = self._find(key)
        return Blob(info=_copy_info(blob.info), data=blob.data)

    def stream(self, key: str, *, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        check_key(key)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return self._stream(key, chunk_size)

    async def _stream(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        data = self._find(key).data
        for start in range(0, len(data), chunk_size):
            yield data[start : start + chunk_size]

    async def head(self, key: str) -> BlobInfo:
        return _copy_info(self._find(key).info)

    async def delete(self, key: str) -> None:
        check_key(key)
        self._objects.pop(key, None)

    async def copy(self, source: str, destination: str) -> None:
        check_key(source)
        check_key(destination)
        blob = self._find(source)
        info = BlobInfo(
            key=destination,
            size=blob.info.size,
            content_type=blob.info.content_type,
            last_modified=self._clock.now() if source != destination else blob.info.last_modified,
            etag=blob.info.etag,
            metadata=dict(blob.info.metadata),
        )
        self._objects[destination] = Blob(info=info, data=blob.data)

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        check_prefix(prefix)
        return [
            _copy_info(self._objects[key].info) for key in sorted(self._objects) if key.startswith(prefix)
        ]

    async def signed_url(self, key: str, *, expires_in: timedelta) -> SignedUrl:
        check_key(key)
        if expires_in <= timedelta(0):
            raise ValueError(f"expires_in must be positive, got {expires_in}")
        return await self._link_signer.sign(key, expires_in)

    async def ping(self) -> None:
        return None

    def _find(self, key: str) -> Blob:
        check_key(key)
        blob = self._objects.get(key)
        if blob is None:
            raise BlobNotFound(key)
        return blob


def _copy_info(info: BlobInfo) -> BlobInfo:
    # BlobInfo is frozen but its metadata dict is not: callers get their own.
    return msgspec.structs.replace(info, metadata=dict(info.metadata))
