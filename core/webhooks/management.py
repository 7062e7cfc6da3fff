"""What users do with webhooks: endpoints, their secrets and deliveries, and the account secret."""

from __future__ import annotations

import builtins
import logging
from collections.abc import Sequence

import msgspec

from core.accounts.api_keys import Scope
from core.accounts.principal import Principal
from core.errors import DomainError, ErrorCode
from core.identifiers import is_id
from core.jobs import JobSpec
from core.pagination import clamp_limit, decode_cursor
from core.ports import Clock, Database, Ids, JobQueue, UnitOfWork
from core.webhooks.deliveries import DeliveryStatus, WebhookDelivery, retried_by_hand
from core.webhooks.delivery import DISPATCH_LEASE, deliver_job_spec
from core.webhooks.endpoints import (
    MAX_ENDPOINTS_PER_USER,
    EndpointStatus,
    WebhookEndpoint,
    checked_target,
    event_filter,
)
from core.webhooks.secret_keeper import WebhookSecretKeeper
from core.webhooks.signing_secrets import SecretOwner, WebhookSecretVersion


class EndpointWithSecret(msgspec.Struct, frozen=True, kw_only=True):
    endpoint: WebhookEndpoint
    secret: str


log = logging.getLogger("pictor.webhooks")


class WebhookEndpoints:
    """Registered endpoints (scope `webhooks:manage`): every read and write goes through the owner."""

    def __init__(
        self,
        *,
        database: Database,
        keeper: WebhookSecretKeeper,
        jobs: JobQueue,
        ids: Ids,
        clock: Clock,
        allow_private: bool,
    ) -> None:
        self._database = database
        self._keeper = keeper
        self._jobs = jobs
        self._ids = ids
        self._clock = clock
        self._allow_private = allow_private

    async def create(
        self, principal: Principal, url: str, events: Sequence[str] | None
    ) -> EndpointWithSecret:
        """A new active endpoint and its secret, which is shown this once."""
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        target = checked_target(url.strip(), allow_private=self._allow_private)
        wanted = event_filter(events)
        now = self._clock.now()
        endpoint = WebhookEndpoint(
            id=self._ids.new_id(),
            user_id=principal.user_id,
            url=target.url,
            events=wanted,
            created_at=now,
            updated_at=now,
        )
        version = await self._keeper.new_version(SecretOwner.ENDPOINT, endpoint.id, principal.user_id)
        async with self._database.unit_of_work() as uow:
            await uow.users.get_for_update(principal.user_id)  # concurrent creates count in turn
            if len(await uow.webhook_endpoints.list_for_user(principal.user_id)) >= MAX_ENDPOINTS_PER_USER:
                raise DomainError(
                    ErrorCode.CONFLICT, f"An account can register at most {MAX_ENDPOINTS_PER_USER} endpoints"
                )
            await uow.webhook_endpoints.add(endpoint)
            await uow.webhook_secrets.add(version)
            await uow.commit()
        return EndpointWithSecret(endpoint=endpoint, secret=await self._keeper.reveal(version))

    async def list(self, principal: Principal) -> builtins.list[WebhookEndpoint]:
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        async with self._database.unit_of_work() as uow:
            return await uow.webhook_endpoints.list_for_user(principal.user_id)

    async def get(self, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        async with self._database.unit_of_work() as uow:
            return await self._owned(uow, principal, endpoint_id)

    async def update(
        self,
        principal: Principal,
        endpoint_id: str,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        enabled: bool | None = None,
    ) -> WebhookEndpoint:
        """Change the URL or the event filter, or turn the endpoint off or on again (a 410 turns it
        off). Turning it off cancels its pending deliveries."""
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            endpoint = await self._owned(uow, principal, endpoint_id)
            changed = endpoint
            if url is not None:
                target = checked_target(url.strip(), allow_private=self._allow_private)
                changed = msgspec.structs.replace(changed, url=target.url)
            if events is not None:
                changed = msgspec.structs.replace(changed, events=event_filter(events))
            if enabled is True:
                changed = msgspec.structs.replace(changed, status=EndpointStatus.ACTIVE, disabled_reason=None)
            elif enabled is False and endpoint.status is EndpointStatus.ACTIVE:
                changed = msgspec.structs.replace(
                    changed, status=EndpointStatus.DISABLED, disabled_reason="disabled by its owner"
                )
                await uow.webhook_deliveries.cancel_pending_for_endpoint(
                    endpoint.id, "endpoint disabled", now
                )
            if changed != endpoint:
                changed = msgspec.structs.replace(changed, updated_at=now)
                await uow.webhook_endpoints.update(changed)
                await uow.commit()
            return changed

    async def delete(self, principal: Principal, endpoint_id: str) -> None:
        """Remove the endpoint and its secrets; its pending deliveries are canceled, the record of
        past ones stays."""
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        async with self._database.unit_of_work() as uow:
            endpoint = await self._owned(uow, principal, endpoint_id)
            await uow.webhook_deliveries.cancel_pending_for_endpoint(
                endpoint.id, "endpoint removed", self._clock.now()
            )
            await uow.webhook_endpoints.delete(principal.user_id, endpoint.id)
            await uow.commit()

    async def rotate_secret(self, principal: Principal, endpoint_id: str) -> tuple[str, WebhookSecretVersion]:
        """A new secret for the endpoint, shown this once; the previous one keeps signing alongside
        it for 24 hours, so the receiver can switch without losing a message."""
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        async with self._database.unit_of_work() as uow:
            endpoint = await self._owned(uow, principal, endpoint_id)
            version = await self._keeper.rotate(uow, SecretOwner.ENDPOINT, endpoint.id, principal.user_id)
            await uow.commit()
        return await self._keeper.reveal(version), version

    async def deliveries(
        self, principal: Principal, endpoint_id: str, *, cursor: str | None = None, limit: int | None = None
    ) -> tuple[builtins.list[WebhookDelivery], str | None]:
        """A page of the endpoint's deliveries, newest first, and the id the next page starts after."""
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        size = clamp_limit(limit)
        after = decode_cursor(cursor)
        async with self._database.unit_of_work() as uow:
            endpoint = await self._owned(uow, principal, endpoint_id)
            page = await uow.webhook_deliveries.list_for_endpoint(
                principal.user_id, endpoint.id, after=after, limit=size + 1
            )
        return page[:size], page[size - 1].id if len(page) > size else None

    async def retry(self, principal: Principal, endpoint_id: str, delivery_id: str) -> WebhookDelivery:
        """One more attempt of a finished delivery, now. A delivery still pending is retried by its
        schedule already (`409 invalid_state`), as is one whose endpoint is disabled."""
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        if not is_id(delivery_id):
            raise _no_delivery()
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            endpoint = await self._owned(uow, principal, endpoint_id)
            delivery = await uow.webhook_deliveries.get_for_update(delivery_id.lower())
            if (
                delivery is None
                or delivery.user_id != principal.user_id
                or delivery.endpoint_id != endpoint.id
            ):
                raise _no_delivery()
            if delivery.status is DeliveryStatus.PENDING:
                raise DomainError(
                    ErrorCode.INVALID_STATE, "The delivery is still pending; it is retried on schedule"
                )
            if endpoint.status is not EndpointStatus.ACTIVE:
                raise DomainError(ErrorCode.INVALID_STATE, "The endpoint is disabled; enable it first")
            again = retried_by_hand(delivery, now, now + DISPATCH_LEASE)
            await uow.webhook_deliveries.update(again)
            await uow.commit()
        await self._enqueue(deliver_job_spec(again))
        return again

    async def _enqueue(self, spec: JobSpec) -> None:
        try:
            await self._jobs.enqueue(spec)
        except Exception:  # the dispatcher finds the due delivery in the database on its next round
            log.warning(
                "could not enqueue a retried webhook delivery", extra={"job": spec.key}, exc_info=True
            )

    async def _owned(self, uow: UnitOfWork, principal: Principal, endpoint_id: str) -> WebhookEndpoint:
        endpoint = None
        if is_id(endpoint_id):
            endpoint = await uow.webhook_endpoints.get_for_user(principal.user_id, endpoint_id.lower())
        if endpoint is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No such webhook endpoint")
        return endpoint


class AccountWebhookSecret:
    """The account's secret that signs per-request `webhook_url` deliveries."""

    def __init__(self, *, database: Database, keeper: WebhookSecretKeeper) -> None:
        self._database = database
        self._keeper = keeper

    async def show(self, principal: Principal) -> tuple[str, WebhookSecretVersion]:
        """The current secret, made on first use."""
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        version = await self._keeper.account_secret(self._database, principal.user_id)
        return await self._keeper.reveal(version), version

    async def rotate(self, principal: Principal) -> tuple[str, WebhookSecretVersion]:
        """A new secret; the previous one keeps signing alongside it for 24 hours."""
        principal.require_scope(Scope.WEBHOOKS_MANAGE)
        async with self._database.unit_of_work() as uow:
            version = await self._keeper.rotate(
                uow, SecretOwner.ACCOUNT, principal.user_id, principal.user_id
            )
            await uow.commit()
        return await self._keeper.reveal(version), version


def _no_delivery() -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, "No such delivery")
