"""The ports: what the core needs from the world, as Protocols.

Adapters in `adapters/` implement them (one technology each) and `adapters/memory/` fakes every one
of them; `tests/contract/` runs one suite per port against all of its adapters. Domain types go in
and out, never driver types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from datetime import datetime, timedelta
from types import TracebackType
from typing import Any, Protocol, Self, TypeVar

from core.accounts.api_keys import ApiKey
from core.accounts.audit import AuditRecord
from core.accounts.sessions import Session
from core.accounts.tokens import OneTimeToken, TokenPurpose
from core.accounts.users import User, UserStatus
from core.billing.charges import Charge
from core.billing.subscriptions import Subscription
from core.billing.usage import QuotaReservation, ReservationResult, UsagePeriod
from core.cache_tags import Invalidation
from core.email import EmailMessage
from core.error_tracking.model import ErrorBatch, RecentErrors, WindowBuckets, WindowTotals
from core.flags.model import Flag
from core.generations.generation import Generation, GenerationStatus
from core.generations.uploads import Upload
from core.idempotency import IdempotencyRecord
from core.images import ImageFacts, ImageLimits
from core.jobs import JobInfo, JobSpec, QueueStats
from core.outbox import OutboxMessage
from core.rate_limit import RateLimit, RateLimitDecision
from core.rendering import RenderedImage, RenderRequest
from core.secrets import SecretVersion
from core.storage import Blob, BlobInfo, SignedUrl
from core.webhooks.deliveries import AttemptResult, WebhookDelivery
from core.webhooks.endpoints import WebhookEndpoint
from core.webhooks.signing_secrets import SecretOwner, WebhookSecretVersion

T = TypeVar("T")


class Clock(Protocol):
    """The time. Rules never read it themselves: use cases pass `now` in."""

    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back, for durations."""
        ...


class Ids(Protocol):
    """Identifiers and randomness."""

    def new_id(self) -> str:
        """A new UUIDv7 as text: unique, and sortable by creation time."""
        ...

    def token(self, nbytes: int = 32) -> str:
        """A URL-safe secret token with `nbytes` of entropy (256 bits by default)."""
        ...

    def random(self) -> float:
        """A uniform number in [0, 1), for jitter."""
        ...

    def random_bytes(self, n: int) -> bytes:
        """`n` bytes from a cryptographically secure source."""
        ...


class Secrets(Protocol):
    """Named secrets with versions, newest first, so keys can rotate."""

    async def current(self, name: str) -> SecretVersion:
        """The version to sign or encrypt with. Raises DomainError(secret_missing)."""
        ...

    async def versions(self, name: str) -> list[SecretVersion]:
        """Every version still accepted for verification, newest first (may be empty)."""
        ...

    async def ping(self) -> None:
        """Raise if the secret source cannot be read."""
        ...


class Cache(Protocol):
    """A shared cache of msgspec-encodable values with TTLs and tags.

    Values are decoded to `type_` on the way out. A tag names a group of keys that one write
    invalidates together (e.g. every cached read about one user).
    """

    async def get(self, key: str, type_: type[T]) -> T | None:
        """The cached value, or None when absent or expired."""
        ...

    async def set(self, key: str, value: Any, *, ttl_seconds: float, tags: Sequence[str] = ()) -> None:
        """Store `value` for `ttl_seconds`, attached to `tags`."""
        ...

    async def delete(self, *keys: str) -> int:
        """Remove keys; returns how many existed."""
        ...

    async def get_or_set(
        self,
        key: str,
        type_: type[T],
        loader: Callable[[], Awaitable[T]],
        *,
        ttl_seconds: float,
        tags: Sequence[str] = (),
    ) -> T:
        """The cached value, or `loader()`'s result stored for next time.

        Single-flight: concurrent misses for one key run the loader once, not once per caller.
        """
        ...

    async def invalidate_tags(self, *tags: str) -> int:
        """Remove every key attached to any of `tags`; returns how many keys were removed."""
        ...

    async def delete_pattern(self, pattern: str) -> int:
        """Remove keys matching a glob pattern (`*`, `?`), incrementally; returns how many."""
        ...

    async def ping(self) -> None:
        """Raise if the cache cannot be reached."""
        ...


