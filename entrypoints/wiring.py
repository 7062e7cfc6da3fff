"""The composition root: Settings in, an `svcs.Registry` of adapters out.

The HTTP app, the worker and the CLI all build their services here, so they agree on which
adapter serves each port. Adapters are chosen by URL scheme (DESIGN.md §2); every adapter with a
dependency registers a ping, which is what `/health/ready` reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager, contextmanager
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

import svcs

from adapters.images.inspector import PillowImageInspector
from adapters.invalidating_database import InvalidatingDatabase
from adapters.mail.console import ConsoleMailer
from adapters.mail.smtp import smtp_mailer_from_url
from adapters.memory.cache import MemoryCache
from adapters.memory.database import MemoryDatabase
from adapters.memory.invalidation_bus import MemoryInvalidationBus
from adapters.memory.mailer import MemoryMailer
from adapters.memory.rate_limiter import MemoryRateLimiter
from adapters.memory.session_store import MemorySessionStore
from adapters.near_cache import NearCache
from adapters.passwords.argon2_hasher import Argon2PasswordHasher
from adapters.passwords.blocklist import ShippedBlocklist
from adapters.queue.factory import job_queue_from_url
from adapters.queue.saq_queue import SaqJobQueue
from adapters.resilient_cache import ResilientCache
from adapters.secrets import ChainedSecrets, EnvSecrets, FileSecrets
from adapters.secrets.rotation import StagedFileSecrets
from adapters.storage.factory import blob_store_from_url
from adapters.storage.link_signer import LinkSigner
from adapters.system import SystemClock, SystemIds
from core.accounts.context import AccountPolicy
from core.accounts.credentials import CredentialResolver
from core.billing.plans import PlanCatalog
from core.circuit_breaker import CircuitBreaker
from core.error_tracking.alerts import OPS_WEBHOOK_SECRET
from core.generations.prompt_policy import PromptPolicy
from core.images import ImageLimits
from core.ports import (
    BlobStore,
    Cache,
    Clock,
    Database,
    FeatureFlagCache,
    Ids,
    ImageInspector,
    InvalidationBus,
    JobQueue,
    Mailer,
    PasswordBlocklist,
    PasswordHasher,
    PrincipalCache,
    RateLimiter,
    Secrets,
    SessionStore,
    SignedLinks,
)
from core.secrets import METRICS_TOKEN, URL_SIGNING_KEY, WEBHOOK_SECRET_KEY
from entrypoints.error_tracking import check_ops_secret, register_error_tracking
from entrypoints.feature_flags import register_feature_flags
from entrypoints.generation_policy import load_prompt_policy, upload_limits
from entrypoints.plan_catalog import load_plan_catalog
from entrypoints.settings import Settings, load_environment

log = logging.getLogger("pictor.wiring")


# Readiness check name and whether its failure makes the instance unready. The cache is optional:
# a cache outage degrades latency (the breaker falls back to the source) but serves correctly.
def _service_name(service_type: type) -> str:
    return f"{service_type.__module__}.{service_type.__qualname__}"  # as svcs names a ping


_CHECKS: dict[str, tuple[str, bool]] = {
    _service_name(Database): ("database", True),
    _service_name(Cache): ("cache", False),
    _service_name(BlobStore): ("storage", True),
    _service_name(JobQueue): ("queue", True),
    _service_name(Secrets): ("secrets", True),
    _service_name(SessionStore): ("sessions", True),
    # Deaf to invalidations, the principal cache is bypassed (slower, still correct).
    _service_name(PrincipalCache): ("principal_cache", False),
    # Deaf, the flag snapshot lives about a second: changes still land, reads cost a query more.
    _service_name(FeatureFlagCache): ("feature_flags", False),
}


def check_name_for(service_name: str) -> tuple[str, bool]:
    return _CHECKS.get(service_name, (service_name.rsplit(".", 1)[-1].lower(), True))


class PendingMigrationsError(RuntimeError):
    """The database is behind this version of Pictor."""


class UnusableConfiguration(RuntimeError):
    """Settings that are each valid but cannot work together for this command."""


@contextmanager
def database_url_for(settings: Settings) -> Iterator[str]:
    """The configured database URL, or that of the embedded PostgreSQL, started for the block.

    Stopping leaves the embedded server running while another process still uses it.
    """
    if settings.database_url is not None:
        yield settings.database_url
        return
    from adapters.postgres.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(settings.data_path / "postgres")
    url = embedded.start()
    try:
        yield url
    finally:
        embedded.stop()


def queue_url_of(settings: Settings, database_url: str) -> str:
    """The queue's URL; the embedded default is SAQ's PostgreSQL queue on the same database."""
    return settings.effective_queue_url or database_url


def secret_sources(settings: Settings, environ: Mapping[str, str]) -> tuple[EnvSecrets, StagedFileSecrets]:
    """The environment (PICTOR_SECRET_* and dedicated settings), then the secrets directory, whose
    rotated versions sign only once every process has had time to read them."""
    env = EnvSecrets(environ, extra={METRICS_TOKEN: settings.metrics_token})
    files = StagedFileSecrets(
        settings.secrets_path,
        ttl_seconds=settings.secrets_cache_seconds,
        required=settings.secrets_dir is not None,
    )
    return env, files


def build_secrets(settings: Settings, environ: Mapping[str, str]) -> Secrets:
    """Environment first, then the secrets directory (`secret_sources`)."""
    return ChainedSecrets(secret_sources(settings, environ))


async def ensure_generated_secrets(settings: Settings, environ: Mapping[str, str]) -> list[str]:
    """Create the secrets Pictor needs and nobody configured, in the default secrets directory.

    Returns the names it created. A generated key is kept on disk, so links it signed keep
    working after a restart. An operator's own PICTOR_SECRETS_DIR is never written to: every
    replica must share one key, so a missing one is a readiness failure, not a new key.
    """
    if settings.secrets_dir is not None:
        return []
    configured = build_secrets(settings, environ)
    files = FileSecrets(settings.secrets_path, ttl_seconds=0)
    created = []
    for name in (URL_SIGNING_KEY, METRICS_TOKEN, WEBHOOK_SECRET_KEY, OPS_WEBHOOK_SECRET):
        if not await configured.versions(name):
            settings.secrets_path.mkdir(parents=True, exist_ok=True, mode=0o700)
            files.add_version(name, SystemIds().token(32))
            created.append(name)
    return created


@asynccontextmanager
async def service_registry(
    settings: Settings, *, environ: Mapping[str, str] | None = None, check_migrations: bool = True
) -> AsyncIterator[svcs.Registry]:
    """An open registry for `settings`; everything it opened is closed on exit.

    `environ` (default: the process environment with the `.env` file) supplies PICTOR_SECRET_*.
    """
    environ = dict(load_environment() if environ is None else environ)
    async with AsyncExitStack() as stack:  # outlives the registry: the embedded database stops last
        database = database_url_for(settings)
        database_url = await asyncio.to_thread(database.__enter__)  # blocks while PostgreSQL starts
        stack.push_async_callback(asyncio.to_thread, database.__exit__, None, None, None)
        registry = svcs.Registry()
        try:
            await _register_all(registry, settings, environ, database_url, check_migrations=check_migrations)
            yield registry
        finally:
            await registry.aclose()


async def prepare_database(settings: Settings, database_url: str, *, migrate: bool) -> None:
    """Apply pending migrations (with `migrate`) or refuse to go on with them pending; and give
    the job queue its tables when it lives in PostgreSQL, before several processes race for it."""
    if database_url.startswith("memory:"):
        return
    from adapters.postgres.migrations import apply_migrations, pending_migrations

    if migrate:
        await apply_migrations(database_url)
    else:
        pending = await pending_migrations(database_url)
        if pending:
            raise PendingMigrationsError(
                f"{len(pending)} pending migration(s): {', '.join(pending)}; run `pictor migrate` first"
            )
    queue = job_queue_from_url(queue_url_of(settings, database_url), name_prefix=settings.namespace)
    try:
        if isinstance(queue, SaqJobQueue):
            await queue.prepare()
    finally:
        await queue.close()


async def _register_all(
    registry: svcs.Registry,
    settings: Settings,
    environ: dict[str, str],
    database_url: str,
    *,
    check_migrations: bool,
) -> None:
    clock = SystemClock()
    ids = SystemIds()
    secrets = build_secrets(settings, environ)
    registry.register_value(Settings, settings)
    registry.register_value(Clock, clock)
    registry.register_value(Ids, ids)
    registry.register_value(Secrets, secrets, ping=_secrets_ping(settings))

    registry.register_value(PlanCatalog, load_plan_catalog(settings))
    registry.register_value(PromptPolicy, load_prompt_policy(settings))
    registry.register_value(ImageLimits, upload_limits(settings))
    registry.register_value(ImageInspector, PillowImageInspector())
    database, pool = await _open_database(registry, settings, database_url, check_migrations)
    valkey = _open_valkey(registry, settings)
    principals = _principal_cache(registry, settings, pool, valkey)
    database = InvalidatingDatabase(database, principals)
    registry.register_value(Database, database, ping=_ping)
    registry.register_value(Cache, _cache(settings, valkey), ping=_ping)
    register_feature_flags(registry, settings, pool, valkey)
    _register_accounts(registry, settings, pool, valkey)
    register_error_tracking(registry, settings, valkey)
    registry.register_value(
        CredentialResolver,
        CredentialResolver(
            database=database,
            sessions=await _session_store(registry),
            principals=principals,
            clock=clock,
            ttl_seconds=settings.cache_ttl_seconds,
        ),
    )

    signer = LinkSigner(secrets, clock, settings.public_base_url)
    registry.register_value(SignedLinks, signer)
    store = blob_store_from_url(
        settings.resolved_storage_url,
        secrets=secrets,
        clock=clock,
        public_base_url=settings.public_base_url,
        s3_endpoint=settings.s3_endpoint,
        s3_region=settings.s3_region,
        s3_access_key_id=settings.s3_access_key_id,
        s3_secret_access_key=settings.s3_secret_access_key,
        s3_allow_http=settings.s3_allow_http,
        link_signer=signer,
    )
    registry.register_value(BlobStore, store, ping=_ping)

    queue = job_queue_from_url(queue_url_of(settings, database_url), name_prefix=settings.namespace)
    registry.register_value(JobQueue, queue, ping=_ping, on_registry_close=queue.close)


async def _ping(service: Any) -> None:
    """svcs calls this with the service; awaiting the service's own ping is the readiness check."""
    await service.ping()


