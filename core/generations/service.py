"""The generation use cases a client drives: accept, read, list, cancel, and wait or watch until done.

The database is the source of truth for a generation; the queue only carries the render job. So
accepting stores the queued generation before enqueueing its job, and a job that could not be
enqueued is not an error for the client: the reconciler (`core.generations.maintenance`) finds the
generation still queued and enqueues it again.

Quota: the generation's id is also its reservation's id. Accepting reserves first (a refused
reservation creates nothing); a failed store refunds at once; cancel refunds in the same unit of
work that cancels, so a generation is never canceled with its images still spent.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Final

from core.accounts.api_keys import Scope
from core.accounts.principal import Principal
from core.billing.plans import PlanCatalog
from core.billing.quotas import Quotas
from core.errors import DomainError, ErrorCode, FieldError
from core.events import (
    EventError,
    GenerationCanceled,
    GenerationData,
    GenerationEvent,
    GenerationFailed,
    GenerationSucceeded,
    to_outbox,
)
from core.flags.service import FeatureFlags, context_of
from core.generations.generation import Generation, GenerationStatus, cancel
from core.generations.prompt_policy import PromptPolicy
from core.generations.requests import (
    BETA_STYLES,
    GenerationRequest,
    new_generation,
    requested_style,
    seed_from,
    validate_request,
)
from core.identifiers import is_id
from core.jobs import GENERATION, GENERATION_PRIORITY, JobSpec
from core.outbox import OutboxMessage
from core.pagination import clamp_limit, decode_cursor
from core.ports import Clock, Database, Ids, JobQueue
from core.webhooks.endpoints import checked_target

log = logging.getLogger("pictor.generations")

RENDER_GENERATION: Final = "render_generation"

RENDER_ATTEMPTS: Final = 4  # tries of a render job, the first included
RENDER_RETRY_DELAY_SECONDS: Final = 2.0  # doubled each retry, with jitter (core.jobs.retry_delay)
RENDER_HEARTBEAT_SECONDS: Final = 60.0  # the job beats after every step; silent this long → presumed dead
# A try's time limit: a floor for small renders, plus time for every step of every megapixel.
_TIMEOUT_FLOOR_SECONDS: Final = 120.0
_TIMEOUT_PER_MEGAPIXEL_STEP_SECONDS: Final = 2.0

# Waiting polls the database: quickly at first (most small renders end within a second), then
# less often, so a long wait costs a few queries a second at most.
FIRST_POLL_SECONDS: Final = 0.05
MAX_POLL_SECONDS: Final = 0.5

Sleep = Callable[[float], Awaitable[None]]


def render_queue(generation: Generation) -> str:
    """The queue of a generation's render job: its plan's, as fixed when it was accepted."""
    return GENERATION_PRIORITY if generation.priority else GENERATION


def render_job_spec(
    generation: Generation, *, steps: int, heartbeat_seconds: float = RENDER_HEARTBEAT_SECONDS
) -> JobSpec:
    """The render job of a generation, keyed by its id (enqueueing it twice queues it once)."""
    megapixel_steps = generation.width * generation.height * generation.n * steps / 1_000_000
    return JobSpec(
        queue=render_queue(generation),
        function=RENDER_GENERATION,
        kwargs={"generation_id": generation.id},
        key=generation.id,
        timeout_seconds=_TIMEOUT_FLOOR_SECONDS + megapixel_steps * _TIMEOUT_PER_MEGAPIXEL_STEP_SECONDS,
        attempts=RENDER_ATTEMPTS,
        retry_delay_seconds=RENDER_RETRY_DELAY_SECONDS,
        retry_backoff=True,
        heartbeat_seconds=heartbeat_seconds,
    )


def generation_event(
    generation: Generation, *, event_id: str, now: datetime, correlation_id: str | None = None
) -> OutboxMessage:
    """The outbox row of the `generation.*` event of a finished generation (succeeded, failed or
    canceled), written with the transition that caused it."""
    event_class = _GENERATION_EVENTS[generation.status]
    error = None
    if generation.error_code is not None:
        error = EventError(code=generation.error_code, message=generation.error_message or "")
    data = GenerationData(
        generation_id=generation.id,
        status=generation.status.value,
        n=generation.n,
        images=len(generation.images),
        error=error,
        webhook_url=generation.webhook_url,
    )
    return to_outbox(
        event_class(
            id=event_id, occurred_at=now, user_id=generation.user_id, correlation_id=correlation_id, data=data
        )
    )


_GENERATION_EVENTS: dict[GenerationStatus, type[GenerationEvent]] = {
    GenerationStatus.SUCCEEDED: GenerationSucceeded,
    GenerationStatus.FAILED: GenerationFailed,
    GenerationStatus.CANCELED: GenerationCanceled,
}


def next_poll_interval(interval: float) -> float:
    """The pause after `interval`: growing by half each time, up to MAX_POLL_SECONDS."""
    return min(MAX_POLL_SECONDS, interval * 1.5)


class Generations:
    """What a client does with its generations (API.md "Generations")."""

    def __init__(
        self,
        *,
        database: Database,
        catalog: PlanCatalog,
        quotas: Quotas,
        jobs: JobQueue,
        policy: PromptPolicy,
        ids: Ids,
        clock: Clock,
        steps: int,
        sleep: Sleep | None = None,
        heartbeat_seconds: float = RENDER_HEARTBEAT_SECONDS,
        webhooks_allow_private: bool = False,
        flags: FeatureFlags | None = None,
    ) -> None:
        """`steps` is the renderer's steps per image (it sizes the job's time limit); `sleep`
        (e.g. `asyncio.sleep`, which the core may not import) paces `wait` and `watch`;
        `webhooks_allow_private` lets a `webhook_url` use plain http and private addresses;
        `flags` opens beta styles to the users their flags are on for (without, none are open)."""
        if steps < 1:
            raise ValueError("steps must be at least 1")
        self._heartbeat_seconds = heartbeat_seconds
        self._database = database
        self._catalog = catalog
        self._quotas = quotas
        self._jobs = jobs
        self._policy = policy
        self._ids = ids
        self._clock = clock
        self._steps = steps
        self._sleep = sleep
        self._webhooks_allow_private = webhooks_allow_private
        self._flags = flags

    async def accept(self, principal: Principal, request: GenerationRequest) -> Generation:
        """Validate, reserve the images, store the queued generation and enqueue its render.

        `validation_failed` / `prompt_rejected` / `unsafe_url` (422) for bad input, `quota_exceeded`
        (402) or `concurrency_limit` (429) from the quota; nothing is stored then."""
        principal.require_scope(Scope.GENERATIONS_WRITE)
        plan = self._catalog.effective(principal.plan)
        valid = validate_request(request, plan, beta_styles=await self._beta_styles(principal, request))
        self._policy.check(valid.prompt)
        if valid.webhook_url is not None:  # resolved addresses are checked again at each delivery
            checked_target(valid.webhook_url, allow_private=self._webhooks_allow_private)
        if valid.init_image_id is not None:
            await self._require_upload(principal.user_id, valid.init_image_id)
        seed = valid.seed if valid.seed is not None else seed_from(self._ids.random_bytes(4))
        generation = new_generation(
            valid,
            generation_id=self._ids.new_id(),
            user_id=principal.user_id,
            plan=plan,
            seed=seed,
            now=self._clock.now(),
        )
        await self._quotas.reserve(principal.user_id, principal.plan, generation.id, generation.n)
        try:
            async with self._database.unit_of_work() as uow:
                await uow.generations.add(generation)
                await uow.commit()
        except BaseException:
            await self._quotas.refund(generation.id)
            raise
        await self._enqueue(generation)
        return generation

    async def get(self, principal: Principal, generation_id: str) -> Generation:
        """The caller's generation; `not_found` for anyone else's, and for ids that are none."""
        principal.require_scope(Scope.GENERATIONS_READ)
        return await self._load(principal.user_id, generation_id)

    async def list(
        self,
        principal: Principal,
        *,
        status: GenerationStatus | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> tuple[builtins.list[Generation], str | None]:
        """A page of the caller's generations, newest first, and the id after which the next page
        starts (None on the last page); the route encodes it as an opaque cursor."""
        principal.require_scope(Scope.GENERATIONS_READ)
        size = clamp_limit(limit)
        async with self._database.unit_of_work() as uow:
            generations = await uow.generations.list_for_user(
                principal.user_id, status=status, after=decode_cursor(cursor), limit=size + 1
            )
        return generations[:size], generations[size - 1].id if len(generations) > size else None

    async def cancel(self, principal: Principal, generation_id: str) -> Generation:
        """Cancel a queued or running generation: its images come back to the quota at once and
        its job is aborted (a running render stops at its next step). `invalid_state` (409) once
        it has finished."""
        principal.require_scope(Scope.GENERATIONS_WRITE)
        if not is_id(generation_id):
            raise _not_found()
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            current = await uow.generations.get_for_update(generation_id.lower())
            if current is None or current.user_id != principal.user_id:
                raise _not_found()
            canceled = cancel(current, now)  # invalid_state when terminal
            await uow.generations.update(canceled)
            await uow.usage.release(canceled.id, refund=True, at=now)
            await uow.outbox.add(generation_event(canceled, event_id=self._ids.new_id(), now=now))
            await uow.commit()
        try:
            await self._jobs.abort(render_queue(canceled), canceled.id)
        except Exception:
            # The job re-reads the status before every step and stops by itself.
            log.warning("could not abort the render job", extra={"generation_id": canceled.id}, exc_info=True)
        return canceled

    async def wait(self, principal: Principal, generation_id: str, *, timeout_seconds: float) -> Generation:
        """The generation as soon as it is finished, or as it is when `timeout_seconds` pass."""
        principal.require_scope(Scope.GENERATIONS_READ)
        sleep = self._require_sleep()
        generation = await self._load(principal.user_id, generation_id)
        started = self._clock.monotonic()
        slept = 0.0
        interval = FIRST_POLL_SECONDS
        while not generation.is_finished:
            # Both measures bound the wait: slept time alone with a clock that stands still in
            # tests, elapsed time when queries are slow.
            remaining = timeout_seconds - max(slept, self._clock.monotonic() - started)
            if remaining <= 0:
                break
            pause = min(interval, remaining)
            await sleep(pause)
            slept += pause
            interval = next_poll_interval(interval)
            generation = await self._load(principal.user_id, generation.id)
        return generation

    async def watch(self, principal: Principal, generation_id: str) -> AsyncIterator[Generation]:
        """The generation now, then each time its status or progress changes, ending after it
        reaches a terminal state (Server-Sent Events). `not_found` is raised before the first item."""
        principal.require_scope(Scope.GENERATIONS_READ)
        sleep = self._require_sleep()
        generation = await self._load(principal.user_id, generation_id)
        return self._changes(principal.user_id, generation, sleep)

    async def _changes(self, user_id: str, generation: Generation, sleep: Sleep) -> AsyncIterator[Generation]:
        yield generation
        interval = FIRST_POLL_SECONDS
        while not generation.is_finished:
            await sleep(interval)
            latest = await self._load(user_id, generation.id)
            if (latest.status, latest.progress) != (generation.status, generation.progress):
                yield latest
                interval = FIRST_POLL_SECONDS  # things are moving: look again soon
            else:
                interval = next_poll_interval(interval)
            generation = latest

    async def _load(self, user_id: str, generation_id: str) -> Generation:
        if not is_id(generation_id):
            raise _not_found()
        async with self._database.unit_of_work() as uow:
            generation = await uow.generations.get_for_user(user_id, generation_id.lower())
        if generation is None:
            raise _not_found()
        return generation

    async def _beta_styles(self, principal: Principal, request: GenerationRequest) -> frozenset[str]:
        """The requested style when it is a beta style whose flag is on for the caller; flags are
        read only for requests that name a beta style."""
        style = requested_style(request)
        if self._flags is None or style not in BETA_STYLES:
            return frozenset()
        open_ = await self._flags.is_enabled(BETA_STYLES[style], context_of(principal))
        return frozenset({style}) if open_ else frozenset()

    async def _require_upload(self, user_id: str, upload_id: str) -> None:
        async with self._database.unit_of_work() as uow:
            upload = await uow.uploads.get_for_user(user_id, upload_id)
        if upload is None:
            raise DomainError(
                ErrorCode.VALIDATION_FAILED,
                "The request is invalid; see errors",
                errors=[FieldError("init_image", "No upload of yours has this id", "not_found")],
            )

    async def _enqueue(self, generation: Generation) -> None:
        try:
            await self._jobs.enqueue(
                render_job_spec(generation, steps=self._steps, heartbeat_seconds=self._heartbeat_seconds)
            )
        except Exception:
            # Accepted all the same: the reconciler enqueues generations left queued without a job.
            log.warning(
                "could not enqueue the render job; the reconciler will",
                extra={"generation_id": generation.id},
                exc_info=True,
            )

    def _require_sleep(self) -> Sleep:
        if self._sleep is None:
            raise RuntimeError("Generations was built without `sleep`: it cannot wait or watch")
        return self._sleep


def _not_found() -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, "No such generation")
