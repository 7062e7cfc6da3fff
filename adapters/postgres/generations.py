"""The generation, upload and idempotency repositories on PostgreSQL (migration 0005).

Each repository works on its unit of work's connection, inside its transaction; rows map to the core
Structs explicitly and timestamps come back in UTC. A generation's images are rows of
`generation_images`, read back with it in index order. An idempotency claim is one
`INSERT … ON CONFLICT DO UPDATE … WHERE expired`: the primary key makes a concurrent claim of the
same key wait for the first to end, then see its record.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import msgspec
from psycopg import errors

from adapters.postgres.row_values import aware, check_limit, utc_or_none
from core.errors import DomainError, ErrorCode
from core.generations.generation import ACTIVE_STATUSES, GeneratedImage, Generation, GenerationStatus
from core.generations.uploads import Upload
from core.idempotency import IdempotencyRecord, IdempotencyStatus
from core.identifiers import is_id

if TYPE_CHECKING:
    from adapters.postgres.database import PostgresUnitOfWork

_GENERATION_COLUMNS = (
    "id, user_id, status, prompt, negative_prompt, size, width, height, n, seed, style, init_image_id,"
    " webhook_url, priority, retention_days, progress, error_code, error_message, attempts, created_at,"
    " updated_at, started_at, finished_at, images_expire_at, images_expired_at"
)
_IMAGE_COLUMNS = "generation_id, index, blob_key, content_type, width, height, bytes, sha256"
_UPLOAD_COLUMNS = "id, user_id, blob_key, content_type, width, height, bytes, sha256, created_at"
_RECORD_COLUMNS = (
    "user_id, key, fingerprint, status, response_status, response_body, response_headers::text,"
    " created_at, expires_at"
)
_ACTIVE = [status.value for status in ACTIVE_STATUSES]
_headers_decoder = msgspec.json.Decoder(list[tuple[str, str]])


class PostgresGenerationRepository:
    """Implements `core.ports.GenerationRepository` on `generations` and `generation_images`."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, generation: Generation) -> None:
        g = generation
        _aware_generation(g)
        conn = self._uow.connection
        try:
            async with conn.transaction():  # a savepoint: a refused row leaves the unit of work usable
                cursor = await conn.execute(
                    f"""
                    INSERT INTO generations ({_GENERATION_COLUMNS})
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s,
                            %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (id) DO NOTHING
                    """,
                    (
                        uuid.UUID(g.id),
                        uuid.UUID(g.user_id),
                        GenerationStatus(g.status).value,
                        g.prompt,
                        g.negative_prompt,
                        g.size,
                        g.width,
                        g.height,
                        g.n,
                        g.seed,
                        g.style,
                        None if g.init_image_id is None else uuid.UUID(g.init_image_id),
                        g.webhook_url,
                        g.priority,
                        g.retention_days,
                        g.progress,
                        g.error_code,
                        g.error_message,
                        g.attempts,
                        g.created_at,
                        g.updated_at,
                        g.started_at,
                        g.finished_at,
                        g.images_expire_at,
                        g.images_expired_at,
                    ),
                )
                if cursor.rowcount == 0:
                    raise DomainError(ErrorCode.CONFLICT, "Generation already exists", generation_id=g.id)
                await self._write_images(uuid.UUID(g.id), g.images)
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {g.user_id} to own the generation") from error
        except (errors.CheckViolation, errors.UniqueViolation) as error:
            raise ValueError(f"the generation breaks a rule of its table: {error}") from error

    async def get_for_user(self, user_id: str, generation_id: str) -> Generation | None:
        owner, id_ = _uuid_or_none(user_id), _uuid_or_none(generation_id)
        if owner is None or id_ is None:
            return None
        found = await self._select("WHERE id = %s AND user_id = %s", (id_, owner))
        return found[0] if found else None

    async def get_for_update(self, generation_id: str) -> Generation | None:
        id_ = _uuid_or_none(generation_id)
        if id_ is None:
            return None
        found = await self._select("WHERE id = %s FOR UPDATE", (id_,))
        return found[0] if found else None

    async def update(self, generation: Generation) -> None:
        g = generation
        _aware_generation(g)
        id_ = _uuid_or_none(g.id)
        if id_ is None:
            return
        conn = self._uow.connection
        try:
            async with conn.transaction():
                cursor = await conn.execute(
                    """
                    UPDATE generations
                    SET status = %s, progress = %s, error_code = %s, error_message = %s, attempts = %s,
                        updated_at = %s, started_at = %s, finished_at = %s, images_expire_at = %s,
                        images_expired_at = %s
                    WHERE id = %s
                    """,
                    (
                        GenerationStatus(g.status).value,
                        g.progress,
                        g.error_code,
                        g.error_message,
                        g.attempts,
                        g.updated_at,
                        g.started_at,
                        g.finished_at,
                        g.images_expire_at,
                        g.images_expired_at,
                        id_,
                    ),
                )
                if cursor.rowcount == 1:
                    await conn.execute("DELETE FROM generation_images WHERE generation_id = %s", (id_,))
                    await self._write_images(id_, g.images)
        except (errors.CheckViolation, errors.UniqueViolation) as error:
            raise ValueError(f"the generation breaks a rule of its table: {error}") from error

    async def list_for_user(
        self,
        user_id: str,
        *,
        status: GenerationStatus | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[Generation]:
        check_limit(limit)
        owner = _uuid_or_none(user_id)
        after_id = None if after is None else _uuid_or_none(after)
        if owner is None or (after is not None and after_id is None):
            return []
        # One of four statements, each served by an index: (user_id[, status], id DESC).
        conditions, params = ["user_id = %s"], list[Any]([owner])
        if status is not None:
            conditions.append("status = %s")
            params.append(GenerationStatus(status).value)
        if after_id is not None:
            conditions.append("id < %s")
            params.append(after_id)
        params.append(limit)
        return await self._select(
            f"WHERE {' AND '.join(conditions)} ORDER BY id DESC LIMIT %s", tuple(params)
        )

    async def list_stuck(self, now: datetime, older_than: timedelta, limit: int) -> list[Generation]:
        check_limit(limit)
        since = aware(now, "now") - older_than
        # The condition repeats the partial index's predicate, so the planner can use it.
        return await self._select(
            "WHERE status IN ('queued', 'running') AND updated_at <= %s ORDER BY updated_at, id LIMIT %s",
            (since, limit),
        )

    async def list_expired_images(self, before: datetime, limit: int) -> list[Generation]:
        check_limit(limit)
        return await self._select(
            "WHERE status = 'succeeded' AND images_expired_at IS NULL AND images_expire_at <= %s"
            " ORDER BY images_expire_at, id LIMIT %s",
            (aware(before, "before"), limit),
        )

    async def _select(self, where: str, params: Sequence[Any]) -> list[Generation]:
        conn = self._uow.connection
        cursor = await conn.execute(f"SELECT {_GENERATION_COLUMNS} FROM generations {where}", params)
        rows = await cursor.fetchall()
        if not rows:
            return []
        images: dict[uuid.UUID, list[GeneratedImage]] = {}
        cursor = await conn.execute(
            f"SELECT {_IMAGE_COLUMNS} FROM generation_images WHERE generation_id = ANY(%s)"
            " ORDER BY generation_id, index",
            ([row[0] for row in rows],),
        )
        for image_row in await cursor.fetchall():
            images.setdefault(image_row[0], []).append(_image(image_row))
        return [_generation(row, images.get(row[0], [])) for row in rows]

    async def _write_images(self, generation_id: uuid.UUID, images: Sequence[GeneratedImage]) -> None:
        if not images:
            return
        async with self._uow.connection.cursor() as cursor:
            await cursor.executemany(
                f"INSERT INTO generation_images ({_IMAGE_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [
                    (
                        generation_id,
                        image.index,
                        image.blob_key,
                        image.content_type,
                        image.width,
                        image.height,
                        image.bytes,
                        image.sha256,
                    )
                    for image in images
                ],
            )


