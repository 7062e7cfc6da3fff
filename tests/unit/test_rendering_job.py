"""The render job and the generation maintenance on the memory fakes (renderer, blobs, queue, database)."""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path

import msgspec
import pytest
import svcs
from prometheus_client import REGISTRY

from adapters.memory.blob_store import MemoryBlobStore
from adapters.memory.renderer import MemoryImageRenderer, flat_png
from adapters.memory.secrets import MemorySecrets
from adapters.rendering.procedural import ProceduralRenderer
from adapters.storage.link_signer import LinkSigner
from core.accounts.principal import SESSION_SCOPES, CredentialKind, Principal
from core.accounts.users import Role, User, UserStatus
from core.billing.usage import ReservationStatus
from core.errors import BlobNotFound
from core.events import GENERATION_FAILED, GENERATION_SUCCEEDED
from core.generations import generation as lifecycle
from core.generations.generation import Generation, GenerationStatus
from core.generations.maintenance import STUCK_AFTER, GenerationMaintenance
from core.generations.rendering_job import (
    INIT_IMAGE_MISSING,
    RENDER_ATTEMPTS_EXHAUSTED,
    STARTS_PER_ATTEMPT,
    RenderGeneration,
)
from core.generations.requests import GenerationRequest
from core.generations.service import RENDER_GENERATION
from core.generations.uploads import generation_image_key
from core.jobs import GENERATION, JobState
from core.ports import BlobStore, Clock, Database, Ids, ImageRenderer
from core.rendering import RenderFailed
from core.secrets import URL_SIGNING_KEY
from entrypoints.generation_metrics import observe_render_outcome
from entrypoints.settings import settings_from_mapping
from entrypoints.use_cases import generations_from
from entrypoints.wiring import service_registry
from entrypoints.worker import MAINTENANCE_JOBS, job_handlers, served_queues, start_worker
from tests.support.generation_world import STEPS, GenerationWorld

MAX_ATTEMPTS = 3


class HandJobContext:
    """A JobContext whose progress reports are recorded, with a hook to act on them."""

    def __init__(self, key: str, attempt: int = 1) -> None:
        self.queue = "generation"
        self.key = key
        self.attempt = attempt
        self.correlation_id: str | None = None
        self.reports: list[float] = []
        self.heartbeats = 0
        self.on_report: Callable[[float], Awaitable[None]] | None = None

    async def heartbeat(self) -> None:
        self.heartbeats += 1

    async def progress(self, fraction: float) -> None:
        self.reports.append(fraction)
        if self.on_report is not None:
            await self.on_report(fraction)


class JobWorld(GenerationWorld):
    def __init__(self) -> None:
        super().__init__()
        self.renderer = MemoryImageRenderer()
        signer = LinkSigner(MemorySecrets({URL_SIGNING_KEY: ["k"]}), self.clock, "http://pictor.test")
        self.blobs = MemoryBlobStore(clock=self.clock, link_signer=signer)
        self.job = RenderGeneration(
            database=self.database,
            renderer=self.renderer,
            blobs=self.blobs,
            ids=self.ids,
            clock=self.clock,
            max_attempts=MAX_ATTEMPTS,
            steps=STEPS,
        )
        self.maintenance = GenerationMaintenance(
            database=self.database, jobs=self.jobs, blobs=self.blobs, clock=self.clock, steps=STEPS
        )

    async def accepted(self, n: int = 2, **fields: object) -> Generation:
        ann = await self.user(f"user-{self.ids.new_id()}@example.com")  # a user per generation
        request = GenerationRequest(prompt="a quiet harbour", size="256x256", n=n, **fields)  # type: ignore[arg-type]
        return await self.generations.accept(ann, request)

    async def stored_keys(self) -> list[str]:
        return [info.key for info in await self.blobs.list("generations/")]


@pytest.fixture
def world() -> JobWorld:
    return JobWorld()


