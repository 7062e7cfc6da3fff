"""In-memory fakes of the generation, upload and idempotency repositories, held to the same
contract as the PostgreSQL ones (migration 0005).

Rows are Structs in `adapters.memory.tables` tables. The tables cannot delete, so a deleted row is
a `None` in its slot (the same as absent to every reader); `delete_expired` prunes committed ones.
An idempotency claim waits for a concurrent claim of the same key to end, as PostgreSQL waits for a
concurrent insert into a unique index, and then sees its outcome.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import msgspec

from adapters.memory.row_values import canonical_or_none, check_limit, utc, utc_or_none
from adapters.memory.tables import Table, TableView, Transaction
from core.accounts.users import User
from core.errors import DomainError, ErrorCode
from core.generations.generation import ACTIVE_STATUSES, Generation, GenerationStatus
from core.generations.uploads import Upload
from core.idempotency import IdempotencyRecord, IdempotencyStatus

IdempotencyKey = tuple[str, str]  # (user id, key)


class GenerationTables:
    """The committed rows of the generation tables of one `MemoryDatabase`."""

    def __init__(self) -> None:
        self.generations: Table[str, Generation] = Table("generations")
        self.uploads: Table[str, Upload | None] = Table("uploads")
        self.idempotency: Table[IdempotencyKey, IdempotencyRecord | None] = Table("idempotency_keys")


class MemoryGenerationRepository:
    """Implements `core.ports.GenerationRepository` in memory."""

    def __init__(self, generations: TableView[str, Generation], users: TableView[str, User]) -> None:
        self._generations = generations
        self._users = users
        self._transaction = generations.transaction

    async def add(self, generation: Generation) -> None:
        self._transaction.require_active()
        stored = _stored_generation(generation)
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {generation.user_id} to own the generation")
        lock = self._generations.row_lock(stored.id)
        await self._transaction.wait_until_free(lock)
        if self._generations.get(stored.id) is not None:
            raise DomainError(ErrorCode.CONFLICT, "Generation already exists", generation_id=stored.id)
        self._transaction.take(lock)
        self._generations.put(stored.id, stored)

    async def get_for_user(self, user_id: str, generation_id: str) -> Generation | None:
        self._transaction.require_active()
        owner, id_ = canonical_or_none(user_id), canonical_or_none(generation_id)
        row = None if id_ is None else self._generations.get(id_)
        return row if row is not None and row.user_id == owner else None

    async def get_for_update(self, generation_id: str) -> Generation | None:
        self._transaction.require_active()
        id_ = canonical_or_none(generation_id)
        if id_ is None or self._generations.get(id_) is None:
            return None
        lock = self._generations.row_lock(id_)
        await self._transaction.wait_until_free(lock)
        self._transaction.take(lock)
        return self._generations.get(id_)

    async def update(self, generation: Generation) -> None:
        self._transaction.require_active()
        stored = _stored_generation(generation)
        await self._generations.update_where(
            stored.id,
            lambda _: True,
            lambda current: msgspec.structs.replace(
                current,
                status=stored.status,
                progress=stored.progress,
                error_code=stored.error_code,
                error_message=stored.error_message,
                attempts=stored.attempts,
                updated_at=stored.updated_at,
                started_at=stored.started_at,
                finished_at=stored.finished_at,
                images=stored.images,
                images_expire_at=stored.images_expire_at,
                images_expired_at=stored.images_expired_at,
            ),
        )

    async def list_for_user(
        self,
        user_id: str,
        *,
        status: GenerationStatus | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[Generation]:
        self._transaction.require_active()
        check_limit(limit)
        owner = canonical_or_none(user_id)
        before_id = None if after is None else canonical_or_none(after)
        if owner is None or (after is not None and before_id is None):
            return []
        mine = [
            row
            for row in self._generations.rows()
            if row.user_id == owner
            and (status is None or row.status == status)
            and (before_id is None or row.id < before_id)
        ]
        return sorted(mine, key=lambda row: row.id, reverse=True)[:limit]

    async def list_stuck(self, now: datetime, older_than: timedelta, limit: int) -> list[Generation]:
        self._transaction.require_active()
        check_limit(limit)
        since = utc(now, "now") - older_than
        stuck = [
            row
            for row in self._generations.rows()
            if row.status in ACTIVE_STATUSES and row.updated_at <= since
        ]
        return sorted(stuck, key=lambda row: (row.updated_at, row.id))[:limit]

    async def list_expired_images(self, before: datetime, limit: int) -> list[Generation]:
        self._transaction.require_active()
        check_limit(limit)
        at = utc(before, "before")
        expired = [
            row
            for row in self._generations.rows()
            if row.status is GenerationStatus.SUCCEEDED
            and row.images_expired_at is None
            and row.images_expire_at is not None
            and row.images_expire_at <= at
        ]
        return sorted(expired, key=lambda row: (row.images_expire_at, row.id))[:limit]


class MemoryUploadRepository:
    """Implements `core.ports.UploadRepository` in memory."""

    def __init__(self, uploads: TableView[str, Upload | None], users: TableView[str, User]) -> None:
        self._uploads = uploads
        self._users = users
        self._transaction = uploads.transaction

    async def add(self, upload: Upload) -> None:
        self._transaction.require_active()
        stored = msgspec.structs.replace(
            upload,
            id=str(uuid.UUID(upload.id)),
            user_id=str(uuid.UUID(upload.user_id)),
            created_at=utc(upload.created_at, "created_at"),
        )
        _check_upload(stored)
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {upload.user_id} to own the upload")
        lock = self._uploads.row_lock(stored.id)
        await self._transaction.wait_until_free(lock)
        if self._uploads.get(stored.id) is not None:
            raise DomainError(ErrorCode.CONFLICT, "Upload already exists", upload_id=stored.id)
        self._transaction.take(lock)
        self._uploads.put(stored.id, stored)

    async def get_for_user(self, user_id: str, upload_id: str) -> Upload | None:
        self._transaction.require_active()
        owner, id_ = canonical_or_none(user_id), canonical_or_none(upload_id)
        row = None if id_ is None else self._uploads.get(id_)
        return row if row is not None and row.user_id == owner else None

    async def delete(self, user_id: str, upload_id: str) -> bool:
        self._transaction.require_active()
        owner, id_ = canonical_or_none(user_id), canonical_or_none(upload_id)
        if owner is None or id_ is None:
            return False
        row = self._uploads.get(id_)
        if row is None or row.user_id != owner:
            return False
        lock = self._uploads.row_lock(id_)
        await self._transaction.wait_until_free(lock)
        row = self._uploads.get(id_)  # as committed meanwhile
        if row is None or row.user_id != owner:
            return False
        self._transaction.take(lock)
        self._uploads.put(id_, None)
        return True


class MemoryIdempotencyRepository:
    """Implements `core.ports.IdempotencyRepository` in memory."""

    def __init__(
        self, records: TableView[IdempotencyKey, IdempotencyRecord | None], users: TableView[str, User]
    ) -> None:
        self._records = records
        self._users = users
        self._transaction = records.transaction

    async def claim(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        self._transaction.require_active()
        stored = _stored_record(record)
        if stored.status is not IdempotencyStatus.IN_PROGRESS:
            raise ValueError("a claimed record must be in progress")
        if self._users.get(stored.user_id) is None:
            raise ValueError(f"no user {record.user_id} to own the idempotency record")
        key = (stored.user_id, stored.key)
        lock = self._records.row_lock(key)
        # A concurrent claim holds the key until it ends; then its outcome is what we see.
        await self._transaction.wait_until_free(lock)
        self._transaction.take(lock)  # PostgreSQL's ON CONFLICT DO UPDATE locks the row it met
        existing = self._records.get(key)
        if existing is not None and not existing.is_expired(stored.created_at):
            return existing
        self._records.put(key, stored)
        return None

    async def get(self, user_id: str, key: str) -> IdempotencyRecord | None:
        self._transaction.require_active()
        owner = canonical_or_none(user_id)
        return None if owner is None else self._records.get((owner, key))

    async def complete(
        self,
        user_id: str,
        key: str,
        *,
        response_status: int,
        response_body: bytes,
        response_headers: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        self._transaction.require_active()
        owner = canonical_or_none(user_id)
        if owner is None:
            return False
        headers = tuple((str(name), str(value)) for name, value in response_headers)
        completed = await self._records.update_where(
            (owner, key),
            lambda row: row is not None and row.status is IdempotencyStatus.IN_PROGRESS,
            lambda row: msgspec.structs.replace(
                _present(row),
                status=IdempotencyStatus.COMPLETED,
                response_status=response_status,
                response_body=bytes(response_body),
                response_headers=headers,
            ),
        )
        return completed is not None

    async def release(self, user_id: str, key: str) -> bool:
        self._transaction.require_active()
        owner = canonical_or_none(user_id)
        if owner is None:
            return False
        slot = (owner, key)
        if not _in_progress(self._records.get(slot)):
            return False
        lock = self._records.row_lock(slot)
        await self._transaction.wait_until_free(lock)
        if not _in_progress(self._records.get(slot)):  # as committed meanwhile
            return False
        self._transaction.take(lock)
        self._records.put(slot, None)
        return True

    async def delete_expired(self, now: datetime, limit: int = 1000) -> int:
        self._transaction.require_active()
        check_limit(limit)
        at = utc(now, "now")
        committed = self._records.table.rows
        # Committed tombstones are the same as absent rows: dropping them changes nothing visible.
        for slot in [slot for slot, row in committed.items() if row is None]:
            del committed[slot]
        expired = sorted(
            (row for row in self._records.rows() if row is not None and row.is_expired(at)),
            key=lambda row: (row.expires_at, row.user_id, row.key),
        )
        deleted = 0
        for row in expired:
            if deleted == limit:
                break
            slot = (row.user_id, row.key)
            try:  # SKIP LOCKED: a record another unit of work holds stays for the next run
                self._transaction.take(self._records.row_lock(slot))
            except RuntimeError:
                continue
            self._records.put(slot, None)
            deleted += 1
        return deleted


def generation_repositories(
    transaction: Transaction, tables: GenerationTables, users: TableView[str, User]
) -> tuple[MemoryGenerationRepository, MemoryUploadRepository, MemoryIdempotencyRepository]:
    """The three repositories of one unit of work; `users` is that unit of work's view of the users
    (the foreign keys)."""
    return (
        MemoryGenerationRepository(transaction.view(tables.generations), users),
        MemoryUploadRepository(transaction.view(tables.uploads), users),
        MemoryIdempotencyRepository(transaction.view(tables.idempotency), users),
    )


def _stored_generation(generation: Generation) -> Generation:
    """The generation as the table would hold it (ids canonical, times UTC), or ValueError where the
    table's CHECKs would refuse it."""
    stored = msgspec.structs.replace(
        generation,
        id=str(uuid.UUID(generation.id)),
        user_id=str(uuid.UUID(generation.user_id)),
        status=GenerationStatus(generation.status),
        init_image_id=None if generation.init_image_id is None else str(uuid.UUID(generation.init_image_id)),
        created_at=utc(generation.created_at, "created_at"),
        updated_at=utc(generation.updated_at, "updated_at"),
        started_at=utc_or_none(generation.started_at, "started_at"),
        finished_at=utc_or_none(generation.finished_at, "finished_at"),
        images_expire_at=utc_or_none(generation.images_expire_at, "images_expire_at"),
        images_expired_at=utc_or_none(generation.images_expired_at, "images_expired_at"),
        images=tuple(sorted(generation.images, key=lambda image: image.index)),
    )
    check_generation(stored)
    return stored