class PostgresUploadRepository:
    """Implements `core.ports.UploadRepository` on the `uploads` table."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def add(self, upload: Upload) -> None:
        aware(upload.created_at, "created_at")
        conn = self._uow.connection
        try:
            async with conn.transaction():
                cursor = await conn.execute(
                    f"""
                    INSERT INTO uploads ({_UPLOAD_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)
                    ON CONFLICT (id) DO NOTHING
                    """,
                    (
                        uuid.UUID(upload.id),
                        uuid.UUID(upload.user_id),
                        upload.blob_key,
                        upload.content_type,
                        upload.width,
                        upload.height,
                        upload.bytes,
                        upload.sha256,
                        upload.created_at,
                    ),
                )
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {upload.user_id} to own the upload") from error
        except errors.CheckViolation as error:
            raise ValueError(f"the upload breaks a rule of its table: {error}") from error
        if cursor.rowcount == 0:
            raise DomainError(ErrorCode.CONFLICT, "Upload already exists", upload_id=upload.id)

    async def get_for_user(self, user_id: str, upload_id: str) -> Upload | None:
        owner, id_ = _uuid_or_none(user_id), _uuid_or_none(upload_id)
        if owner is None or id_ is None:
            return None
        cursor = await self._uow.connection.execute(
            f"SELECT {_UPLOAD_COLUMNS} FROM uploads WHERE id = %s AND user_id = %s", (id_, owner)
        )
        row = await cursor.fetchone()
        return None if row is None else _upload(row)

    async def delete(self, user_id: str, upload_id: str) -> bool:
        owner, id_ = _uuid_or_none(user_id), _uuid_or_none(upload_id)
        if owner is None or id_ is None:
            return False
        cursor = await self._uow.connection.execute(
            "DELETE FROM uploads WHERE id = %s AND user_id = %s", (id_, owner)
        )
        return cursor.rowcount == 1


class PostgresIdempotencyRepository:
    """Implements `core.ports.IdempotencyRepository` on the `idempotency_keys` table."""

    def __init__(self, uow: PostgresUnitOfWork) -> None:
        self._uow = uow

    async def claim(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        if IdempotencyStatus(record.status) is not IdempotencyStatus.IN_PROGRESS:
            raise ValueError("a claimed record must be in progress")
        created_at = aware(record.created_at, "created_at")
        conn = self._uow.connection
        try:
            async with conn.transaction():
                # Inserted, or an expired record replaced: a row comes back. A live record is left
                # as it is (and locked, as ON CONFLICT DO UPDATE does), and nothing comes back.
                cursor = await conn.execute(
                    """
                    INSERT INTO idempotency_keys AS k
                        (user_id, key, fingerprint, status, created_at, expires_at)
                    VALUES (%s, %s, %s, 'in_progress', %s, %s)
                    ON CONFLICT (user_id, key) DO UPDATE
                    SET fingerprint = EXCLUDED.fingerprint, status = 'in_progress',
                        response_status = NULL, response_body = NULL, response_headers = '[]',
                        created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at
                    WHERE k.expires_at <= EXCLUDED.created_at
                    RETURNING 1
                    """,
                    (
                        uuid.UUID(record.user_id),
                        record.key,
                        record.fingerprint,
                        created_at,
                        aware(record.expires_at, "expires_at"),
                    ),
                )
                stored = await cursor.fetchone()
        except errors.ForeignKeyViolation as error:
            raise ValueError(f"no user {record.user_id} to own the idempotency record") from error
        except errors.CheckViolation as error:
            raise ValueError(f"the idempotency record breaks a rule of its table: {error}") from error
        if stored is not None:
            return None
        existing = await self.get(record.user_id, record.key)
        if existing is None:  # unreachable: the row is locked by this transaction
            raise RuntimeError("an idempotency record vanished within its conflict")
        return existing

    async def get(self, user_id: str, key: str) -> IdempotencyRecord | None:
        owner = _uuid_or_none(user_id)
        if owner is None:
            return None
        cursor = await self._uow.connection.execute(
            f"SELECT {_RECORD_COLUMNS} FROM idempotency_keys WHERE user_id = %s AND key = %s", (owner, key)
        )
        row = await cursor.fetchone()
        return None if row is None else _record(row)

    async def complete(
        self,
        user_id: str,
        key: str,
        *,
        response_status: int,
        response_body: bytes,
        response_headers: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        owner = _uuid_or_none(user_id)
        if owner is None:
            return False
        cursor = await self._uow.connection.execute(
            """
            UPDATE idempotency_keys
            SET status = 'completed', response_status = %s, response_body = %s, response_headers = %s::jsonb
            WHERE user_id = %s AND key = %s AND status = 'in_progress'
            """,
            (
                response_status,
                bytes(response_body),
                msgspec.json.encode([list(pair) for pair in response_headers]).decode(),
                owner,
                key,
            ),
        )
        return cursor.rowcount == 1

    async def release(self, user_id: str, key: str) -> bool:
        owner = _uuid_or_none(user_id)
        if owner is None:
            return False
        cursor = await self._uow.connection.execute(
            "DELETE FROM idempotency_keys WHERE user_id = %s AND key = %s AND status = 'in_progress'",
            (owner, key),
        )
        return cursor.rowcount == 1

    async def delete_expired(self, now: datetime, limit: int = 1000) -> int:
        check_limit(limit)
        cursor = await self._uow.connection.execute(
            """
            DELETE FROM idempotency_keys
            WHERE (user_id, key) IN (
                SELECT user_id, key FROM idempotency_keys WHERE expires_at <= %s
                ORDER BY expires_at LIMIT %s FOR UPDATE SKIP LOCKED
            )
            """,
            (aware(now, "now"), limit),
        )
        return cursor.rowcount


def _generation(row: Sequence[Any], images: list[GeneratedImage]) -> Generation:
    (
        id_,
        user_id,
        status,
        prompt,
        negative_prompt,
        size,
        width,
        height,
        n,
        seed,
        style,
        init_image_id,
        webhook_url,
        priority,
        retention_days,
        progress,
        error_code,
        error_message,
        attempts,
        created_at,
        updated_at,
        started_at,
        finished_at,
        images_expire_at,
        images_expired_at,
    ) = row
    return Generation(
        id=str(id_),
        user_id=str(user_id),
        status=GenerationStatus(status),
        prompt=prompt,
        negative_prompt=negative_prompt,
        size=size,
        width=width,
        height=height,
        n=n,
        seed=seed,
        style=style,
        init_image_id=None if init_image_id is None else str(init_image_id),
        webhook_url=webhook_url,
        priority=priority,
        retention_days=retention_days,
        progress=progress,
        error_code=error_code,
        error_message=error_message,
        attempts=attempts,
        created_at=created_at.astimezone(UTC),
        updated_at=updated_at.astimezone(UTC),
        started_at=utc_or_none(started_at),
        finished_at=utc_or_none(finished_at),
        images=tuple(images),
        images_expire_at=utc_or_none(images_expire_at),
        images_expired_at=utc_or_none(images_expired_at),
    )


def _image(row: Sequence[Any]) -> GeneratedImage:
    _, index, blob_key, content_type, width, height, size, sha256 = row
    return GeneratedImage(
        index=index,
        blob_key=blob_key,
        content_type=content_type,
        width=width,
        height=height,
        bytes=size,
        sha256=sha256,
    )


def _upload(row: Sequence[Any]) -> Upload:
    id_, user_id, blob_key, content_type, width, height, size, sha256, created_at = row
    return Upload(
        id=str(id_),
        user_id=str(user_id),
        blob_key=blob_key,
        content_type=content_type,
        width=width,
        height=height,
        bytes=size,
        sha256=sha256,
        created_at=created_at.astimezone(UTC),
    )


def _record(row: Sequence[Any]) -> IdempotencyRecord:
    user_id, key, fingerprint, status, response_status, response_body, headers, created_at, expires_at = row
    return IdempotencyRecord(
        user_id=str(user_id),
        key=key,
        fingerprint=fingerprint,
        status=IdempotencyStatus(status),
        response_status=response_status,
        response_body=None if response_body is None else bytes(response_body),
        response_headers=tuple(_headers_decoder.decode(headers)),
        created_at=created_at.astimezone(UTC),
        expires_at=expires_at.astimezone(UTC),
    )


def _aware_generation(generation: Generation) -> None:
    for name in (
        "created_at",
        "updated_at",
        "started_at",
        "finished_at",
        "images_expire_at",
        "images_expired_at",
    ):
        moment = getattr(generation, name)
        if moment is not None:
            aware(moment, name)


def _uuid_or_none(text: str) -> uuid.UUID | None:
    return uuid.UUID(text) if is_id(text) else None