async def test_a_render_stores_each_image_and_settles_the_quota_once(world: JobWorld) -> None:
    generation = await world.accepted(n=3)
    world.clock.advance(2)
    ctx = HandJobContext(generation.id)

    outcome = await world.job.run(ctx, generation.id)

    done = await world.stored(generation.id)
    assert done.status is GenerationStatus.SUCCEEDED and done.progress == 1.0 and done.attempts == 1
    assert outcome["status"] == "succeeded" and outcome["images"] == 3
    assert outcome["queue_wait_seconds"] == 2.0
    assert [image.index for image in done.images] == [0, 1, 2]
    for image in done.images:
        assert image.blob_key == generation_image_key(generation.user_id, generation.id, image.index)
        blob = await world.blobs.get(image.blob_key)
        assert blob.info.content_type == image.content_type == "image/png"
        assert hashlib.sha256(blob.data).hexdigest() == image.sha256
        assert (image.bytes, image.width, image.height) == (len(blob.data), 256, 256)
    assert outcome["bytes"] == sum(image.bytes for image in done.images)
    assert done.images_expire_at == done.finished_at + timedelta(days=7)  # type: ignore[operator]
    assert world.reservation(generation.id).status is ReservationStatus.SETTLED
    assert world.images_used(generation.user_id) == 3
    assert [e["generation_id"] for e in world.events(GENERATION_SUCCEEDED)] == [generation.id]
    assert ctx.reports == [0.25, 0.5, 0.75, 1.0]


async def test_running_a_finished_job_again_changes_nothing(world: JobWorld) -> None:
    generation = await world.accepted()
    await world.job.run(HandJobContext(generation.id), generation.id)
    before = await world.stored(generation.id)
    renders = len(world.renderer.requests)

    again = await world.job.run(HandJobContext(generation.id, attempt=2), generation.id)

    assert again == {"status": "succeeded"}
    assert await world.stored(generation.id) == before
    assert len(world.renderer.requests) == renders
    assert len(world.events(GENERATION_SUCCEEDED)) == 1
    assert len(await world.stored_keys()) == 2


async def test_a_retryable_failure_raises_for_the_queue_then_the_retry_succeeds(world: JobWorld) -> None:
    generation = await world.accepted()
    world.renderer.fail_next(1)

    with pytest.raises(RenderFailed):
        await world.job.run(HandJobContext(generation.id, attempt=1), generation.id)
    between = await world.stored(generation.id)
    assert between.status is GenerationStatus.RUNNING
    assert world.reservation(generation.id).status is ReservationStatus.RESERVED

    await world.job.run(HandJobContext(generation.id, attempt=2), generation.id)
    done = await world.stored(generation.id)
    assert done.status is GenerationStatus.SUCCEEDED and done.attempts == 2
    assert world.reservation(generation.id).status is ReservationStatus.SETTLED


async def test_the_last_failed_try_fails_the_generation_and_refunds_once(world: JobWorld) -> None:
    generation = await world.accepted(n=2)
    world.renderer.fail_next(MAX_ATTEMPTS, code="renderer_unavailable")
    for attempt in range(1, MAX_ATTEMPTS):
        with pytest.raises(RenderFailed):
            await world.job.run(HandJobContext(generation.id, attempt=attempt), generation.id)

    outcome = await world.job.run(HandJobContext(generation.id, attempt=MAX_ATTEMPTS), generation.id)

    failed = await world.stored(generation.id)
    assert outcome == {"status": "failed", "error_code": "renderer_unavailable"}
    assert (failed.status, failed.error_code) == (GenerationStatus.FAILED, "renderer_unavailable")
    assert world.reservation(generation.id).status is ReservationStatus.REFUNDED
    assert world.images_used(generation.user_id) == 0
    await world.job.run(HandJobContext(generation.id, attempt=MAX_ATTEMPTS + 1), generation.id)
    assert world.images_used(generation.user_id) == 0
    assert [e["error"]["code"] for e in world.events(GENERATION_FAILED)] == ["renderer_unavailable"]
    assert await world.stored_keys() == []


async def test_a_permanent_failure_fails_on_the_first_try(world: JobWorld) -> None:
    generation = await world.accepted()
    world.renderer.fail_next(1, code="content_refused", retryable=False)
    outcome = await world.job.run(HandJobContext(generation.id, attempt=1), generation.id)
    assert outcome["status"] == "failed"
    assert (await world.stored(generation.id)).error_code == "content_refused"
    assert world.reservation(generation.id).status is ReservationStatus.REFUNDED


async def test_cancel_in_the_middle_stops_the_render_at_the_next_step(world: JobWorld) -> None:
    generation = await world.accepted(n=2)
    owner = await world.principal_of(generation)
    ctx = HandJobContext(generation.id)

    async def cancel_at_half(fraction: float) -> None:
        if fraction == 0.5:
            await world.generations.cancel(owner, generation.id)

    ctx.on_report = cancel_at_half
    outcome = await world.job.run(ctx, generation.id)

    assert outcome["status"] == "canceled"
    assert ctx.reports == [0.25, 0.5]  # no step after the cancel
    assert (await world.stored(generation.id)).status is GenerationStatus.CANCELED
    assert world.reservation(generation.id).status is ReservationStatus.REFUNDED
    assert world.images_used(generation.user_id) == 0
    assert await world.stored_keys() == []
    assert world.events(GENERATION_SUCCEEDED) == []