def _secrets_ping(settings: Settings) -> Callable[[Secrets], Awaitable[None]]:
    """The sources answer, and the keys this configuration needs are there."""
    needs_link_key = urlsplit(settings.resolved_storage_url).scheme in ("file", "memory")

    async def ping(secrets: Secrets) -> None:
        await secrets.ping()
        if needs_link_key:
            await secrets.current(URL_SIGNING_KEY)  # DomainError(secret_missing) names it
        await secrets.current(WEBHOOK_SECRET_KEY)  # webhook signing secrets derive from it
        if settings.ops_webhook_url is not None:
            await check_ops_secret(secrets)  # alerts are signed with it

    return ping


async def _open_database(
    registry: svcs.Registry, settings: Settings, url: str, check_migrations: bool
) -> tuple[Database, Any]:
    """The database and, on PostgreSQL, its pool (other PostgreSQL adapters share it)."""
    if url.startswith("memory:"):
        return MemoryDatabase(), None
    from adapters.postgres.database import PostgresDatabase
    from adapters.postgres.instrumentation import forget_pool_stats, report_pool_stats
    from adapters.postgres.migrations import pending_migrations
    from adapters.postgres.pool import open_pool

    pool = await open_pool(
        url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        acquire_timeout=settings.db_pool_acquire_timeout,
        max_idle=settings.db_pool_idle_timeout,
        statement_timeout_ms=settings.db_statement_timeout_ms,
        slow_query_seconds=settings.db_slow_query_seconds,
    )
    # Pool gauges are refreshed in the background so every process reports its own pool.
    reporter = asyncio.create_task(report_pool_stats(pool, every_seconds=5.0), name="pool-stats")

    async def close_pool() -> None:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
        await pool.close()
        if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:  # multiprocess mode cannot remove series
            forget_pool_stats(pool.name)

    registry.register_value(type(pool), pool, on_registry_close=close_pool)
    if check_migrations:
        pending = await pending_migrations(pool)
        if pending:
            raise PendingMigrationsError(
                f"{len(pending)} pending migration(s): {', '.join(pending)}; run `pictor migrate` first"
            )
    return PostgresDatabase(pool), pool


