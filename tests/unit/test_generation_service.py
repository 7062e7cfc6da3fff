"""The generation use cases (accept, get, list, cancel, wait, watch) on the memory fakes."""

from __future__ import annotations

import msgspec
import pytest

from core.accounts.api_keys import Scope
from core.billing.usage import ReservationStatus
from core.errors import DomainError, ErrorCode
from core.events import GENERATION_CANCELED
from core.generations import generation as lifecycle
from core.generations.generation import Generation, GenerationStatus
from core.generations.requests import GenerationRequest
from core.generations.service import (
    MAX_POLL_SECONDS,
    RENDER_ATTEMPTS,
    RENDER_GENERATION,
    Generations,
    render_job_spec,
)
from core.jobs import GENERATION, GENERATION_PRIORITY, JobState
from core.pagination import encode_cursor
from tests.support.generation_world import CATALOG, STEPS, GenerationWorld


@pytest.fixture
def world() -> GenerationWorld:
    return GenerationWorld()


def ask(prompt: str = "a lighthouse at dusk", **fields: object) -> GenerationRequest:
    return GenerationRequest(prompt=prompt, **fields)  # type: ignore[arg-type]


async def test_accept_reserves_the_images_stores_the_generation_and_enqueues_its_render(
    world: GenerationWorld,
) -> None:
    ann = await world.user()
    generation = await world.generations.accept(ann, ask(n=2, size="256x256", seed=7))

    assert generation.status is GenerationStatus.QUEUED
    assert (generation.user_id, generation.n, generation.seed, generation.size) == (
        ann.user_id,
        2,
        7,
        "256x256",
    )
    assert await world.stored(generation.id) == generation
    reservation = world.reservation(generation.id)
    assert (reservation.images, reservation.status) == (2, ReservationStatus.RESERVED)
    assert world.images_used(ann.user_id) == 2
    job = await world.jobs.status(GENERATION, generation.id)
    assert job is not None and job.function == RENDER_GENERATION and job.state is JobState.QUEUED
    assert await world.jobs.status(GENERATION_PRIORITY, generation.id) is None


async def test_a_priority_plan_renders_on_the_priority_queue(world: GenerationWorld) -> None:
    pia = await world.user("pia@example.com", plan="pro")
    generation = await world.generations.accept(pia, ask())
    assert generation.priority
    assert await world.jobs.status(GENERATION_PRIORITY, generation.id) is not None
    assert await world.jobs.status(GENERATION, generation.id) is None


async def test_without_a_seed_one_is_drawn(world: GenerationWorld) -> None:
    ann = await world.user()
    first = await world.generations.accept(ann, ask())
    second = await world.generations.accept(ann, ask())
    assert 0 <= first.seed < 2**32 and first.seed != second.seed


async def test_over_the_quota_nothing_is_created(world: GenerationWorld) -> None:
    ann = await world.user()  # free: 6 images a month
    await world.generations.accept(ann, ask(n=4))
    with pytest.raises(DomainError) as refused:
        await world.generations.accept(ann, ask(n=3))
    assert refused.value.code is ErrorCode.QUOTA_EXCEEDED
    assert len(world.database.committed_generations()) == 1
    assert len(world.database.committed_reservations()) == 1
    assert world.images_used(ann.user_id) == 4


async def test_a_blocked_prompt_is_rejected_before_any_reservation(world: GenerationWorld) -> None:
    ann = await world.user()
    with pytest.raises(DomainError) as refused:
        await world.generations.accept(ann, ask("a FORBIDDEN garden"))
    assert refused.value.code is ErrorCode.PROMPT_REJECTED
    assert world.database.committed_generations() == []
    assert world.database.committed_reservations() == []


async def test_invalid_fields_are_validation_failed(world: GenerationWorld) -> None:
    ann = await world.user()
    with pytest.raises(DomainError) as refused:
        await world.generations.accept(ann, ask(size="2048x2048", n=9))  # over free's pixels, too many
    assert refused.value.code is ErrorCode.VALIDATION_FAILED
    assert {error.field for error in refused.value.errors} == {"size", "n"}
    assert world.database.committed_generations() == []


async def test_an_init_image_must_be_an_upload_of_the_caller(world: GenerationWorld) -> None:
    ann, bob = await world.user(), await world.user("bob@example.com")
    bobs = await world.upload(bob)
    with pytest.raises(DomainError) as refused:
        await world.generations.accept(ann, ask(init_image=bobs.id))
    assert refused.value.code is ErrorCode.VALIDATION_FAILED
    assert [error.field for error in refused.value.errors] == ["init_image"]
    assert world.database.committed_reservations() == []

    anns = await world.upload(ann)
    generation = await world.generations.accept(ann, ask(init_image=anns.id.upper()))
    assert generation.init_image_id == anns.id


