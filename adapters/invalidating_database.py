"""A Database decorator that invalidates cached principals after every commit that changed them.

Resolved credentials are cached per process (adapters.near_cache). Whatever changes a user (role,
status, plan, profile, password) or revokes a key goes through `uow.users.update` or
`uow.api_keys.revoke`; this wrapper records the tags those calls touch and invalidates them once
the transaction has committed — in every process, through the cache's bus. Doing it here, not in
each use case, means no present or future write path can forget to.
"""

from __future__ import annotations

from datetime import datetime
from types import TracebackType
from typing import Any, Self

from core.accounts.users import User
from core.cache_tags import api_key_tag, user_tag
from core.ports import (
    ApiKeyRepository,
    AuditRepository,
    ChargeRepository,
    Database,
    FeatureFlagRepository,
    GenerationRepository,
    IdempotencyRepository,
    OutboxRepository,
    PrincipalCache,
    SubscriptionRepository,
    TokenRepository,
    UnitOfWork,
    UploadRepository,
    UsageRepository,
    UserRepository,
    WebhookDeliveryRepository,
    WebhookEndpointRepository,
    WebhookSecretRepository,
)


class InvalidatingDatabase:
    """Implements `core.ports.Database` over `inner`."""

    def __init__(self, inner: Database, principals: PrincipalCache) -> None:
        self._inner = inner
        self._principals = principals

    @property
    def inner(self) -> Database:
        return self._inner

    def unit_of_work(self) -> InvalidatingUnitOfWork:
        return InvalidatingUnitOfWork(self._inner.unit_of_work(), self._principals)

    async def ping(self) -> None:
        await self._inner.ping()

    def __getattr__(self, name: str) -> Any:  # the inner adapter's extras (tests' `committed_*`)
        return getattr(self._inner, name)


class InvalidatingUnitOfWork:
    """Implements `core.ports.UnitOfWork`: the inner one, with users and keys watched."""

    def __init__(self, inner: UnitOfWork, principals: PrincipalCache) -> None:
        self._inner = inner
        self._principals = principals
        self._changed: set[str] = set()
        self._users = _WatchedUsers(inner.users, self._changed)
        self._api_keys = _WatchedApiKeys(inner.api_keys, self._changed)

    @property
    def users(self) -> UserRepository:
        return self._users

    @property
    def api_keys(self) -> ApiKeyRepository:
        return self._api_keys

    @property
    def outbox(self) -> OutboxRepository:
        return self._inner.outbox

    @property
    def tokens(self) -> TokenRepository:
        return self._inner.tokens

    @property
    def audit(self) -> AuditRepository:
        return self._inner.audit

    @property
    def subscriptions(self) -> SubscriptionRepository:
        return self._inner.subscriptions

    @property
    def charges(self) -> ChargeRepository:
        return self._inner.charges

    @property
    def usage(self) -> UsageRepository:
        return self._inner.usage

    @property
    def generations(self) -> GenerationRepository:
        return self._inner.generations

    @property
    def uploads(self) -> UploadRepository:
        return self._inner.uploads

    @property
    def idempotency(self) -> IdempotencyRepository:
        return self._inner.idempotency

    @property
    def webhook_endpoints(self) -> WebhookEndpointRepository:
        return self._inner.webhook_endpoints

    @property
    def webhook_secrets(self) -> WebhookSecretRepository:
        return self._inner.webhook_secrets

    @property
    def webhook_deliveries(self) -> WebhookDeliveryRepository:
        return self._inner.webhook_deliveries

    @property
    def feature_flags(self) -> FeatureFlagRepository:
        return self._inner.feature_flags

    def __getattr__(self, name: str) -> Any:  # adapter extras (e.g. the connection) pass through
        return getattr(self._inner, name)

    async def __aenter__(self) -> Self:
        await self._inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._inner.__aexit__(exc_type, exc, tb)

    async def commit(self) -> None:
        await self._inner.commit()
        if self._changed:
            changed = sorted(self._changed)
            self._changed.clear()
            await self._principals.invalidate_tags(*changed)

    async def rollback(self) -> None:
        self._changed.clear()
        await self._inner.rollback()


class _WatchedUsers:
    def __init__(self, inner: UserRepository, changed: set[str]) -> None:
        self._inner = inner
        self._changed = changed
        self.add = inner.add
        self.get = inner.get
        self.get_by_email = inner.get_by_email
        self.get_for_update = inner.get_for_update
        self.list = inner.list

    async def update(self, user: User) -> None:
        await self._inner.update(user)
        self._changed.add(user_tag(user.id))


class _WatchedApiKeys:
    def __init__(self, inner: ApiKeyRepository, changed: set[str]) -> None:
        self._inner = inner
        self._changed = changed
        self.add = inner.add
        self.get_by_hash = inner.get_by_hash
        self.list_for_user = inner.list_for_user
        self.touch = inner.touch

    async def revoke(self, user_id: str, key_id: str, at: datetime) -> bool:
        revoked = await self._inner.revoke(user_id, key_id, at)
        if revoked:
            self._changed.add(api_key_tag(key_id))
        return revoked