class PrincipalCache(Protocol):
    """The per-process cache of resolved credentials (DESIGN.md §11: no network round trip on a
    hit). Its invalidations reach the caches of every process through an InvalidationBus, and it
    serves nothing from memory while it cannot hear them."""

    async def get_or_load(
        self,
        key: str,
        loader: Callable[[], Awaitable[tuple[T, Sequence[str]]]],
        *,
        ttl_seconds: float,
    ) -> T:
        """The cached value, or the first item of `loader()`'s result, cached under the tags in its
        second item. Concurrent misses for one key run the loader once. A value loaded while an
        invalidation arrived is returned but not kept (it may predate the change)."""
        ...

    async def invalidate_tags(self, *tags: str) -> int:
        """Drop every entry attached to `tags` here and, through the bus, in every other process;
        returns how many entries this process dropped."""
        ...

    async def ping(self) -> None:
        """Raise when invalidations cannot be heard (the cache is then bypassed, not wrong)."""
        ...


class InvalidationBus(Protocol):
    """Carries cache invalidations to every process (Valkey pub/sub, PostgreSQL NOTIFY, in memory)."""

    async def publish(self, invalidation: Invalidation) -> None:
        """Send to every listener, this process's included."""
        ...

    def listen(self) -> AsyncIterator[Invalidation]:
        """Invalidations as they arrive, forever. After a (re)connection the first item is a
        `reset`: messages sent while disconnected are lost, so listeners drop everything."""
        ...

    @property
    def connected(self) -> bool:
        """Whether invalidations are being received now (a cache that cannot hear them must not
        serve from memory)."""
        ...

    async def ping(self) -> None: ...


class BlobStore(Protocol):
    """Object storage. Keys are relative slash-separated paths (see `core.storage.validate_blob_key`)."""

    async def put(
        self, key: str, data: bytes, *, content_type: str, metadata: dict[str, str] | None = None
    ) -> BlobInfo:
        """Store `data` under `key`, replacing what was there."""
        ...

    async def get(self, key: str) -> Blob:
        """The whole object. Raises BlobNotFound."""
        ...

    def stream(self, key: str, *, chunk_size: int = 256 * 1024) -> AsyncIterator[bytes]:
        """The object's bytes in chunks, for serving large files. Raises BlobNotFound when iterated."""
        ...

    async def head(self, key: str) -> BlobInfo:
        """The object's metadata. Raises BlobNotFound."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object; deleting a missing key is not an error."""
        ...

    async def copy(self, source: str, destination: str) -> None:
        """Copy an object with its content type and metadata. Raises BlobNotFound."""
        ...

    async def list(self, prefix: str = "") -> list[BlobInfo]:
        """Objects whose key starts with `prefix`, ordered by key."""
        ...

    async def signed_url(self, key: str, *, expires_in: timedelta) -> SignedUrl:
        """A link that downloads the object without credentials until it expires."""
        ...

    async def ping(self) -> None:
        """Raise if the store cannot be reached."""
        ...


class SignedLinks(Protocol):
    """Expiring download links that Pictor itself serves, for stores that cannot presign."""

    async def sign(self, key: str, expires_in: timedelta) -> SignedUrl:
        """A link to the blob `key`, valid for `expires_in`."""
        ...

    async def verify(self, key: str, expires: str | None, kid: str | None, sig: str | None) -> None:
        """Return when the link's parameters are valid for `key` now; raise `invalid_signature` or
        `link_expired` otherwise."""
        ...


class JobContext(Protocol):
    """What a running job sees of its own execution."""

    @property
    def queue(self) -> str:
        """The queue the job was taken from (e.g. `generation-priority`)."""
        ...

    @property
    def key(self) -> str: ...

    @property
    def attempt(self) -> int:
        """1 on the first try."""
        ...

    @property
    def correlation_id(self) -> str | None: ...

    async def heartbeat(self) -> None:
        """Tell the queue this job is still alive (long jobs call it between steps)."""
        ...

    async def progress(self, fraction: float) -> None:
        """Record progress in [0, 1], visible through JobQueue.status; also a heartbeat."""
        ...