def check_generation(generation: Generation) -> None:
    """The CHECKs of migration 0005's `generations` and `generation_images` tables."""
    problems = []
    if not 1 <= len(generation.prompt) <= 4000:
        problems.append("prompt must have 1..4000 characters")
    if generation.negative_prompt is not None and len(generation.negative_prompt) > 4000:
        problems.append("negative_prompt must have at most 4000 characters")
    if generation.width <= 0 or generation.height <= 0:
        problems.append("width and height must be positive")
    if not 1 <= generation.n <= 100:
        problems.append("n must be within 1..100")
    if not 0 <= generation.seed <= 2**32 - 1:
        problems.append("seed must be within 0..2**32-1")
    if generation.retention_days <= 0:
        problems.append("retention_days must be positive")
    if not 0.0 <= generation.progress <= 1.0:
        problems.append("progress must be within [0, 1]")
    if generation.attempts < 0:
        problems.append("attempts must not be negative")
    if generation.status.is_terminal != (generation.finished_at is not None):
        problems.append("finished_at is set exactly when the generation has finished")
    if (generation.status is GenerationStatus.FAILED) != (generation.error_code is not None):
        problems.append("error_code is set exactly when the generation has failed")
    indices = [image.index for image in generation.images]
    if len(set(indices)) != len(indices) or any(index < 0 for index in indices):
        problems.append("image indices must be distinct and not negative")
    for image in generation.images:
        if image.width <= 0 or image.height <= 0 or image.bytes < 0 or not _is_sha256(image.sha256):
            problems.append(f"image {image.index} has invalid dimensions, size or sha256")
    if problems:
        raise ValueError("; ".join(problems))


