"""Use cases built from a request's or a job's svcs container: the one place that knows which
ports each needs, shared by the HTTP routes, the CLI and the tests."""

from __future__ import annotations

import asyncio

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
    SessionStore,
)
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
