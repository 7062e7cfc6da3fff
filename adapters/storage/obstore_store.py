"""The BlobStore port on obstore: S3 (and GCS, Azure), local files and obstore's memory store.

Content type and metadata travel as obstore attributes where the store keeps them (S3, GCS, Azure,
MemoryStore). obstore 0.12's LocalStore refuses attributes (`put_opts` with attributes is "not
yet implemented" by object_store's LocalFileSystem), so there they go to a JSON sidecar object
`.meta/{key}` written next to the data; `list` hides that prefix and `blob_rules.check_key`
keeps callers out of it. The sidecar is written after the data and deleted after it: a crash in
between leaves the object with its previous (or the default) content type, or an orphaned sidecar
that is hidden and replaced by the next put of that key. Two concurrent puts of one key may pair
one's bytes with the other's sidecar; the local store is the single-node default, where that is
accepted.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING

import msgspec
import obstore
from obstore.exceptions import GenericError
from obstore.store import AzureStore, GCSStore, LocalStore, S3Store

from adapters.storage.blob_rules import (
    DEFAULT_CONTENT_TYPE,
    RESERVED_PREFIX,
    STANDARD_ATTRIBUTES,
    check_content_type,
    check_key,
    check_metadata,
    check_prefix,
)
from core.errors import BlobNotFound, DomainError, ErrorCode
from core.storage import Blob, BlobInfo, SignedUrl

if TYPE_CHECKING:
    from obstore import Attributes, ObjectMeta
    from obstore.store import ObjectStore

    from adapters.storage.link_signer import LinkSigner
    from core.ports import Clock

# How many objects `list` describes at once (one HEAD or sidecar read each).
_LIST_CONCURRENCY = 16

# On a file system `a/b` cannot exist while `a` is a file, nor `d` while `d/` is a folder; the OS
# answers ENOTDIR / EISDIR, which obstore reports as a GenericError quoting the OS error.
_PATH_CLASH = re.compile(r"\((?:os error 20|os error 21)\)")


class _Description(msgspec.Struct, frozen=True, kw_only=True):
    """Content type and metadata: from attributes where the store keeps them, else a sidecar."""

    content_type: str
    metadata: dict[str, str] = {}


_encode_sidecar = msgspec.json.Encoder().encode
_decode_sidecar = msgspec.json.Decoder(_Description).decode


def _sidecar_path(key: str) -> str:
    return RESERVED_PREFIX + key


def _split_attributes(attributes: Attributes) -> _Description:
    content_type = DEFAULT_CONTENT_TYPE
    metadata: dict[str, str] = {}
    for name, value in attributes.items():
        if name.lower() == "content-type":
            content_type = value
        elif name.lower() not in STANDARD_ATTRIBUTES:
            metadata[name] = value
    return _Description(content_type=content_type, metadata=metadata)


def _info(key: str, meta: ObjectMeta, described: _Description) -> BlobInfo:
    return BlobInfo(
        key=key,
        size=meta["size"],
        content_type=described.content_type,
        last_modified=meta["last_modified"],
        etag=meta["e_tag"],
        metadata=dict(described.metadata),
    )


class ObstoreBlobStore:
    """BlobStore on an obstore `ObjectStore`.

    Stores that can presign (S3, GCS, Azure) hand out their own signed GET URLs; the others need a
    `LinkSigner`, whose links the `/v1/files/` route verifies before streaming the object.
    `clock` gives `put`'s `last_modified` and the links' `expires_at`.
    """

    def __init__(self, store: ObjectStore, *, clock: Clock, link_signer: LinkSigner | None = None) -> None:
        self._store = store
        self._clock = clock
        self._uses_sidecars = isinstance(store, LocalStore)
        if not isinstance(store, S3Store | GCSStore | AzureStore) and link_signer is None:
            raise ValueError(f"{type(store).__name__} cannot presign URLs: a LinkSigner is required")
        self._link_signer = link_signer

    async def put(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str] | None = None
    ) -> BlobInfo:
        check_key(key)
        described = _Description(
            content_type=check_content_type(content_type), metadata=check_metadata(metadata)
        )
        if self._uses_sidecars:
            try:
                result = await obstore.put_async(self._store, key, data)
            except GenericError as error:
                if not _PATH_CLASH.search(str(error)):
                    raise
                raise _clash(key) from None
            await obstore.put_async(self._store, _sidecar_path(key), _encode_sidecar(described))
        else:
            attributes: Attributes = {"Content-Type": described.content_type, **described.metadata}
            result = await obstore.put_async(self._store, key, data, attributes=attributes)
        # One request, not a put and a head: the store's own last-modified may differ slightly.
        return BlobInfo(
            key=key,
            size=len(data),
            content_type=described.content_type,
            last_modified=self._clock.now(),
            etag=result["e_tag"],
            metadata=dict(described.metadata),
        )

    async def get(self, key: str) -> Blob:
        check_key(key)
        with self._not_found_as_blob_not_found(key):
            result = await obstore.get_async(self._store, key)
            data = bytes(await result.bytes_async())
        if self._uses_sidecars:
            described = await self._read_sidecar(key)
        else:
            described = _split_attributes(result.attributes)
        return Blob(info=_info(key, result.meta, described), data=data)

    def stream(self, key: str, *, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        check_key(key)
        if chunk_size <= 0:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        return self._stream(key, chunk_size)

    async def _stream(self, key: str, chunk_size: int) -> AsyncIterator[bytes]:
        with self._not_found_as_blob_not_found(key):
            result = await obstore.get_async(self._store, key)
        # obstore's chunk size is a minimum; re-cut so no chunk is larger than asked for either.
        async for chunk in result.stream(min_chunk_size=chunk_size):
            for start in range(0, len(chunk), chunk_size):
                yield chunk[start : start + chunk_size]

    async def head(self, key: str) -> BlobInfo:
        check_key(key)
        with self._not_found_as_blob_not_found(key):
            if self._uses_sidecars:
                meta = await obstore.head_async(self._store, key)
                return _info(key, meta, await self._read_sidecar(key))
            # A HEAD request through `get` returns the attributes, which `head_async` does not.
            result = await obstore.get_async(self._store, key, options={"head": True})
            return _info(key, result.meta, _split_attributes(result.attributes))

    async def delete(self, key: str) -> None:
        check_key(key)
        await self._delete_quietly(key)
        if self._uses_sidecars:
            await self._delete_quietly(_sidecar_path(key))

    async def copy(self, source: str, destination: str) -> None:
        check_key(source)
        check_key(destination)
        if source == destination:
            # S3 refuses to copy an object onto itself unchanged; the result would be the same.
            await self.head(source)
            return
        try:
            with self._not_found_as_blob_not_found(source):
                await obstore.copy_async(self._store, source, destination)
        except BlobNotFound:
            # On local disk the clash may be at the destination (`a/b` while `a` is a file).
            if self._uses_sidecars and await self._exists(source):
                raise _clash(destination) from None
            raise
        if self._uses_sidecars:
            try:
                await obstore.copy_async(self._store, _sidecar_path(source), _sidecar_path(destination))
            except FileNotFoundError:
                # The source had no sidecar (written by something else): neither must the copy.
                await self._delete_quietly(_sidecar_path(destination))

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        check_prefix(prefix)
        # obstore lists whole path segments; list the prefix's directory and filter by text.
        directory = prefix.rpartition("/")[0] or None
        metas = await obstore.list(self._store, directory).collect_async()
        wanted = sorted(
            (meta for meta in metas if meta["path"].startswith(prefix) and not _is_reserved(meta["path"])),
            key=lambda meta: meta["path"],
        )
        limit = asyncio.Semaphore(_LIST_CONCURRENCY)

        async def describe(meta: ObjectMeta) -> BlobInfo | None:
            async with limit:
                if self._uses_sidecars:
                    return _info(meta["path"], meta, await self._read_sidecar(meta["path"]))
                try:
                    return await self.head(meta["path"])
                except BlobNotFound:
                    return None  # deleted since the listing

        described = await asyncio.gather(*(describe(meta) for meta in wanted))
        return [info for info in described if info is not None]

    async def signed_url(self, key: str, *, expires_in: timedelta) -> SignedUrl:
        check_key(key)
        if expires_in <= timedelta(0):
            raise ValueError(f"expires_in must be positive, got {expires_in}")
        if not isinstance(self._store, S3Store | GCSStore | AzureStore):
            assert self._link_signer is not None  # checked in __init__
            return await self._link_signer.sign(key, expires_in)
        # Presigned URLs count whole seconds; expires_at says the same.
        expires_in = timedelta(seconds=max(1, int(expires_in.total_seconds())))
        expires_at = self._clock.now() + expires_in
        url = await obstore.sign_async(self._store, "GET", key, expires_in)
        return SignedUrl(url=url, expires_at=expires_at)

    async def ping(self) -> None:
        # One small listing: fails on a missing bucket, bad credentials or an unreachable endpoint.
        await obstore.list_with_delimiter_async(self._store, RESERVED_PREFIX + "ping")

    @contextlib.contextmanager
    def _not_found_as_blob_not_found(self, key: str) -> Iterator[None]:
        """Turn the store's "no such object" into BlobNotFound(key)."""
        try:
            yield
        except FileNotFoundError:
            raise BlobNotFound(key) from None
        except GenericError as error:
            if not (self._uses_sidecars and _PATH_CLASH.search(str(error))):
                raise
            raise BlobNotFound(key) from None

    async def _exists(self, key: str) -> bool:
        try:
            await self.head(key)
        except BlobNotFound:
            return False
        return True

    async def _read_sidecar(self, key: str) -> _Description:
        try:
            with self._not_found_as_blob_not_found(key):
                result = await obstore.get_async(self._store, _sidecar_path(key))
                return _decode_sidecar(bytes(await result.bytes_async()))
        except BlobNotFound:
            # Written by something other than this adapter (or a crash between data and sidecar).
            return _Description(content_type=DEFAULT_CONTENT_TYPE)

    async def _delete_quietly(self, path: str) -> None:
        # Local files report a missing file (or a folder in its place); the port says that is fine.
        with contextlib.suppress(BlobNotFound), self._not_found_as_blob_not_found(path):
            await obstore.delete_async(self._store, path)


def _is_reserved(path: str) -> bool:
    return path.startswith(RESERVED_PREFIX)


def _clash(key: str) -> DomainError:
    return DomainError(
        ErrorCode.CONFLICT,
        f"{key!r} clashes with another key in local storage: a file cannot also be a folder",
        key=key,
    )