async def test_a_cancel_after_the_last_step_keeps_no_images(world: JobWorld) -> None:
    generation = await world.accepted(n=2)
    owner = await world.principal_of(generation)
    ctx = HandJobContext(generation.id)

    async def cancel_at_the_end(fraction: float) -> None:
        if fraction == 1.0:
            await world.generations.cancel(owner, generation.id)

    ctx.on_report = cancel_at_the_end
    outcome = await world.job.run(ctx, generation.id)

    assert outcome["status"] == "canceled"
    assert (await world.stored(generation.id)).images == ()
    assert await world.stored_keys() == []
    assert world.reservation(generation.id).status is ReservationStatus.REFUNDED


async def test_the_init_image_is_read_from_its_upload(world: JobWorld) -> None:
    ann = await world.user("ivy@example.com")
    upload = await world.upload(ann)
    png = flat_png(64, 64, (1, 2, 3))
    await world.blobs.put(upload.blob_key, png, content_type="image/png")
    generation = await world.generations.accept(
        ann, GenerationRequest(prompt="from my sketch", size="256x256", init_image=upload.id)
    )
    await world.job.run(HandJobContext(generation.id), generation.id)
    [(request, _)] = world.renderer.requests
    assert request.init_image == png and request.seed == generation.seed and request.steps == STEPS
    assert (await world.stored(generation.id)).status is GenerationStatus.SUCCEEDED


async def test_a_vanished_init_image_fails_without_retrying(world: JobWorld) -> None:
    ann = await world.user("ivy@example.com")
    upload = await world.upload(ann)  # its bytes were never stored
    generation = await world.generations.accept(
        ann, GenerationRequest(prompt="from my sketch", size="256x256", init_image=upload.id)
    )
    outcome = await world.job.run(HandJobContext(generation.id, attempt=1), generation.id)
    assert outcome["error_code"] == INIT_IMAGE_MISSING
    assert world.reservation(generation.id).status is ReservationStatus.REFUNDED


async def test_a_generation_started_too_often_fails_for_good(world: JobWorld) -> None:
    generation = await world.accepted()
    worn = msgspec.structs.replace(generation, attempts=MAX_ATTEMPTS * STARTS_PER_ATTEMPT)
    await world.replace(worn)
    outcome = await world.job.run(HandJobContext(generation.id), generation.id)
    assert outcome["error_code"] == RENDER_ATTEMPTS_EXHAUSTED
    assert world.renderer.requests == []
    assert world.reservation(generation.id).status is ReservationStatus.REFUNDED


async def test_an_unknown_generation_is_a_no_op(world: JobWorld) -> None:
    assert await world.job.run(HandJobContext("x"), world.ids.new_id()) == {"status": "missing"}


async def test_the_reconciler_enqueues_only_stuck_generations_without_a_live_job(world: JobWorld) -> None:
    waiting = await world.accepted()  # its job is queued: not lost
    lost = await world.accepted()
    await world.jobs.abort(GENERATION, lost.id)  # the job vanished
    running = await world.accepted()
    await world.replace(lifecycle.start(await world.stored(running.id), world.clock.now()))
    await world.jobs.abort(GENERATION, running.id)  # its worker died and the job is gone

    assert await world.maintenance.reconcile() == 0  # nothing has been still for long yet
    world.clock.advance(STUCK_AFTER.total_seconds() + 1)
    assert await world.maintenance.reconcile() == 2

    for generation in (lost, running):
        job = await world.jobs.status(GENERATION, generation.id)
        assert job is not None and job.state is JobState.QUEUED
    job = await world.jobs.status(GENERATION, waiting.id)
    assert job is not None and job.attempts == 0
    assert await world.maintenance.reconcile() == 0  # their jobs are live now


async def test_retention_deletes_the_images_and_marks_the_generation(world: JobWorld) -> None:
    generation = await world.accepted(n=2)
    await world.job.run(HandJobContext(generation.id), generation.id)
    done = await world.stored(generation.id)

    world.clock.advance(6 * 86_400)
    assert await world.maintenance.expire_images() == 0
    world.clock.advance(86_400)
    assert await world.maintenance.expire_images() == 1

    expired = await world.stored(generation.id)
    assert expired.images_expired_at == world.clock.now() and expired.images == done.images
    for image in done.images:
        with pytest.raises(BlobNotFound):
            await world.blobs.get(image.blob_key)
    assert await world.maintenance.expire_images() == 0