JobHandler = Callable[..., Awaitable[Any]]
"""`async def handler(ctx: JobContext, **kwargs) -> result` — job functions, registered by name."""


class JobQueue(Protocol):
    """Transport for background work. The database stays the source of truth for business state."""

    async def enqueue(self, spec: JobSpec) -> JobInfo | None:
        """Queue a job. Returns None when `spec.key` names a job that is not finished yet."""
        ...

    async def status(self, queue: str, key: str) -> JobInfo | None:
        """The job's current state, or None if the queue has no (more) record of it."""
        ...

    async def abort(self, queue: str, key: str) -> bool:
        """Stop a queued or running job; True if there was one to stop."""
        ...

    async def stats(self, queue: str) -> QueueStats:
        """Counts per state and the age of the oldest waiting job."""
        ...

    async def retry(self, queue: str, key: str) -> JobInfo | None:
        """Queue a failed or aborted job again, with all its attempts; None if there is none."""
        ...

    async def failed_jobs(self, queue: str, limit: int) -> list[JobInfo]:
        """The most recently failed jobs still on record, newest first."""
        ...

    async def finished_per_minute(self, queue: str, window_seconds: float) -> float:
        """Jobs finished (any outcome) per minute over the last `window_seconds`, as counted by
        every worker in the queue's store (a worker may write its counts a second late)."""
        ...

    async def ping(self) -> None:
        """Raise if the queue's store cannot be reached."""
        ...


class OutboxRepository(Protocol):
    """Domain events written in the unit of work's transaction, published later by a job."""

    async def add(self, message: OutboxMessage) -> None: ...

    async def claim_unpublished(self, limit: int) -> list[OutboxMessage]:
        """Oldest unpublished messages, locked for this transaction; concurrent claimers skip them."""
        ...

    async def mark_published(self, ids: Sequence[str], at: datetime) -> None: ...


