"""The generation, upload and idempotency repositories' contract.

Run against PostgreSQL (fresh schema, migrated) and the in-memory fake through the unit of work that
hands them out: owner scoping (another user's id finds nothing), keyset pages newest first, the
status filter, the reconciler's and retention's listings, row locks, and idempotency claims where of
two concurrent claims of one key exactly one wins.
"""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar

import msgspec
import pytest

from adapters.memory.ids import SequentialIds
from core.accounts.users import User
from core.errors import DomainError, ErrorCode
from core.generations.generation import (
    GeneratedImage,
    Generation,
    GenerationStatus,
    cancel,
    expire_images,
    fail,
    progress,
    start,
    succeed,
)
from core.generations.uploads import Upload, upload_blob_key
from core.idempotency import IdempotencyRecord, IdempotencyStatus, new_record
from core.ports import Database, UnitOfWork
from tests.support.billing_data import T0, make_user
from tests.support.units_of_work import committed, read

T = TypeVar("T")
NOT_A_UUID = "not-a-uuid"
SHA = "0123456789abcdef" * 4


def make_generation(ids: SequentialIds, user: User, **changes: Any) -> Generation:
    generation = Generation(
        id=ids.new_id(),
        user_id=user.id,
        status=GenerationStatus.QUEUED,
        prompt="a lighthouse at dusk",
        size="512x768",
        width=512,
        height=768,
        n=2,
        seed=2**32 - 1,
        created_at=T0,
        updated_at=T0,
    )
    return msgspec.structs.replace(generation, **changes)


def image(generation: Generation, index: int) -> GeneratedImage:
    return GeneratedImage(
        index=index,
        blob_key=f"generations/{generation.user_id}/{generation.id}/{index}.png",
        content_type="image/png",
        width=generation.width,
        height=generation.height,
        bytes=1000 + index,
        sha256=SHA,
    )


def succeeded(generation: Generation, at: datetime) -> Generation:
    running = start(generation, at)
    return succeed(running, [image(generation, i) for i in range(generation.n)], at)


async def add_all(db: Database, *generations: Generation) -> None:
    async def add(uow: UnitOfWork) -> None:
        for generation in generations:
            await uow.generations.add(generation)

    await committed(db, add)


# --- generations -------------------------------------------------------------------------------


async def test_a_generation_reads_back_as_written_in_utc(db: Database, ada: User, ids: SequentialIds) -> None:
    plus_two = timezone(timedelta(hours=2))
    upload_id = ids.new_id()
    generation = make_generation(
        ids,
        ada,
        negative_prompt="blur",
        style="anime",
        init_image_id=upload_id,
        webhook_url="https://hooks.example.com/x",
        priority=True,
        retention_days=7,
        created_at=T0.astimezone(plus_two),
        updated_at=T0.astimezone(plus_two),
    )
    await add_all(db, generation)
    stored = await read(db, lambda uow: uow.generations.get_for_user(ada.id, generation.id))
    assert stored == msgspec.structs.replace(generation, created_at=T0, updated_at=T0)
    assert stored is not None and stored.created_at.utcoffset() == timedelta(0)
    assert stored.status is GenerationStatus.QUEUED