# --- the worker: job functions and renderer lifecycle, on the in-memory wiring ----------------

ENVIRON = {
    "PICTOR_DATABASE_URL": "memory://",
    "PICTOR_VALKEY_URL": "memory://",
    "PICTOR_STORAGE_URL": "memory://",
    "PICTOR_QUEUE_URL": "memory://",
    "PICTOR_SMTP_URL": "memory://",
    "PICTOR_SECRET_URL_SIGNING_KEY": "k",
    "PICTOR_RENDER_STEPS": "3",
}


async def _principal_in(container: svcs.Container) -> Principal:
    database, ids, clock = await container.aget(Database, Ids, Clock)
    now = clock.now()
    user = User(
        id=ids.new_id(),
        email="wes@example.com",
        email_normalized="wes@example.com",
        display_name=None,
        role=Role.USER,
        status=UserStatus.ACTIVE,
        email_verified=True,
        password_hash="x",
        plan="free",
        created_at=now,
        updated_at=now,
    )
    async with database.unit_of_work() as uow:
        await uow.users.add(user)
        await uow.commit()
    return Principal(user=user, scopes=SESSION_SCOPES, credential=CredentialKind.SESSION, credential_id="s")


async def test_the_worker_renders_an_accepted_generation_with_the_built_in_renderer(tmp_path: Path) -> None:
    settings = settings_from_mapping({**ENVIRON, "PICTOR_DATA_DIR": str(tmp_path)})
    async with service_registry(settings, environ=ENVIRON) as registry:
        assert ImageRenderer not in registry  # the API's registry renders nothing
        async with svcs.Container(registry) as container:
            owner = await _principal_in(container)
            generations = await generations_from(container)
            blobs = await container.aget(BlobStore)
            accepted = await generations.accept(owner, GenerationRequest(prompt="tide pools", size="256x256"))
        worker = await start_worker(registry, settings, served_queues(None))
        try:
            async with svcs.Container(registry) as container:
                renderer = await container.aget(ImageRenderer)
            assert isinstance(renderer, ProceduralRenderer)
            done = await generations.wait(owner, accepted.id, timeout_seconds=60)
        finally:
            await worker.stop()
        assert done.status is GenerationStatus.SUCCEEDED, done.error_message
        [image] = done.images
        blob = await blobs.get(image.blob_key)
        assert hashlib.sha256(blob.data).hexdigest() == image.sha256 and blob.data[:4] == b"\x89PNG"
        with pytest.raises(RenderFailed):  # stopped with the worker
            await renderer.ping()


async def test_every_generation_job_has_a_handler(tmp_path: Path) -> None:
    settings = settings_from_mapping({**ENVIRON, "PICTOR_DATA_DIR": str(tmp_path)})
    async with service_registry(settings, environ=ENVIRON) as registry:
        handlers = job_handlers(registry)
    crons = {job.function for job in MAINTENANCE_JOBS}
    assert {"reconcile_generations", "expire_generation_images"} <= crons <= set(handlers)
    assert RENDER_GENERATION in handlers


def test_render_outcomes_become_metrics_once_per_ending() -> None:
    def sample(name: str, labels: dict[str, str] | None = None) -> float:
        return REGISTRY.get_sample_value(name, labels or {}) or 0.0

    before = (
        sample("pictor_generations_total", {"status": "succeeded"}),
        sample("pictor_generations_total", {"status": "failed"}),
        sample("pictor_images_stored_total"),
        sample("pictor_images_stored_bytes_total"),
        sample("pictor_generation_queue_wait_seconds_count"),
    )
    observe_render_outcome(
        {"status": "succeeded", "images": 2, "bytes": 300, "render_seconds": 0.2, "queue_wait_seconds": 1.5}
    )
    observe_render_outcome({"status": "failed", "error_code": "renderer_unavailable"})
    observe_render_outcome({"status": "succeeded"})  # a re-run of a finished job: counts nothing
    after = (
        sample("pictor_generations_total", {"status": "succeeded"}),
        sample("pictor_generations_total", {"status": "failed"}),
        sample("pictor_images_stored_total"),
        sample("pictor_images_stored_bytes_total"),
        sample("pictor_generation_queue_wait_seconds_count"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [1, 1, 2, 300, 1]