async def test_accept_needs_the_write_scope(world: GenerationWorld) -> None:
    ann = await world.user()
    reader = msgspec.structs.replace(ann, scopes=frozenset({Scope.GENERATIONS_READ.value}))
    with pytest.raises(DomainError) as refused:
        await world.generations.accept(reader, ask())
    assert refused.value.code is ErrorCode.INSUFFICIENT_SCOPE


async def test_a_failed_store_gives_the_images_back(
    world: GenerationWorld, monkeypatch: pytest.MonkeyPatch
) -> None:
    ann = await world.user()

    async def broken_add(self: object, generation: Generation) -> None:
        raise ConnectionError("the database went away")

    monkeypatch.setattr("adapters.memory.generations.MemoryGenerationRepository.add", broken_add)
    with pytest.raises(ConnectionError):
        await world.generations.accept(ann, ask(n=2))
    [reservation] = world.database.committed_reservations()
    assert reservation.status is ReservationStatus.REFUNDED
    assert world.images_used(ann.user_id) == 0


async def test_a_queue_outage_still_accepts_the_generation(world: GenerationWorld) -> None:
    ann = await world.user()

    async def down(spec: object) -> None:
        raise ConnectionError("queue unreachable")

    world.jobs.enqueue = down  # type: ignore[method-assign]
    generation = await world.generations.accept(ann, ask())
    assert (await world.stored(generation.id)).status is GenerationStatus.QUEUED
    assert world.reservation(generation.id).status is ReservationStatus.RESERVED


async def test_get_finds_only_the_callers_generations(world: GenerationWorld) -> None:
    ann, bob = await world.user(), await world.user("bob@example.com")
    generation = await world.generations.accept(ann, ask())
    assert await world.generations.get(ann, generation.id.upper()) == generation
    for who, id_ in ((bob, generation.id), (ann, "not-an-id"), (ann, world.ids.new_id())):
        with pytest.raises(DomainError) as missing:
            await world.generations.get(who, id_)
        assert missing.value.code is ErrorCode.NOT_FOUND


async def test_list_pages_newest_first_and_filters_by_status(world: GenerationWorld) -> None:
    ann, bob = await world.user(plan="pro"), await world.user("bob@example.com")
    made = [await world.generations.accept(ann, ask(f"picture {i}")) for i in range(5)]
    await world.generations.accept(bob, ask())
    await world.generations.cancel(ann, made[1].id)

    pages: list[list[str]] = []
    cursor: str | None = None
    while True:
        page, last_id = await world.generations.list(ann, cursor=cursor, limit=2)
        pages.append([g.id for g in page])
        if last_id is None:
            break
        cursor = encode_cursor(last_id)
    newest_first = [g.id for g in reversed(made)]
    assert pages == [newest_first[0:2], newest_first[2:4], newest_first[4:5]]

    canceled, after = await world.generations.list(ann, status=GenerationStatus.CANCELED)
    assert ([g.id for g in canceled], after) == ([made[1].id], None)
    with pytest.raises(DomainError) as bad:
        await world.generations.list(ann, cursor="tampered!")
    assert bad.value.code is ErrorCode.INVALID_CURSOR


async def test_cancel_of_a_queued_generation_refunds_once_and_drops_its_job(world: GenerationWorld) -> None:
    ann = await world.user()
    generation = await world.generations.accept(ann, ask(n=3))
    world.clock.advance(5)

    canceled = await world.generations.cancel(ann, generation.id)

    assert canceled.status is GenerationStatus.CANCELED and canceled.finished_at == world.clock.now()
    assert await world.stored(generation.id) == canceled
    assert world.reservation(generation.id).status is ReservationStatus.REFUNDED
    assert world.images_used(ann.user_id) == 0
    job = await world.jobs.status(GENERATION, generation.id)
    assert job is not None and job.state is JobState.ABORTED
    assert world.events(GENERATION_CANCELED) == [
        {
            "generation_id": generation.id,
            "status": "canceled",
            "n": 3,
            "images": 0,
            "error": None,
            "webhook_url": None,
        }
    ]

    with pytest.raises(DomainError) as again:
        await world.generations.cancel(ann, generation.id)
    assert again.value.code is ErrorCode.INVALID_STATE
    assert world.images_used(ann.user_id) == 0
    assert len(world.events(GENERATION_CANCELED)) == 1


async def test_cancel_of_a_running_generation_refunds(world: GenerationWorld) -> None:
    ann = await world.user()
    generation = await world.generations.accept(ann, ask(n=2))
    await world.replace(lifecycle.start(await world.stored(generation.id), world.clock.now()))
    canceled = await world.generations.cancel(ann, generation.id)
    assert canceled.status is GenerationStatus.CANCELED and canceled.attempts == 1
    assert world.images_used(ann.user_id) == 0