def _open_valkey(registry: svcs.Registry, settings: Settings) -> Any:
    """One Valkey client for the cache, sessions and rate limits; None without PICTOR_VALKEY_URL."""
    url = settings.valkey_url
    if url is None or url.startswith("memory:"):
        return None
    from adapters.valkey.client import create_valkey_client

    client = create_valkey_client(url)
    registry.register_value(type(client), client, on_registry_close=client.aclose)
    return client


def _cache(settings: Settings, valkey: Any) -> Cache:
    if valkey is None:
        return MemoryCache()
    from adapters.valkey.cache import ValkeyCache

    return ResilientCache(ValkeyCache(valkey, key_prefix=f"{settings.namespace}:"), breaker=CircuitBreaker())


def _principal_cache(registry: svcs.Registry, settings: Settings, pool: Any, valkey: Any) -> NearCache:
    """Resolved credentials cached in this process, invalidated through Valkey pub/sub, else
    PostgreSQL LISTEN/NOTIFY (several HTTP workers on the embedded database), else in memory."""
    bus: InvalidationBus
    channel = f"{settings.namespace}:invalidations"
    if valkey is not None:
        from adapters.valkey.invalidation_bus import ValkeyInvalidationBus

        bus = ValkeyInvalidationBus(valkey, channel=channel)
    elif pool is not None:
        from adapters.postgres.invalidation_bus import PostgresInvalidationBus

        bus = PostgresInvalidationBus(pool, channel=f"{settings.namespace}_invalidations")
    else:
        bus = MemoryInvalidationBus()
    cache = NearCache(bus)
    cache.start()
    registry.register_value(PrincipalCache, cache, ping=_ping, on_registry_close=cache.aclose)
    return cache


