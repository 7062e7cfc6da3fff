"""The render job: one queued generation becomes stored images, or a failure with its images refunded.

Idempotent, because a job may run again (a retry, a worker that died, the reconciler): a finished
generation is left as it is; renders are deterministic and each image goes to the same key every
time, so a retried render replaces bytes with the same bytes and never stores an image twice; and
every ending (success, failure) changes the generation, ends the quota reservation and writes the
event in one unit of work, under the generation's row lock, after checking it is still running. So
a concurrent cancel and a finishing render never both count: whichever commits first wins, and the
other sees a terminal generation and does nothing.
"""

from __future__ import annotations

import logging
from typing import Any, Final

from core.errors import BlobNotFound
from core.generations.generation import (
    GeneratedImage,
    Generation,
    GenerationStatus,
    fail,
    progress,
    start,
    succeed,
)
from core.generations.service import generation_event
from core.generations.uploads import generation_image_key
from core.ports import BlobStore, Clock, Database, Ids, ImageRenderer, JobContext
from core.rendering import DEFAULT_STEPS, RenderCanceled, RenderedImage, RenderFailed, RenderRequest

log = logging.getLogger("pictor.generations")

PROGRESS_STEP: Final = 0.05  # record progress in the database when it moved this much (or finished)
# Tries over every job of one generation (the reconciler's re-enqueues included) before it fails
# for good, so a render that kills its worker every time cannot loop forever.
STARTS_PER_ATTEMPT: Final = 3
INIT_IMAGE_MISSING: Final = "init_image_missing"
RENDER_ATTEMPTS_EXHAUSTED: Final = "render_attempts_exhausted"
GENERATION_ERROR: Final = "generation_error"


