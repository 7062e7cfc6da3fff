"""The job worker: job functions (job ↔ use case), and the worker that runs them.

`pictor worker` runs `run_worker`; `pictor serve` runs the same worker inside the API process in
the embedded and in-memory set-ups (`entrypoints.http.embedded_worker`).
"""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable, Sequence
from typing import Any

import svcs

from adapters.queue.conventions import CronJob
from adapters.queue.factory import JobWorker, job_worker_for
from adapters.rendering.http_renderer import OpenAIImageRenderer
from adapters.rendering.procedural import ProceduralRenderer
from adapters.webhooks_http.transport import HttpWebhookTransport
from core.accounts.registration import SEND_PASSWORD_RESET_EMAIL, SEND_VERIFICATION_EMAIL, EmailJobs
from core.event_handlers import SEND_QUOTA_NOTICE, QuotaNotices
from core.generations.service import RENDER_GENERATION
from core.jobs import MAINTENANCE, QUEUES
from core.ports import (
    Clock,
    Database,
    Ids,
    ImageRenderer,
    JobContext,
    JobHandler,
    JobQueue,
    Mailer,
    Secrets,
    SessionStore,
    WebhookTransport,
)
from core.use_cases.publish_outbox import publish_outbox_backlog
from core.webhooks.delivery import DELIVER_WEBHOOK, DeliveryReport
from entrypoints.business_metrics import CountingMailer
from entrypoints.correlation import correlation_id_var
from entrypoints.error_tracking import ErrorTracking, counting_outcomes, tracking_of
from entrypoints.event_handlers import event_handlers_from
from entrypoints.generation_metrics import observe_render_outcome
from entrypoints.heap import settle_heap
from entrypoints.outbox_relay import OutboxRelay
from entrypoints.settings import Settings
from entrypoints.use_cases import (
    generation_maintenance_from,
    render_job_from,
    subscriptions_from,
    webhook_sender_from,
)
from entrypoints.webhook_metrics import observe_delivery
from entrypoints.wiring import UnusableConfiguration, service_registry
from entrypoints.worker_metrics import worker_metrics

log = logging.getLogger("pictor.worker")

# Periodic maintenance; the cron key makes one run per tick across all workers. The outbox is
# published (and webhooks dispatched) by each maintenance worker's OutboxRelay, every second or so.
MAINTENANCE_JOBS: tuple[CronJob, ...] = (
    CronJob(
        function="delete_expired_webhook_secrets", cron="29 * * * *", queue=MAINTENANCE, timeout_seconds=300
    ),
    CronJob(function="delete_expired_sessions", cron="17 * * * *", queue=MAINTENANCE, timeout_seconds=300),
    CronJob(function="roll_over_subscriptions", cron="* * * * *", queue=MAINTENANCE, timeout_seconds=55),
    CronJob(function="reconcile_generations", cron="* * * * *", queue=MAINTENANCE, timeout_seconds=55),
    CronJob(function="expire_generation_images", cron="41 * * * *", queue=MAINTENANCE, timeout_seconds=900),
)


