"""Receiving an init image: checked and cleaned by content, stored per user, recorded."""

from __future__ import annotations

import hashlib

from core.accounts.api_keys import Scope
from core.accounts.principal import Principal
from core.generations.uploads import Upload, upload_blob_key
from core.images import ImageLimits, check_byte_size
from core.ports import BlobStore, Clock, Database, Ids, ImageInspector


class Uploads:
    def __init__(
        self,
        *,
        database: Database,
        blobs: BlobStore,
        inspector: ImageInspector,
        limits: ImageLimits,
        ids: Ids,
        clock: Clock,
    ) -> None:
        self._database = database
        self._blobs = blobs
        self._inspector = inspector
        self._limits = limits
        self._ids = ids
        self._clock = clock

    async def accept(self, principal: Principal, data: bytes) -> Upload:
        """Store `data` as the caller's init image, without its metadata, and return its record.

        Needs `generations:write`. Refuses what the ImageInspector refuses (415 by content, 413
        over the limits, 422 corrupt). The bytes are stored before the row: a crash in between
        leaves an unreferenced blob, never a row without bytes.
        """
        principal.require_scope(Scope.GENERATIONS_WRITE)
        check_byte_size(len(data), self._limits)  # before any parsing, however cheap
        clean, facts = await self._inspector.inspect_and_clean(data, self._limits)
        upload_id = self._ids.new_id()
        key = upload_blob_key(principal.user_id, upload_id, facts.content_type.value)
        await self._blobs.put(key, clean, content_type=facts.content_type.value)
        upload = Upload(
            id=upload_id,
            user_id=principal.user_id,
            blob_key=key,
            content_type=facts.content_type.value,
            width=facts.width,
            height=facts.height,
            bytes=len(clean),
            sha256=hashlib.sha256(clean).hexdigest(),
            created_at=self._clock.now(),
        )
        async with self._database.unit_of_work() as uow:
            await uow.uploads.add(upload)
            await uow.commit()
        return upload