async def test_another_users_or_a_malformed_id_finds_nothing(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    generation = make_generation(ids, ada)
    await add_all(db, generation)
    async with db.unit_of_work() as uow:
        assert await uow.generations.get_for_user(grace.id, generation.id) is None
        assert await uow.generations.get_for_user(ada.id, ids.new_id()) is None
        assert await uow.generations.get_for_user(ada.id, NOT_A_UUID) is None
        assert await uow.generations.get_for_user(NOT_A_UUID, generation.id) is None
        assert await uow.generations.get_for_update(NOT_A_UUID) is None
        assert await uow.generations.get_for_update(ids.new_id()) is None
        assert await uow.generations.get_for_user(ada.id, generation.id.upper()) == generation
        assert await uow.generations.get_for_update(generation.id) == generation


async def test_a_reused_id_is_a_conflict_and_a_generation_needs_its_user(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    generation = make_generation(ids, ada)
    await add_all(db, generation)
    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.generations.add(msgspec.structs.replace(generation, prompt="other"))
        assert raised.value.code is ErrorCode.CONFLICT
        with pytest.raises(ValueError):
            await uow.generations.add(make_generation(ids, make_user(ids, "ghost@example.com")))
        assert await uow.generations.get_for_user(ada.id, generation.id) == generation  # still usable


async def test_the_tables_refuse_what_the_rules_never_make(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    bad = [
        make_generation(ids, ada, status=GenerationStatus.SUCCEEDED),  # finished without finished_at
        make_generation(ids, ada, status=GenerationStatus.FAILED, finished_at=T0),  # no error code
        make_generation(ids, ada, progress=1.5),
        make_generation(ids, ada, seed=2**32),
        make_generation(ids, ada, prompt=""),
    ]
    for generation in bad:
        async with db.unit_of_work() as uow:
            with pytest.raises(ValueError):
                await uow.generations.add(generation)


async def test_update_moves_the_lifecycle_and_stores_the_images(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    generation = make_generation(ids, ada)
    await add_all(db, generation)
    t1, t2 = T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)
    running = progress(start(generation, t1), 0.25, t1)
    await committed(db, lambda uow: uow.generations.update(running))
    assert await read(db, lambda uow: uow.generations.get_for_user(ada.id, generation.id)) == running

    done = succeed(running, [image(generation, 1), image(generation, 0)], t2)
    # The owner, the request and created_at are not columns an update writes.
    tampered = msgspec.structs.replace(done, prompt="changed", user_id=ids.new_id(), created_at=t2)
    await committed(db, lambda uow: uow.generations.update(tampered))
    stored = await read(db, lambda uow: uow.generations.get_for_user(ada.id, generation.id))
    assert stored == done
    assert stored is not None and [i.index for i in stored.images] == [0, 1]

    expired = expire_images(done, t2 + timedelta(days=31))
    await committed(db, lambda uow: uow.generations.update(expired))
    assert await read(db, lambda uow: uow.generations.get_for_user(ada.id, generation.id)) == expired

    ghost = make_generation(ids, ada)  # never added: an update changes nothing
    await committed(db, lambda uow: uow.generations.update(ghost))
    assert await read(db, lambda uow: uow.generations.get_for_user(ada.id, ghost.id)) is None


async def test_generation_writes_are_discarded_by_rollback(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    generation = make_generation(ids, ada)
    await add_all(db, generation)
    async with db.unit_of_work() as uow:
        await uow.generations.update(cancel(generation, T0))
        await uow.generations.add(make_generation(ids, ada))
        assert (await uow.generations.get_for_user(ada.id, generation.id)) == cancel(generation, T0)
        await uow.rollback()
    assert await read(db, lambda uow: uow.generations.list_for_user(ada.id, limit=10)) == [generation]


async def test_get_for_update_makes_a_cancel_wait_for_the_worker(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    generation = make_generation(ids, ada)
    await add_all(db, generation)
    async with db.unit_of_work() as worker:
        locked = await worker.generations.get_for_update(generation.id)
        assert locked is not None

        async def canceler() -> Generation | None:
            async with db.unit_of_work() as uow:
                return await uow.generations.get_for_update(generation.id)

        waiting = asyncio.create_task(canceler())
        await asyncio.sleep(0.1)  # long enough for an unlocked read to have finished
        assert not waiting.done()
        await worker.generations.update(start(locked, T0))
        await worker.commit()

    seen = await waiting
    assert seen is not None and seen.status is GenerationStatus.RUNNING  # not a stale copy


async def test_lists_are_newest_first_in_keyset_pages_per_user(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    mine = [make_generation(ids, ada) for _ in range(5)]
    theirs = make_generation(ids, grace)
    await add_all(db, *mine, theirs)
    newest_first = list(reversed(mine))

    first = await read(db, lambda uow: uow.generations.list_for_user(ada.id, limit=2))
    assert first == newest_first[:2]
    second = await read(db, lambda uow: uow.generations.list_for_user(ada.id, after=first[-1].id, limit=2))
    assert second == newest_first[2:4]
    third = await read(db, lambda uow: uow.generations.list_for_user(ada.id, after=second[-1].id, limit=2))
    assert third == newest_first[4:]
    assert (
        await read(db, lambda uow: uow.generations.list_for_user(ada.id, after=third[-1].id, limit=2)) == []
    )
    assert await read(db, lambda uow: uow.generations.list_for_user(grace.id, limit=10)) == [theirs]
    assert await read(db, lambda uow: uow.generations.list_for_user(ada.id, limit=0)) == []
    assert await read(db, lambda uow: uow.generations.list_for_user(NOT_A_UUID, limit=10)) == []
    assert await read(db, lambda uow: uow.generations.list_for_user(ada.id, after=NOT_A_UUID, limit=10)) == []


async def test_the_status_filter_pages_too(db: Database, ada: User, ids: SequentialIds) -> None:
    generations = [make_generation(ids, ada) for _ in range(6)]
    finished = [
        generations[0],
        cancel(generations[1], T0),
        succeeded(generations[2], T0),
        cancel(generations[3], T0),
        fail(generations[4], "render_failed", "boom", T0),
        cancel(generations[5], T0),
    ]
    await add_all(db, *finished)

    canceled = await read(
        db, lambda uow: uow.generations.list_for_user(ada.id, status=GenerationStatus.CANCELED, limit=2)
    )
    assert canceled == [finished[5], finished[3]]
    rest = await read(
        db,
        lambda uow: uow.generations.list_for_user(
            ada.id, status=GenerationStatus.CANCELED, after=canceled[-1].id, limit=2
        ),
    )
    assert rest == [finished[1]]
    ok = await read(
        db, lambda uow: uow.generations.list_for_user(ada.id, status=GenerationStatus.SUCCEEDED, limit=9)
    )
    assert ok == [finished[2]] and len(ok[0].images) == 2


async def test_stuck_generations_are_the_unfinished_ones_not_updated_lately(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    now = T0 + timedelta(hours=1)
    old_queued = make_generation(ids, ada, updated_at=T0)
    old_running = start(make_generation(ids, grace), T0 - timedelta(minutes=5))
    recent = make_generation(ids, ada, updated_at=now - timedelta(seconds=30))
    edge = make_generation(ids, ada, updated_at=now - timedelta(minutes=10))  # exactly at the limit
    finished_long_ago = cancel(make_generation(ids, ada), T0 - timedelta(days=1))
    done_long_ago = succeeded(make_generation(ids, ada), T0 - timedelta(days=1))
    await add_all(db, old_queued, old_running, recent, edge, finished_long_ago, done_long_ago)

    stuck = await read(db, lambda uow: uow.generations.list_stuck(now, timedelta(minutes=10), 10))
    assert stuck == [old_running, old_queued, edge]  # least recently updated first
    assert await read(db, lambda uow: uow.generations.list_stuck(now, timedelta(minutes=10), 1)) == [
        old_running
    ]


async def test_expired_images_are_listed_until_marked(db: Database, ada: User, ids: SequentialIds) -> None:
    old = succeeded(make_generation(ids, ada, retention_days=1), T0)
    older = succeeded(make_generation(ids, ada, retention_days=1), T0 - timedelta(hours=1))
    young = succeeded(make_generation(ids, ada, retention_days=30), T0)
    failed = fail(start(make_generation(ids, ada, retention_days=1), T0), "render_failed", "x", T0)
    await add_all(db, old, older, young, failed)
    at = T0 + timedelta(days=2)

    expired = await read(db, lambda uow: uow.generations.list_expired_images(at, 10))
    assert expired == [older, old]
    await committed(db, lambda uow: uow.generations.update(expire_images(older, at)))
    assert await read(db, lambda uow: uow.generations.list_expired_images(at, 10)) == [old]
    assert await read(db, lambda uow: uow.generations.list_expired_images(T0, 10)) == []


# --- uploads -----------------------------------------------------------------------------------


def make_upload(ids: SequentialIds, user: User, **changes: Any) -> Upload:
    upload_id = ids.new_id()
    upload = Upload(
        id=upload_id,
        user_id=user.id,
        blob_key=upload_blob_key(user.id, upload_id, "image/webp"),
        content_type="image/webp",
        width=640,
        height=480,
        bytes=54321,
        sha256=SHA,
        created_at=T0,
    )
    return msgspec.structs.replace(upload, **changes)


async def test_an_upload_belongs_to_its_owner_until_deleted(
    db: Database, ada: User, grace: User, ids: SequentialIds
) -> None:
    upload = make_upload(ids, ada, created_at=T0.astimezone(timezone(timedelta(hours=-5))))
    await committed(db, lambda uow: uow.uploads.add(upload))
    stored = await read(db, lambda uow: uow.uploads.get_for_user(ada.id, upload.id))
    assert stored == msgspec.structs.replace(upload, created_at=T0)
    assert await read(db, lambda uow: uow.uploads.get_for_user(grace.id, upload.id)) is None
    assert await read(db, lambda uow: uow.uploads.get_for_user(ada.id, NOT_A_UUID)) is None

    assert await committed(db, lambda uow: uow.uploads.delete(grace.id, upload.id)) is False
    async with db.unit_of_work() as uow:  # a rolled-back delete deletes nothing
        assert await uow.uploads.delete(ada.id, upload.id) is True
        assert await uow.uploads.get_for_user(ada.id, upload.id) is None
    assert await read(db, lambda uow: uow.uploads.get_for_user(ada.id, upload.id)) == stored
    assert await committed(db, lambda uow: uow.uploads.delete(ada.id, upload.id)) is True
    assert await committed(db, lambda uow: uow.uploads.delete(ada.id, upload.id)) is False
    assert await read(db, lambda uow: uow.uploads.get_for_user(ada.id, upload.id)) is None


async def test_uploads_refuse_reused_ids_missing_users_and_unknown_types(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    upload = make_upload(ids, ada)
    await committed(db, lambda uow: uow.uploads.add(upload))
    async with db.unit_of_work() as uow:
        with pytest.raises(DomainError) as raised:
            await uow.uploads.add(upload)
        assert raised.value.code is ErrorCode.CONFLICT
        with pytest.raises(ValueError):
            await uow.uploads.add(make_upload(ids, make_user(ids, "ghost@example.com")))
        with pytest.raises(ValueError):
            await uow.uploads.add(make_upload(ids, ada, content_type="image/svg+xml"))
        assert await uow.uploads.get_for_user(ada.id, upload.id) == upload


# --- idempotency records -----------------------------------------------------------------------

FINGERPRINT = "f" * 64


def record(
    user: User, key: str = "key-1", at: datetime = T0, fingerprint: str = FINGERPRINT
) -> IdempotencyRecord:
    return new_record(user.id, key, fingerprint, at)


async def test_a_first_claim_is_stored_and_a_second_gets_it(db: Database, ada: User, grace: User) -> None:
    assert await committed(db, lambda uow: uow.idempotency.claim(record(ada))) is None
    again = await committed(db, lambda uow: uow.idempotency.claim(record(ada, fingerprint="0" * 64)))
    assert again == record(ada)
    assert again is not None and again.status is IdempotencyStatus.IN_PROGRESS
    # Keys are per user.
    assert await committed(db, lambda uow: uow.idempotency.claim(record(grace))) is None
    assert await read(db, lambda uow: uow.idempotency.get(ada.id, "key-2")) is None
    assert await read(db, lambda uow: uow.idempotency.get(NOT_A_UUID, "key-1")) is None


async def test_complete_then_replay(db: Database, ada: User) -> None:
    await committed(db, lambda uow: uow.idempotency.claim(record(ada)))
    headers = (("Location", "/v1/generations/x"), ("Content-Type", "application/json"))
    done = await committed(
        db,
        lambda uow: uow.idempotency.complete(
            ada.id, "key-1", response_status=202, response_body=b'{"id":"x"}', response_headers=headers
        ),
    )
    assert done is True
    expected = msgspec.structs.replace(
        record(ada),
        status=IdempotencyStatus.COMPLETED,
        response_status=202,
        response_body=b'{"id":"x"}',
        response_headers=headers,
    )
    assert await read(db, lambda uow: uow.idempotency.get(ada.id, "key-1")) == expected
    later = record(ada, at=T0 + timedelta(hours=1))
    assert await committed(db, lambda uow: uow.idempotency.claim(later)) == expected
    # A completed record completes once and is never released.
    again = await committed(
        db, lambda uow: uow.idempotency.complete(ada.id, "key-1", response_status=500, response_body=b"")
    )
    assert again is False
    assert await committed(db, lambda uow: uow.idempotency.release(ada.id, "key-1")) is False
    assert await read(db, lambda uow: uow.idempotency.get(ada.id, "key-1")) == expected


async def test_a_released_claim_can_be_claimed_again(db: Database, ada: User) -> None:
    await committed(db, lambda uow: uow.idempotency.claim(record(ada)))
    assert await committed(db, lambda uow: uow.idempotency.release(ada.id, "key-1")) is True
    assert await committed(db, lambda uow: uow.idempotency.release(ada.id, "key-1")) is False
    assert await read(db, lambda uow: uow.idempotency.get(ada.id, "key-1")) is None
    assert await committed(db, lambda uow: uow.idempotency.claim(record(ada))) is None
    assert (
        await committed(
            db, lambda uow: uow.idempotency.complete(ada.id, "other", response_status=200, response_body=b"")
        )
        is False
    )


async def test_an_expired_record_is_replaced_by_a_new_claim(db: Database, ada: User) -> None:
    await committed(db, lambda uow: uow.idempotency.claim(record(ada)))
    await committed(
        db, lambda uow: uow.idempotency.complete(ada.id, "key-1", response_status=202, response_body=b"{}")
    )
    just_before = record(ada, at=T0 + timedelta(hours=24) - timedelta(microseconds=1), fingerprint="1" * 64)
    assert await committed(db, lambda uow: uow.idempotency.claim(just_before)) is not None
    fresh = record(ada, at=T0 + timedelta(hours=24), fingerprint="1" * 64)
    assert await committed(db, lambda uow: uow.idempotency.claim(fresh)) is None
    assert await read(db, lambda uow: uow.idempotency.get(ada.id, "key-1")) == fresh


async def test_of_two_concurrent_claims_of_one_key_exactly_one_wins(db: Database, ada: User) -> None:
    started = asyncio.Event()

    async def claimant(fingerprint: str) -> IdempotencyRecord | None:
        async with db.unit_of_work() as uow:
            outcome = await uow.idempotency.claim(record(ada, fingerprint=fingerprint))
            started.set()
            await asyncio.sleep(0.05)  # hold the transaction open while the other one claims
            await uow.commit()
        return outcome

    outcomes = await asyncio.gather(claimant("a" * 64), claimant("b" * 64))
    winners = [outcome for outcome in outcomes if outcome is None]
    losers = [outcome for outcome in outcomes if outcome is not None]
    assert len(winners) == 1 and len(losers) == 1
    stored = await read(db, lambda uow: uow.idempotency.get(ada.id, "key-1"))
    assert losers[0] == stored  # the loser saw the winner's committed record


async def test_a_claim_waits_for_a_concurrent_claim_and_sees_its_outcome(db: Database, ada: User) -> None:
    async with db.unit_of_work() as first:
        assert await first.idempotency.claim(record(ada)) is None
        waiting = asyncio.create_task(committed(db, lambda uow: uow.idempotency.claim(record(ada))))
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await first.rollback()  # the first request failed before committing its claim
    assert await waiting is None  # so the second one goes ahead

    async with db.unit_of_work() as first:
        assert await first.idempotency.claim(record(ada, key="key-2")) is None
        waiting = asyncio.create_task(
            committed(db, lambda uow: uow.idempotency.claim(record(ada, key="key-2")))
        )
        await asyncio.sleep(0.1)
        assert not waiting.done()
        await first.commit()
    assert await waiting == record(ada, key="key-2")


async def test_expired_records_are_deleted_in_batches(db: Database, ada: User, grace: User) -> None:
    async def claim_all(uow: UnitOfWork) -> None:
        for index in range(3):
            await uow.idempotency.claim(record(ada, key=f"old-{index}", at=T0 - timedelta(hours=30 - index)))
        await uow.idempotency.claim(record(grace, key="new", at=T0))

    await committed(db, claim_all)
    assert await committed(db, lambda uow: uow.idempotency.delete_expired(T0, limit=2)) == 2
    assert await read(db, lambda uow: uow.idempotency.get(ada.id, "old-0")) is None
    assert await read(db, lambda uow: uow.idempotency.get(ada.id, "old-2")) is not None
    assert await committed(db, lambda uow: uow.idempotency.delete_expired(T0)) == 1
    assert await committed(db, lambda uow: uow.idempotency.delete_expired(T0)) == 0
    assert await read(db, lambda uow: uow.idempotency.get(grace.id, "new")) == record(grace, key="new")
    assert await committed(db, lambda uow: uow.idempotency.claim(record(ada, key="old-0"))) is None


async def test_a_record_needs_its_user(db: Database, ids: SequentialIds) -> None:
    ghost = make_user(ids, "ghost@example.com")
    async with db.unit_of_work() as uow:
        with pytest.raises(ValueError):
            await uow.idempotency.claim(record(ghost))


async def test_a_finished_unit_of_work_refuses_generation_work(
    db: Database, ada: User, ids: SequentialIds
) -> None:
    uow = db.unit_of_work()
    async with uow:
        await uow.commit()
        with pytest.raises(RuntimeError):
            await uow.generations.get_for_user(ada.id, ids.new_id())
        with pytest.raises(RuntimeError):
            await uow.uploads.get_for_user(ada.id, ids.new_id())
        with pytest.raises(RuntimeError):
            await uow.idempotency.claim(record(ada))