def job_handlers(registry: svcs.Registry) -> dict[str, JobHandler]:
    """Job functions by name. Each opens a container, fetches its ports and calls a use case."""

    def with_services(run: Callable[..., Any]) -> JobHandler:
        async def handler(ctx: JobContext, **kwargs: Any) -> Any:
            token = correlation_id_var.set(ctx.correlation_id or f"job:{ctx.key}")
            try:
                async with svcs.Container(registry) as container:
                    return await run(container, ctx, **kwargs)
            finally:
                correlation_id_var.reset(token)

        handler.__name__ = run.__name__
        return handler

    async def publish_outbox_job(container: svcs.Container, ctx: JobContext) -> dict[str, int]:
        database, clock, jobs = await container.aget(Database, Clock, JobQueue)
        handlers = await event_handlers_from(container)
        published = await publish_outbox_backlog(
            database, clock, handlers, jobs=jobs, between_batches=ctx.heartbeat
        )
        return {"published": published}

    async def deliver_webhook(
        container: svcs.Container, ctx: JobContext, delivery_id: str, attempt: int, dispatched_until: str
    ) -> DeliveryReport:
        sender = await webhook_sender_from(container)
        report = await sender.deliver(delivery_id, attempt, dispatched_until)
        observe_delivery(report)
        return report

    async def delete_expired_webhook_secrets(container: svcs.Container, ctx: JobContext) -> dict[str, int]:
        database, clock = await container.aget(Database, Clock)
        async with database.unit_of_work() as uow:
            deleted = await uow.webhook_secrets.delete_expired(clock.now())
            await uow.commit()
        return {"deleted": deleted}

    async def send_quota_notice(
        container: svcs.Container,
        ctx: JobContext,
        user_id: str,
        percent: int,
        images_used: int,
        images_limit: int,
        period_end: str,
    ) -> bool:
        database, mailer, settings = await container.aget(Database, Mailer, Settings)
        notices = QuotaNotices(
            database=database, mailer=CountingMailer(mailer), app_url=settings.public_app_url
        )
        return await notices.send(user_id, percent, images_used, images_limit, period_end)

    async def email_jobs(container: svcs.Container) -> EmailJobs:
        database, mailer, ids, clock, settings = await container.aget(Database, Mailer, Ids, Clock, Settings)
        return EmailJobs(
            database=database,
            mailer=CountingMailer(mailer),
            ids=ids,
            clock=clock,
            app_url=settings.public_app_url,
        )

    async def send_verification_email(container: svcs.Container, ctx: JobContext, user_id: str) -> bool:
        return await (await email_jobs(container)).send_verification_email(user_id)

    async def send_password_reset_email(container: svcs.Container, ctx: JobContext, email: str) -> bool:
        return await (await email_jobs(container)).send_password_reset_email(email)

    async def delete_expired_sessions(container: svcs.Container, ctx: JobContext) -> dict[str, int]:
        sessions, clock = await container.aget(SessionStore, Clock)
        return {"deleted": await sessions.delete_expired(clock.now())}

    async def roll_over_subscriptions(container: svcs.Container, ctx: JobContext) -> dict[str, int]:
        subscriptions = await subscriptions_from(container)
        return {"rolled": await subscriptions.roll_over(between_batches=ctx.heartbeat)}

    async def render_generation(container: svcs.Container, ctx: JobContext, generation_id: str) -> Any:
        outcome = await (await render_job_from(container)).run(ctx, generation_id)
        observe_render_outcome(outcome)
        return outcome

    async def reconcile_generations(container: svcs.Container, ctx: JobContext) -> dict[str, int]:
        maintenance = await generation_maintenance_from(container)
        return {"enqueued": await maintenance.reconcile()}

    async def expire_generation_images(container: svcs.Container, ctx: JobContext) -> dict[str, int]:
        maintenance = await generation_maintenance_from(container)
        return {"expired": await maintenance.expire_images(between_batches=ctx.heartbeat)}

    handlers: dict[str, JobHandler] = {
        "publish_outbox": with_services(publish_outbox_job),
        DELIVER_WEBHOOK: with_services(deliver_webhook),
        "delete_expired_webhook_secrets": with_services(delete_expired_webhook_secrets),
        SEND_QUOTA_NOTICE: with_services(send_quota_notice),
        RENDER_GENERATION: with_services(render_generation),
        "reconcile_generations": with_services(reconcile_generations),
        "expire_generation_images": with_services(expire_generation_images),
        "roll_over_subscriptions": with_services(roll_over_subscriptions),
        "delete_expired_sessions": with_services(delete_expired_sessions),
        SEND_VERIFICATION_EMAIL: with_services(send_verification_email),
        SEND_PASSWORD_RESET_EMAIL: with_services(send_password_reset_email),
    }
    return counting_outcomes(handlers, tracking_of(registry))


def served_queues(queues: Sequence[str] | None) -> list[str]:
    served = list(dict.fromkeys(queues or QUEUES))
    unknown = sorted(set(served) - set(QUEUES))
    if unknown:
        raise UnusableConfiguration(f"unknown queue(s): {', '.join(unknown)}; known: {', '.join(QUEUES)}")
    return served