async def test_cancel_of_a_finished_or_foreign_generation(world: GenerationWorld) -> None:
    ann, bob = await world.user(), await world.user("bob@example.com")
    generation = await world.generations.accept(ann, ask())
    with pytest.raises(DomainError) as foreign:
        await world.generations.cancel(bob, generation.id)
    assert foreign.value.code is ErrorCode.NOT_FOUND
    failed = lifecycle.fail(await world.stored(generation.id), "render_failed", "no", world.clock.now())
    await world.replace(failed)
    with pytest.raises(DomainError) as finished:
        await world.generations.cancel(ann, generation.id)
    assert finished.value.code is ErrorCode.INVALID_STATE
    assert world.reservation(generation.id).status is ReservationStatus.RESERVED  # untouched here


async def test_wait_returns_at_once_for_a_finished_generation(world: GenerationWorld) -> None:
    ann = await world.user()
    generation = await world.generations.accept(ann, ask())
    await world.generations.cancel(ann, generation.id)
    done = await world.generations.wait(ann, generation.id, timeout_seconds=30)
    assert done.status is GenerationStatus.CANCELED
    assert world.sleep.pauses == []


async def test_wait_gives_up_after_the_timeout_with_growing_pauses(world: GenerationWorld) -> None:
    ann = await world.user()
    generation = await world.generations.accept(ann, ask())
    still = await world.generations.wait(ann, generation.id, timeout_seconds=3)
    assert still.status is GenerationStatus.QUEUED
    pauses = world.sleep.pauses
    assert sum(pauses) == pytest.approx(3)
    assert pauses[0] < pauses[1] < pauses[2]  # growing from the first poll
    assert max(pauses) <= MAX_POLL_SECONDS


async def test_wait_returns_as_soon_as_the_generation_ends(world: GenerationWorld) -> None:
    ann = await world.user()
    generation = await world.generations.accept(ann, ask())

    async def cancel_on_third_pause(count: int) -> None:
        if count == 3:
            await world.generations.cancel(ann, generation.id)

    world.sleep.between = cancel_on_third_pause
    done = await world.generations.wait(ann, generation.id, timeout_seconds=60)
    assert done.status is GenerationStatus.CANCELED
    assert len(world.sleep.pauses) == 3


async def test_watch_yields_each_change_and_ends_after_the_terminal_state(world: GenerationWorld) -> None:
    ann = await world.user()
    generation = await world.generations.accept(ann, ask())
    script = {
        2: lambda g: lifecycle.start(g, world.clock.now()),
        4: lambda g: lifecycle.progress(g, 0.5, world.clock.now()),
        5: lambda g: lifecycle.progress(g, 0.5, world.clock.now()),  # no visible change
        7: lambda g: lifecycle.fail(g, "render_failed", "broke", world.clock.now()),
    }

    async def move(count: int) -> None:
        if count in script:
            await world.replace(script[count](await world.stored(generation.id)))

    world.sleep.between = move
    seen = [(g.status, g.progress) async for g in await world.generations.watch(ann, generation.id)]
    assert seen == [
        (GenerationStatus.QUEUED, 0.0),
        (GenerationStatus.RUNNING, 0.0),
        (GenerationStatus.RUNNING, 0.5),
        (GenerationStatus.FAILED, 0.5),
    ]


async def test_watch_of_someone_elses_generation_is_not_found_before_streaming(
    world: GenerationWorld,
) -> None:
    ann, bob = await world.user(), await world.user("bob@example.com")
    generation = await world.generations.accept(ann, ask())
    with pytest.raises(DomainError) as missing:
        await world.generations.watch(bob, generation.id)
    assert missing.value.code is ErrorCode.NOT_FOUND


async def test_the_job_is_sized_and_retried_for_renders(world: GenerationWorld) -> None:
    ann = await world.user()
    generation = await world.generations.accept(ann, ask(size="1024x1024", n=4))
    spec = render_job_spec(generation, steps=STEPS)
    small = render_job_spec(msgspec.structs.replace(generation, width=256, height=256, n=1), steps=STEPS)
    assert spec.key == generation.id and spec.kwargs == {"generation_id": generation.id}
    assert spec.attempts == RENDER_ATTEMPTS and spec.retry_backoff and spec.heartbeat_seconds > 0
    assert spec.timeout_seconds > small.timeout_seconds


def test_generations_refuses_zero_steps(world: GenerationWorld) -> None:
    with pytest.raises(ValueError):
        Generations(
            database=world.database,
            catalog=CATALOG,
            quotas=world.quotas,
            jobs=world.jobs,
            policy=world.generations._policy,
            ids=world.ids,
            clock=world.clock,
            steps=0,
        )