class RenderGeneration:
    """Renders one generation (the `render_generation` job). See the module's docstring."""

    def __init__(
        self,
        *,
        database: Database,
        renderer: ImageRenderer,
        blobs: BlobStore,
        ids: Ids,
        clock: Clock,
        max_attempts: int,
        steps: int = DEFAULT_STEPS,
    ) -> None:
        """`max_attempts` is the job's tries (as enqueued); the last failed try fails the generation."""
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self._database = database
        self._renderer = renderer
        self._blobs = blobs
        self._ids = ids
        self._clock = clock
        self._max_attempts = max_attempts
        self._steps = steps

    async def run(self, ctx: JobContext, generation_id: str) -> dict[str, Any]:
        """Render, store and complete the generation; returns what happened, for logs and metrics:
        `status` (the generation's afterwards, or `missing`), and on success `images`, `bytes`,
        `render_seconds`, and on a first start `queue_wait_seconds`."""
        generation = await self._start(generation_id)
        if generation is None:
            return {"status": "missing"}
        if generation.is_finished:
            return {"status": generation.status.value}
        outcome: dict[str, Any] = {}
        if generation.attempts == 1 and generation.started_at is not None:
            outcome["queue_wait_seconds"] = (generation.started_at - generation.created_at).total_seconds()
        if generation.attempts > self._max_attempts * STARTS_PER_ATTEMPT:
            return outcome | await self._fail(
                generation,
                RENDER_ATTEMPTS_EXHAUSTED,
                f"the render was started {generation.attempts} times",
                ctx.correlation_id,
            )
        began = self._clock.monotonic()
        try:
            images = await self._render(ctx, generation)
            if images is None:
                return outcome | {"status": GenerationStatus.CANCELED.value}
            stored = [await self._store(generation, image) for image in images]
        except RenderFailed as error:
            if error.retryable and ctx.attempt < self._max_attempts:
                raise  # the queue tries again after its back-off
            return outcome | await self._fail(generation, error.code, error.message, ctx.correlation_id)
        except Exception as error:
            if ctx.attempt < self._max_attempts:
                raise
            log.exception("render job failed on its last try", extra={"generation_id": generation.id})
            return outcome | await self._fail(
                generation, GENERATION_ERROR, f"{type(error).__name__}", ctx.correlation_id
            )
        status = await self._succeed(generation, stored, ctx.correlation_id)
        if status is not GenerationStatus.SUCCEEDED:
            await self._delete(stored)  # canceled while storing: keep nothing
            return outcome | {"status": status.value}
        return outcome | {
            "status": status.value,
            "images": len(stored),
            "bytes": sum(image.bytes for image in stored),
            "render_seconds": self._clock.monotonic() - began,
        }

    async def _start(self, generation_id: str) -> Generation | None:
        async with self._database.unit_of_work() as uow:
            generation = await uow.generations.get_for_update(generation_id)
            if generation is None:
                log.warning("render job for an unknown generation", extra={"generation_id": generation_id})
                return None
            if generation.is_finished:
                return generation
            running = start(generation, self._clock.now())
            await uow.generations.update(running)
            await uow.commit()
        return running

    async def _render(self, ctx: JobContext, generation: Generation) -> list[RenderedImage] | None:
        """The images, or None when the generation was canceled during the render."""
        init_image = await self._init_image(generation)
        request = RenderRequest(
            prompt=generation.prompt,
            negative_prompt=generation.negative_prompt,
            width=generation.width,
            height=generation.height,
            seed=generation.seed,
            style=generation.style,
            steps=self._steps,
            init_image=init_image,
        )
        stop = False
        recorded = generation.progress

        async def on_progress(fraction: float) -> None:
            nonlocal stop, recorded
            await ctx.progress(fraction)  # a heartbeat too
            # The status is re-read after every step: a cancel stops the render at the next one.
            async with self._database.unit_of_work() as uow:
                current = await uow.generations.get_for_update(generation.id)
                if current is None or current.status is not GenerationStatus.RUNNING:
                    stop = True
                    return
                if fraction >= recorded + PROGRESS_STEP or (fraction == 1.0 and recorded < 1.0):
                    await uow.generations.update(progress(current, fraction, self._clock.now()))
                    await uow.commit()
                    recorded = fraction

        try:
            return await self._renderer.render(
                request, n=generation.n, on_progress=on_progress, should_stop=lambda: stop
            )
        except RenderCanceled:
            log.info("render stopped: the generation was canceled", extra={"generation_id": generation.id})
            return None

    async def _init_image(self, generation: Generation) -> bytes | None:
        if generation.init_image_id is None:
            return None
        async with self._database.unit_of_work() as uow:
            upload = await uow.uploads.get_for_user(generation.user_id, generation.init_image_id)
        if upload is None:
            raise RenderFailed(INIT_IMAGE_MISSING, "the init image was deleted", retryable=False)
        try:
            return (await self._blobs.get(upload.blob_key)).data
        except BlobNotFound:
            raise RenderFailed(
                INIT_IMAGE_MISSING, "the init image's bytes are gone", retryable=False
            ) from None

    async def _store(self, generation: Generation, image: RenderedImage) -> GeneratedImage:
        key = generation_image_key(generation.user_id, generation.id, image.index)
        await self._blobs.put(key, image.data, content_type=image.content_type)
        return GeneratedImage(
            index=image.index,
            blob_key=key,
            content_type=image.content_type,
            width=image.width,
            height=image.height,
            bytes=len(image.data),
            sha256=image.sha256,
        )

    async def _succeed(
        self, generation: Generation, images: list[GeneratedImage], correlation_id: str | None
    ) -> GenerationStatus:
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            current = await uow.generations.get_for_update(generation.id)
            if current is None or current.status is not GenerationStatus.RUNNING:
                return GenerationStatus.CANCELED if current is None else current.status
            done = succeed(current, images, now)
            await uow.generations.update(done)
            await uow.usage.release(done.id, refund=False, at=now)
            await uow.outbox.add(
                generation_event(done, event_id=self._ids.new_id(), now=now, correlation_id=correlation_id)
            )
            await uow.commit()
        return done.status

    async def _fail(
        self, generation: Generation, code: str, message: str, correlation_id: str | None
    ) -> dict[str, Any]:
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            current = await uow.generations.get_for_update(generation.id)
            if current is None or current.is_finished:
                return {"status": "missing" if current is None else current.status.value}
            failed = fail(current, code, message, now)
            await uow.generations.update(failed)
            await uow.usage.release(failed.id, refund=True, at=now)
            await uow.outbox.add(
                generation_event(failed, event_id=self._ids.new_id(), now=now, correlation_id=correlation_id)
            )
            await uow.commit()
        log.warning("generation failed", extra={"generation_id": generation.id, "error_code": code})
        return {"status": failed.status.value, "error_code": code}

    async def _delete(self, images: list[GeneratedImage]) -> None:
        for image in images:
            await self._blobs.delete(image.blob_key)