async def _session_store(registry: svcs.Registry) -> SessionStore:
    async with svcs.Container(registry) as container:
        return await container.aget(SessionStore)


def account_policy(settings: Settings) -> AccountPolicy:
    return AccountPolicy(
        password_min_length=settings.password_min_length,
        session_idle_timeout=timedelta(seconds=settings.session_idle_timeout_seconds),
        session_absolute_lifetime=timedelta(seconds=settings.session_absolute_lifetime_seconds),
    )


def _register_accounts(registry: svcs.Registry, settings: Settings, pool: Any, valkey: Any) -> None:
    """Sessions live in Valkey when there is one, else in PostgreSQL (they survive restarts of the
    embedded set-up), else in memory; rate limits in Valkey or in memory (one process)."""
    prefix = f"{settings.namespace}:"
    sessions: SessionStore
    limiter: RateLimiter
    if valkey is not None:
        from adapters.valkey.rate_limiter import ValkeyRateLimiter
        from adapters.valkey.session_store import ValkeySessionStore

        sessions = ValkeySessionStore(valkey, key_prefix=prefix)
        limiter = ValkeyRateLimiter(valkey, key_prefix=prefix)
    else:
        limiter = MemoryRateLimiter()
        if pool is not None:
            from adapters.postgres.session_store import PostgresSessionStore

            sessions = PostgresSessionStore(pool)
        else:
            sessions = MemorySessionStore()
    registry.register_value(SessionStore, sessions, ping=_ping)
    registry.register_value(RateLimiter, limiter)
    registry.register_value(AccountPolicy, account_policy(settings))
    registry.register_value(PasswordHasher, Argon2PasswordHasher())
    registry.register_value(PasswordBlocklist, ShippedBlocklist())
    registry.register_value(Mailer, mailer_for(settings))


def mailer_for(settings: Settings) -> Mailer:
    url = settings.smtp_url
    if url is None or url.startswith("console:"):
        return ConsoleMailer()
    if url.startswith("memory:"):
        return MemoryMailer()
    return smtp_mailer_from_url(url, sender=settings.mail_from)


__all__ = [
    "PendingMigrationsError",
    "UnusableConfiguration",
    "check_name_for",
    "database_url_for",
    "ensure_generated_secrets",
    "prepare_database",
    "service_registry",
]