class UserRepository(Protocol):
    async def add(self, user: User) -> None:
        """Raises DomainError(email_taken) when the normalized email exists."""
        ...

    async def get(self, user_id: str) -> User | None: ...

    async def get_by_email(self, email_normalized: str) -> User | None: ...

    async def get_for_update(self, user_id: str) -> User | None:
        """Read the user and hold its row until the unit of work ends: read-modify-write paths use
        it, so two changes to one user (a suspension and a password change) never undo each other."""
        ...

    async def update(self, user: User) -> None:
        """Replace the stored user with the same id."""
        ...

    async def list(
        self,
        *,
        email: str | None = None,
        status: UserStatus | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[User]:
        """Newest first (ids are time-ordered), after the id `after`; `email` matches a substring of
        the normalized email."""
        ...


class ApiKeyRepository(Protocol):
    async def add(self, key: ApiKey) -> None: ...

    async def get_by_hash(self, key_hash: str) -> ApiKey | None:
        """The key with this hash, revoked or not (the caller decides)."""
        ...

    async def list_for_user(self, user_id: str) -> list[ApiKey]:
        """The user's keys that are not revoked, newest first."""
        ...

    async def revoke(self, user_id: str, key_id: str, at: datetime) -> bool:
        """Revoke the user's key; False when they have no such live key."""
        ...

    async def touch(self, key_id: str, at: datetime) -> None:
        """Record a use (callers throttle this to once a minute)."""
        ...


class TokenRepository(Protocol):
    async def add(self, token: OneTimeToken) -> None: ...

    async def consume(self, token_hash: str, purpose: TokenPurpose, now: datetime) -> OneTimeToken | None:
        """Mark the token used and return it, if it exists, has this purpose, is unused and unexpired.

        Atomic: of two concurrent consumers, one gets the token.
        """
        ...

    async def revoke_for_user(self, user_id: str, purpose: TokenPurpose, at: datetime) -> int:
        """Use up every outstanding token of this purpose (e.g. a newer reset link was sent)."""
        ...


class AuditRepository(Protocol):
    async def add(self, record: AuditRecord) -> None: ...

    async def list(
        self,
        *,
        action: str | None = None,
        actor_id: str | None = None,
        target_id: str | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[AuditRecord]:
        """Newest first, after the id `after`."""
        ...


class SubscriptionRepository(Protocol):
    """Each user's one subscription (the user must exist), keyed by user id."""

    async def add(self, subscription: Subscription) -> None:
        """Raises DomainError(conflict) when the user already has one."""
        ...

    async def get(self, user_id: str) -> Subscription | None: ...

    async def get_for_update(self, user_id: str) -> Subscription | None:
        """Read and row-lock the subscription until the unit of work ends."""
        ...

    async def update(self, subscription: Subscription) -> None:
        """Replace the user's stored subscription (its `created_at` stays); no-op when absent."""
        ...

    async def claim_due(self, now: datetime, limit: int) -> list[Subscription]:
        """Subscriptions due by `now`, earliest due first, row-locked for this transaction;
        concurrent claimers skip them (`FOR UPDATE SKIP LOCKED`), so two workers running the
        roll-over never process one subscription twice.

        Due means `current_period_end <= now`, or, while `trialing`, `trial_end <= now` (a trial
        end kept on a converted subscription no longer counts). Every status is considered: the
        roll-over moves the period of each subscription it claims, or it would be claimed again.
        """
        ...


class ChargeRepository(Protocol):
    """The charges ledger; charges are never changed once added (the user must exist)."""

    async def add(self, charge: Charge) -> None:
        """Raises DomainError(conflict) when the id exists."""
        ...

    async def list_for_user(self, user_id: str, *, limit: int) -> list[Charge]:
        """Newest first."""
        ...


class UsageRepository(Protocol):
    """Image usage per user and billing period, and the reservations against it."""

    async def reserve(
        self,
        reservation: QuotaReservation,
        *,
        period_end: datetime,
        images_limit: int,
        max_in_flight: int,
    ) -> ReservationResult:
        """Reserve `reservation.images` in its period, creating the period's row if needed.

        One atomic check-and-increment: succeeds only while `images_used + images <= images_limit`
        and `in_flight < max_in_flight`; otherwise nothing changes and the outcome says which limit
        held (`quota_exceeded` when the images do not fit, whatever `in_flight` is). A reservation
        id seen before changes nothing (`already_reserved`, with the usage of that reservation's
        period). `reservation.status` must be `reserved`; its user must exist.
        """
        ...

    async def release(self, reservation_id: str, *, refund: bool, at: datetime) -> QuotaReservation | None:
        """End a reserved reservation: settle it (`refund=False`) or give its images back. Only the
        first release of a reservation counts; later ones (and unknown ids) return None."""
        ...

    async def get(self, user_id: str, period_start: datetime) -> UsagePeriod | None:
        """The period's usage, or None before its first reservation."""
        ...

    async def get_reservation(self, reservation_id: str) -> QuotaReservation | None: ...

    async def mark_threshold(self, user_id: str, period_start: datetime, percent: int) -> bool:
        """Record that `percent` was reached this period; True only the first time."""
        ...


class UnitOfWork(Protocol):
    """One transaction. Leaving the block without `commit()` (or through an exception) rolls back."""

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def users(self) -> UserRepository: ...

    @property
    def api_keys(self) -> ApiKeyRepository: ...

    @property
    def tokens(self) -> TokenRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def subscriptions(self) -> SubscriptionRepository: ...

    @property
    def charges(self) -> ChargeRepository: ...

    @property
    def usage(self) -> UsageRepository: ...

    @property
    def generations(self) -> GenerationRepository: ...

    @property
    def uploads(self) -> UploadRepository: ...

    @property
    def idempotency(self) -> IdempotencyRepository: ...

    @property
    def webhook_endpoints(self) -> WebhookEndpointRepository: ...

    @property
    def webhook_secrets(self) -> WebhookSecretRepository: ...

    @property
    def webhook_deliveries(self) -> WebhookDeliveryRepository: ...

    @property
    def feature_flags(self) -> FeatureFlagRepository: ...

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...


class SessionStore(Protocol):
    """Login sessions, found by the SHA-256 of their token."""

    async def create(self, session: Session) -> None: ...

    async def get(self, token_hash: str) -> Session | None:
        """The stored session (the caller checks expiry), or None."""
        ...

    async def touch(self, token_hash: str, last_seen_at: datetime) -> None: ...

    async def list_for_user(self, user_id: str) -> list[Session]:
        """The user's stored sessions, newest first (expired ones may be included; callers filter)."""
        ...

    async def delete(self, user_id: str, session_id: str) -> bool:
        """End one of the user's sessions; False when they have no such session."""
        ...

    async def delete_all_for_user(self, user_id: str, *, except_session_id: str | None = None) -> int:
        """End every session of the user (but one, when given); returns how many ended."""
        ...

    async def delete_expired(self, now: datetime) -> int:
        """Remove sessions past their idle or absolute end (a maintenance job calls it)."""
        ...

    async def ping(self) -> None: ...


class RateLimiter(Protocol):
    """GCRA decisions (core.rate_limit) over a shared store, atomically per key."""

    async def hit(self, key: str, limit: RateLimit, cost: int = 1) -> RateLimitDecision: ...

    async def peek(self, key: str, limit: RateLimit) -> RateLimitDecision:
        """The decision a hit would get now, without counting one."""
        ...

    async def reset(self, key: str) -> None: ...

    async def ping(self) -> None: ...


class PasswordHasher(Protocol):
    """Slow, salted password hashing (argon2id); runs off the event loop."""

    async def hash(self, password: str) -> str: ...

    async def verify(self, password_hash: str, password: str) -> bool: ...

    def needs_rehash(self, password_hash: str) -> bool:
        """Whether the hash was made with other parameters than the current ones."""
        ...


class PasswordBlocklist(Protocol):
    """Common and breached passwords, case-folded; membership is a constant-time set lookup."""

    def __contains__(self, password: object) -> bool: ...


class Mailer(Protocol):
    async def send(self, message: EmailMessage) -> None:
        """Deliver or raise (the email job retries)."""
        ...


class Database(Protocol):
    """The persistence port: units of work over one store."""

    def unit_of_work(self) -> UnitOfWork:
        """A new unit of work, to be used as `async with db.unit_of_work() as uow:`."""
        ...

    async def ping(self) -> None:
        """Raise if the database cannot be reached."""
        ...


# --- Rendering (issue 5) ---


class ImageRenderer(Protocol):
    """Draws images from a prompt: the built-in procedural renderer, an HTTP image server, a fake.

    Renders are deterministic for a given request (core.rendering), work in `request.steps` steps
    and never block the event loop.
    """

    async def render(
        self,
        request: RenderRequest,
        *,
        n: int,
        on_progress: Callable[[float], Awaitable[None]] | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[RenderedImage]:
        """`n` images, indexed 0..n-1, in index order.

        `on_progress` gets a fraction in [0, 1] after each step, never decreasing, ending at 1.0.
        `should_stop` is asked before each step: once it is true the render stops there and raises
        `RenderCanceled`. Failures raise `RenderFailed` (whose `retryable` guides the job's retries);
        a request no renderer should attempt (absurd size or count) raises ValueError.
        """
        ...

    async def ping(self) -> None:
        """Raise if the renderer cannot render now (workers gone, server unreachable)."""
        ...


# --- Generations, uploads and idempotency records (issue 5) ---


class GenerationRepository(Protocol):
    """Generations with their images (the user must exist). Reads for clients go through the
    owner's id; the worker, the reconciler and retention read by id or by state."""

    async def add(self, generation: Generation) -> None:
        """Store a new generation. Raises DomainError(conflict) when the id exists."""
        ...

    async def get_for_user(self, user_id: str, generation_id: str) -> Generation | None:
        """The user's generation; None when it does not exist or belongs to someone else."""
        ...

    async def get_for_update(self, generation_id: str) -> Generation | None:
        """Read the generation and hold its row until the unit of work ends (worker transitions and
        a concurrent cancel take turns)."""
        ...

    async def update(self, generation: Generation) -> None:
        """Replace the stored generation with the same id, images included (its owner, request and
        `created_at` stay as stored); no-op when absent."""
        ...

    async def list_for_user(
        self,
        user_id: str,
        *,
        status: GenerationStatus | None = None,
        after: str | None = None,
        limit: int,
    ) -> list[Generation]:
        """The user's generations, newest first (ids are time-ordered), after the id `after`, with
        `status` when given."""
        ...

    async def list_stuck(self, now: datetime, older_than: timedelta, limit: int) -> list[Generation]:
        """Queued or running generations not updated since `now - older_than`, least recently
        updated first: the reconciler re-enqueues those whose job is gone."""
        ...

    async def list_expired_images(self, before: datetime, limit: int) -> list[Generation]:
        """Succeeded generations whose images' retention ended by `before` and whose images are not
        marked expired yet, earliest first."""
        ...


class UploadRepository(Protocol):
    """Uploaded init images' metadata (the user must exist), read through the owner's id."""

    async def add(self, upload: Upload) -> None:
        """Raises DomainError(conflict) when the id exists."""
        ...

    async def get_for_user(self, user_id: str, upload_id: str) -> Upload | None:
        """The user's upload; None when it does not exist or belongs to someone else."""
        ...

    async def delete(self, user_id: str, upload_id: str) -> bool:
        """Remove the user's upload's record; False when they have no such upload."""
        ...


class IdempotencyRepository(Protocol):
    """Idempotency records per user and key (core.idempotency); the user must exist."""

    async def claim(self, record: IdempotencyRecord) -> IdempotencyRecord | None:
        """Store the in-progress `record` unless its (user, key) holds a live record; None when
        stored (this request goes ahead), else the live record (for `core.idempotency.decide`).

        Atomic: of concurrent claims of one key, one is stored and the others get it once it is
        committed (they wait for it meanwhile, as for a unique index). A record expired by
        `record.created_at` is replaced.
        """
        ...

    async def get(self, user_id: str, key: str) -> IdempotencyRecord | None:
        """The stored record, live or expired."""
        ...

    async def complete(
        self,
        user_id: str,
        key: str,
        *,
        response_status: int,
        response_body: bytes,
        response_headers: tuple[tuple[str, str], ...] = (),
    ) -> bool:
        """Record the response of an in-progress record; False when there is none in progress."""
        ...

    async def release(self, user_id: str, key: str) -> bool:
        """Drop an in-progress record (its request failed, so a retry may run); False when there
        was none in progress. Completed records stay until they expire."""
        ...

    async def delete_expired(self, now: datetime, limit: int = 1000) -> int:
        """Remove up to `limit` records expired by `now` (a maintenance job calls it); returns how
        many."""
        ...


# --- Upload inspection (issue 5) ---


class ImageInspector(Protocol):
    """Checks an image a user sent and cleans it (Pillow in a thread, or a fake)."""

    async def inspect_and_clean(self, data: bytes, limits: ImageLimits) -> tuple[bytes, ImageFacts]:
        """The image re-encoded in its own format without metadata (EXIF orientation applied to
        the pixels), and the facts of those clean bytes. Raises DomainError: unsupported_media_type
        (not PNG, JPEG or WebP by content), payload_too_large (over the byte or pixel limit, pixels
        judged before decoding), validation_failed (empty, truncated or corrupt)."""
        ...


# --- Webhooks (issue 6) ---


class WebhookEndpointRepository(Protocol):
    """Users' webhook endpoints (the user must exist). Clients reach them through the owner's id."""

    async def add(self, endpoint: WebhookEndpoint) -> None:
        """Raises DomainError(conflict) when the id exists."""
        ...

    async def get(self, endpoint_id: str) -> WebhookEndpoint | None:
        """Any user's endpoint (the delivery job reads it)."""
        ...

    async def get_for_user(self, user_id: str, endpoint_id: str) -> WebhookEndpoint | None:
        """The user's endpoint; None when it does not exist or belongs to someone else."""
        ...

    async def list_for_user(self, user_id: str) -> list[WebhookEndpoint]:
        """The user's endpoints, newest first."""
        ...

    async def list_active_for_users(self, user_ids: Sequence[str]) -> dict[str, list[WebhookEndpoint]]:
        """The active endpoints of each of `user_ids`, oldest first, by user (a user without any is
        absent): the fan-out reads a whole batch's endpoints at once, then asks each `wants`."""
        ...

    async def update(self, endpoint: WebhookEndpoint) -> None:
        """Replace the stored endpoint with the same id (its owner and `created_at` stay)."""
        ...

    async def delete(self, user_id: str, endpoint_id: str) -> bool:
        """Remove the user's endpoint with its secrets; False when they have no such endpoint.
        Its deliveries stay, for the record, with their `endpoint_id` kept."""
        ...


class WebhookSecretRepository(Protocol):
    """Versions of webhook signing secrets (salts, never secrets), per owner: an endpoint or an
    account. An owner has at most one current version (no `expires_at`) at a time."""

    async def add(self, version: WebhookSecretVersion) -> bool:
        """Store a new version; False (nothing stored) when `version` is current and the owner has
        a current version already (two first uses raced; the caller reads the winner)."""
        ...

    async def current_for_update(self, owner: SecretOwner, owner_id: str) -> WebhookSecretVersion | None:
        """The owner's current version, row-locked until the unit of work ends (rotations take turns)."""
        ...

    async def update(self, version: WebhookSecretVersion) -> None:
        """Store the version's new `expires_at` (the only field that changes)."""
        ...

    async def live(self, owner: SecretOwner, owner_id: str, now: datetime) -> list[WebhookSecretVersion]:
        """The owner's versions that sign at `now` (current, or expiring after `now`), newest first."""
        ...

    async def delete_expired(self, before: datetime) -> int:
        """Remove versions that stopped signing before `before`; returns how many."""
        ...


class WebhookDeliveryRepository(Protocol):
    """Webhook deliveries (the user must exist), the source of truth of what was sent and what is due.

    The lease (`locked_until`) keeps one delivery from being dispatched again while its job is on
    its way or sending; a worker that died leaves a lease that simply runs out.
    """

    async def add(self, delivery: WebhookDelivery) -> bool:
        """Store a new delivery; False (nothing stored) when one exists for the same event and
        endpoint, or, without an endpoint, the same event and URL (a re-published event)."""
        ...

    async def add_many(self, deliveries: Sequence[WebhookDelivery]) -> int:
        """Store new deliveries at once (the fan-out of a batch of events): like `add` for each,
        those whose event and target exist already are skipped; returns how many were stored."""
        ...

    async def get_for_user(self, user_id: str, delivery_id: str) -> WebhookDelivery | None: ...

    async def get_for_update(self, delivery_id: str) -> WebhookDelivery | None:
        """Read and row-lock the delivery until the unit of work ends."""
        ...

    async def list_for_endpoint(
        self, user_id: str, endpoint_id: str, *, after: str | None, limit: int
    ) -> list[WebhookDelivery]:
        """The user's deliveries to one endpoint, newest first (ids are time-ordered), after the
        id `after`."""
        ...

    async def claim_due(self, now: datetime, limit: int, lease_until: datetime) -> list[WebhookDelivery]:
        """Up to `limit` deliveries due at `now` (pending, `next_attempt_at <= now`, no lease ahead),
        earliest due first, leased until `lease_until` and returned as leased. Concurrent claimers
        skip each other's rows."""
        ...

    async def start_attempt(
        self, delivery_id: str, attempt: int, dispatched_until: datetime, lease_until: datetime
    ) -> WebhookDelivery | None:
        """Take the delivery for its attempt number `attempt` and return it leased until
        `lease_until`. Only the job of the current dispatch may: the stored lease must still be
        exactly `dispatched_until`, the lease its dispatch set (a compare-and-set). None when it is
        not pending, that attempt was made, or another dispatch or job took it since."""
        ...

    async def update(self, delivery: WebhookDelivery) -> None:
        """Replace the stored delivery with the same id (owner, target, event and `created_at` stay)."""
        ...

    async def cancel_pending_for_endpoint(self, endpoint_id: str, reason: str, now: datetime) -> int:
        """Cancel the endpoint's pending deliveries (it was removed or disabled); returns how many."""
        ...


class WebhookTransport(Protocol):
    """Sends one webhook attempt over HTTP, guarding against SSRF."""

    async def send(
        self, url: str, *, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> AttemptResult:
        """POST `body` once and report what came back; never raises for what the network or the
        receiver does (errors, timeouts and refusals are results). Redirects are not followed.
        The host is resolved here, at delivery time, and the request refused (no connection made)
        when any address it resolves to is forbidden by `core.webhooks.targets` under the
        configuration; the connection goes to an address that was checked."""
        ...


class FeatureFlagRepository(Protocol):
    """The feature flags (`core.flags.model.Flag`), by key. They are few: `list` reads them all."""

    async def list(self) -> list[Flag]:
        """Every flag, by key."""
        ...

    async def get(self, key: str) -> Flag | None: ...

    async def get_for_update(self, key: str) -> Flag | None:
        """The flag, locked until the unit of work ends: concurrent changes of one flag go one
        after the other, each seeing what the previous one stored."""
        ...

    async def put(self, flag: Flag) -> bool:
        """Store the flag: insert it (True), or replace the one with its key (False; the stored
        `created_at` stays). A concurrent insert of the same key is waited for, then replaced."""
        ...

    async def delete(self, key: str) -> bool:
        """Remove the flag; False when there was none."""
        ...


class FeatureFlagCache(Protocol):
    """Every feature flag, held in this process: reading flags costs no round trip, and a change
    reaches every process through an InvalidationBus within about a second."""

    async def get_or_load(self, loader: Callable[[], Awaitable[Sequence[Flag]]]) -> Mapping[str, Flag]:
        """The flags by key: the snapshot while it is fresh, else what `loader` returns (one load
        at a time; concurrent callers share it)."""
        ...

    async def invalidate(self) -> None:
        """Drop the snapshot here and in every other process (after committing a change)."""
        ...

    async def ping(self) -> None:
        """Raise while changes made elsewhere cannot be heard (the snapshot then lives briefly)."""
        ...


# --- Error tracking (issue 7) ---


class ErrorLog(Protocol):
    """Error and traffic counts in time buckets shared by every process, and the alerts' cooldowns.

    Processes count in memory and add their counts in batches (`core.error_tracking.tally`); the
    window's figures are what all processes added. Buckets are kept `keep_seconds` after their
    last write (`ErrorBatch`), then dropped.
    """

    async def add(self, batch: ErrorBatch) -> None:
        """Add a process's counts to the batch's bucket (one round trip on a shared store)."""
        ...

    async def totals(self, window: WindowBuckets) -> WindowTotals:
        """HTTP responses and 5xx, jobs and failures per queue, summed over the window's buckets
        (what the alert rules read, every few seconds in every process: small and cheap)."""
        ...

    async def recent(self, window: WindowBuckets) -> RecentErrors:
        """Traffic per source and the error cells, merged over the window's buckets
        (`core.error_tracking.model.merge_traffic` / `merge_errors`). A cell's correlation ids and
        `last_at` may be missing when its bucket saw more distinct errors than the log keeps ids for."""
        ...

    async def claim_alert(self, alert: str, now: datetime, cooldown_seconds: float) -> bool:
        """Take the right to send `alert` at `now` (`core.error_tracking.rules.claim_cooldown`):
        True, and the cooldown runs until `now + cooldown_seconds`, unless a claim's cooldown holds
        past `now`. Atomic: of concurrent claims, across processes, at most one gets True."""
        ...

    async def ping(self) -> None:
        """Raise if the shared store cannot be reached."""
        ...