def _check_upload(upload: Upload) -> None:
    if upload.content_type not in ("image/png", "image/jpeg", "image/webp"):
        raise ValueError(f"content_type {upload.content_type!r} is not an accepted image type")
    if upload.width <= 0 or upload.height <= 0 or upload.bytes < 0 or not _is_sha256(upload.sha256):
        raise ValueError("the upload has invalid dimensions, size or sha256")


def _stored_record(record: IdempotencyRecord) -> IdempotencyRecord:
    if not 1 <= len(record.key) <= 255:
        raise ValueError("an idempotency key has 1..255 characters")
    return msgspec.structs.replace(
        record,
        user_id=str(uuid.UUID(record.user_id)),
        status=IdempotencyStatus(record.status),
        created_at=utc(record.created_at, "created_at"),
        expires_at=utc(record.expires_at, "expires_at"),
    )


def _present(row: IdempotencyRecord | None) -> IdempotencyRecord:
    if row is None:  # `update_where` only changes rows that exist
        raise RuntimeError("a deleted idempotency record cannot change")
    return row


def _in_progress(row: IdempotencyRecord | None) -> bool:
    return row is not None and row.status is IdempotencyStatus.IN_PROGRESS


def _is_sha256(text: str) -> bool:
    return len(text) == 64 and all(char in "0123456789abcdef" for char in text)
