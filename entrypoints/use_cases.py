"""Use cases built from a request's or a job's svcs container: the one place that knows which
ports each needs, shared by the HTTP routes, the CLI and the tests."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import svcs

from core.accounts.context import AccountPolicy
from core.accounts.registration import Registration
from core.billing.plans import PlanCatalog
from core.billing.quotas import Quotas
from core.billing.subscription_management import Subscriptions
from core.generations.maintenance import GenerationMaintenance
from core.generations.prompt_policy import PromptPolicy
from core.generations.rendering_job import RenderGeneration
from core.generations.service import RENDER_ATTEMPTS, Generations
from core.ports import (
    BlobStore,
    Clock,
    Database,
    Ids,
    ImageRenderer,
    JobQueue,
    PasswordBlocklist,
    PasswordHasher,
    PrincipalCache,
    Secrets,
    SessionStore,
    WebhookTransport,
)
from core.webhooks.delivery import WebhookSender
from core.webhooks.fan_out import WebhookFanOut
from core.webhooks.management import AccountWebhookSecret, WebhookEndpoints
from core.webhooks.secret_keeper import WebhookSecretKeeper
from entrypoints.feature_flags import feature_flags_from
from entrypoints.settings import Settings


async def registration_from(container: svcs.Container) -> Registration:
    database, sessions, hasher, blocklist, jobs, ids, clock, policy = await container.aget(
        Database, SessionStore, PasswordHasher, PasswordBlocklist, JobQueue, Ids, Clock, AccountPolicy
    )
    catalog = await container.aget(PlanCatalog)
    return Registration(
        default_plan=catalog.default.code,
        database=database,
        sessions=sessions,
        hasher=hasher,
        blocklist=blocklist,
        jobs=jobs,
        ids=ids,
        clock=clock,
        policy=policy,
    )


async def subscriptions_from(container: svcs.Container) -> Subscriptions:
    database, catalog, principals, ids, clock = await container.aget(
        Database, PlanCatalog, PrincipalCache, Ids, Clock
    )
    return Subscriptions(database=database, catalog=catalog, principals=principals, ids=ids, clock=clock)


async def quotas_from(container: svcs.Container) -> Quotas:
    database, catalog, ids, clock = await container.aget(Database, PlanCatalog, Ids, Clock)
    return Quotas(database=database, catalog=catalog, ids=ids, clock=clock)


async def generations_from(container: svcs.Container) -> Generations:
    database, catalog, jobs, policy, ids, clock, settings = await container.aget(
        Database, PlanCatalog, JobQueue, PromptPolicy, Ids, Clock, Settings
    )
    return Generations(
        database=database,
        catalog=catalog,
        quotas=await quotas_from(container),
        jobs=jobs,
        policy=policy,
        ids=ids,
        clock=clock,
        steps=settings.render_steps,
        sleep=asyncio.sleep,
        heartbeat_seconds=settings.render_heartbeat_seconds,
        webhooks_allow_private=settings.webhooks_allow_private,
        flags=await feature_flags_from(container),
    )


async def render_job_from(container: svcs.Container) -> RenderGeneration:
    """The render job's use case; the worker registers the ImageRenderer (the API has none)."""
    database, renderer, blobs, ids, clock, settings = await container.aget(
        Database, ImageRenderer, BlobStore, Ids, Clock, Settings
    )
    return RenderGeneration(
        database=database,
        renderer=renderer,
        blobs=blobs,
        ids=ids,
        clock=clock,
        max_attempts=RENDER_ATTEMPTS,
        steps=settings.render_steps,
    )


async def generation_maintenance_from(container: svcs.Container) -> GenerationMaintenance:
    database, jobs, blobs, clock, settings = await container.aget(
        Database, JobQueue, BlobStore, Clock, Settings
    )
    return GenerationMaintenance(
        database=database,
        jobs=jobs,
        blobs=blobs,
        clock=clock,
        steps=settings.render_steps,
        heartbeat_seconds=settings.render_heartbeat_seconds,
    )


WEBHOOK_LINK_LIFETIME = timedelta(hours=24)  # links in a webhook body outlive a slow receiver's retries


async def webhook_secret_keeper_from(container: svcs.Container) -> WebhookSecretKeeper:
    secrets, ids, clock = await container.aget(Secrets, Ids, Clock)
    return WebhookSecretKeeper(secrets=secrets, ids=ids, clock=clock)


async def webhook_endpoints_from(container: svcs.Container) -> WebhookEndpoints:
    database, jobs, ids, clock, settings = await container.aget(Database, JobQueue, Ids, Clock, Settings)
    return WebhookEndpoints(
        database=database,
        keeper=await webhook_secret_keeper_from(container),
        jobs=jobs,
        ids=ids,
        clock=clock,
        allow_private=settings.webhooks_allow_private,
    )


async def account_webhook_secret_from(container: svcs.Container) -> AccountWebhookSecret:
    database = await container.aget(Database)
    return AccountWebhookSecret(database=database, keeper=await webhook_secret_keeper_from(container))


async def webhook_fan_out_from(container: svcs.Container) -> WebhookFanOut:
    ids, clock, settings = await container.aget(Ids, Clock, Settings)
    return WebhookFanOut(ids=ids, clock=clock, schedule=settings.webhook_schedule)


async def webhook_sender_from(container: svcs.Container) -> WebhookSender:
    """The `webhooks` job's use case; the worker registers the WebhookTransport (the API has none)."""
    database, transport, blobs, ids, clock, settings = await container.aget(
        Database, WebhookTransport, BlobStore, Ids, Clock, Settings
    )
    return WebhookSender(
        database=database,
        transport=transport,
        keeper=await webhook_secret_keeper_from(container),
        blobs=blobs,
        ids=ids,
        clock=clock,
        schedule=settings.webhook_schedule,
        link_lifetime=WEBHOOK_LINK_LIFETIME,
    )