class _WorkerWithResources:
    """A JobWorker with what it started beside it: the outbox relay (stopped first, so no new
    deliveries are dispatched to a stopping worker) and the renderer and webhook transport it
    opened (closed once its jobs have stopped)."""

    def __init__(
        self,
        worker: JobWorker,
        *,
        relay: OutboxRelay | None,
        closables: Sequence[ProceduralRenderer | OpenAIImageRenderer | HttpWebhookTransport],
        tracking: ErrorTracking | None = None,
    ) -> None:
        self._worker = worker
        self._relay = relay
        self._closables = closables
        self._tracking = tracking  # its loop shares the counts of this worker's jobs

    async def start(self) -> None:
        await self._worker.start()
        if self._relay is not None:
            await self._relay.start()
        if self._tracking is not None:
            await self._tracking.start()

    async def stop(self) -> None:
        try:
            if self._relay is not None:
                await self._relay.stop()
            await self._worker.stop()
        finally:
            if self._tracking is not None:
                await self._tracking.stop()
            for resource in self._closables:
                await resource.aclose()


def renderer_for(settings: Settings, secrets: Secrets) -> ProceduralRenderer | OpenAIImageRenderer:
    """The image server at `renderer_url` when one is configured, else the built-in renderer."""
    if settings.renderer_url is None:
        return ProceduralRenderer(workers=settings.render_workers)
    return OpenAIImageRenderer(
        settings.renderer_url,
        model=settings.renderer_model,
        secrets=secrets,
        timeout_seconds=settings.renderer_timeout_seconds,
    )


async def start_worker(registry: svcs.Registry, settings: Settings, queues: Sequence[str]) -> JobWorker:
    """Start serving `queues`. Only workers render and send webhooks: the renderer (built-in
    processes or an image server's connection pool) and the webhook transport start here, unless
    the registry has them already, as tests give them, and stop with the worker. A worker serving
    the maintenance queue also runs the outbox relay."""
    async with svcs.Container(registry) as container:
        job_queue: Any = await container.aget(JobQueue)
        secrets = await container.aget(Secrets)
    closables: list[ProceduralRenderer | OpenAIImageRenderer | HttpWebhookTransport] = []
    if ImageRenderer not in registry:
        renderer = renderer_for(settings, secrets)
        registry.register_value(ImageRenderer, renderer)
        closables.append(renderer)
    if WebhookTransport not in registry:
        transport = HttpWebhookTransport(allow_private=settings.webhooks_allow_private)
        registry.register_value(WebhookTransport, transport)
        closables.append(transport)
    relay = None
    if MAINTENANCE in queues:
        relay = OutboxRelay(registry, interval_seconds=settings.outbox_poll_interval_seconds)
    worker: JobWorker = job_worker_for(
        job_queue,
        queues=queues,
        handlers=job_handlers(registry),
        concurrency=settings.worker_concurrency,
        cron_jobs=[job for job in MAINTENANCE_JOBS if job.queue in queues],
        shutdown_grace_seconds=settings.job_shutdown_grace_seconds,
        sweep_interval_seconds=settings.queue_sweep_interval_seconds,
    )
    worker = _WorkerWithResources(worker, relay=relay, closables=closables, tracking=tracking_of(registry))
    await worker.start()
    log.info("worker started", extra={"queues": list(queues), "concurrency": settings.worker_concurrency})
    return worker


async def run_worker(settings: Settings, *, queues: Sequence[str] | None = None) -> None:
    """`pictor worker`: serve jobs until SIGTERM or SIGINT, then stop gracefully."""
    served = served_queues(queues)
    queue_url = settings.effective_queue_url
    if queue_url is not None and queue_url.startswith("memory:"):
        raise UnusableConfiguration(
            "a memory:// queue lives inside one process: `pictor worker` would never see its jobs "
            "(use `pictor serve`, which runs them, or a shared queue)"
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with service_registry(settings) as registry, worker_metrics(registry, settings):
        worker = await start_worker(registry, settings, served)
        settle_heap()
        try:
            await stop.wait()
            log.info("worker stopping: finishing running jobs")
        finally:
            await worker.stop()
    log.info("worker stopped")
