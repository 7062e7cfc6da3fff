"""Webhooks (API.md "Webhooks"): registered endpoints with their secrets and deliveries, and the
account's secret for per-request `webhook_url` deliveries. Every route needs `webhooks:manage`."""

from __future__ import annotations

from datetime import datetime
from typing import Final

import msgspec
from litestar import Controller, delete, get, patch, post
from litestar.params import FromPath, FromQuery, JSONBody

from core.errors import ErrorCode
from core.pagination import encode_cursor
from core.webhooks.deliveries import WebhookDelivery
from core.webhooks.endpoints import WebhookEndpoint
from core.webhooks.signing_secrets import WebhookSecretVersion
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.schemas import PageLimit
from entrypoints.http.svcs_plugin import SvcsContainer
from entrypoints.use_cases import account_webhook_secret_from, webhook_endpoints_from

WEBHOOK_ENDPOINTS_PATH: Final = "/v1/webhook-endpoints"
WEBHOOK_SECRET_PATH: Final = "/v1/webhook-secret"

_MANAGE_PROBLEMS = (ErrorCode.UNAUTHENTICATED, ErrorCode.INSUFFICIENT_SCOPE)
_ENDPOINT_PROBLEMS = (*_MANAGE_PROBLEMS, ErrorCode.NOT_FOUND)


class CreateEndpointBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    url: str
    events: list[str] | None = None  # absent, null or empty: every event type


class UpdateEndpointBody(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Only what is sent changes; an empty `events` list subscribes to every event type."""

    url: str | msgspec.UnsetType = msgspec.UNSET
    events: list[str] | msgspec.UnsetType = msgspec.UNSET
    enabled: bool | msgspec.UnsetType = msgspec.UNSET


class EndpointOut(msgspec.Struct, kw_only=True):
    id: str
    url: str
    events: list[str]  # empty: every event type
    status: str  # active, disabled
    disabled_reason: str | None  # why it stopped: its owner turned it off, or it answered 410 Gone
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, endpoint: WebhookEndpoint) -> EndpointOut:
        return cls(
            id=endpoint.id,
            url=endpoint.url,
            events=list(endpoint.events),
            status=endpoint.status.value,
            disabled_reason=endpoint.disabled_reason,
            created_at=endpoint.created_at,
            updated_at=endpoint.updated_at,
        )


class CreatedEndpointOut(EndpointOut, kw_only=True):
    secret: str  # `whsec_…`: shown only in this answer


class EndpointListOut(msgspec.Struct, kw_only=True):
    data: list[EndpointOut]


class SecretOut(msgspec.Struct, kw_only=True):
    secret: str  # `whsec_…`
    created_at: datetime  # when this version was made

    @classmethod
    def of(cls, secret: str, version: WebhookSecretVersion) -> SecretOut:
        return cls(secret=secret, created_at=version.created_at)


class DeliveryOut(msgspec.Struct, kw_only=True):
    id: str
    event_id: str  # also the `webhook-id` header, the same on every attempt
    event_type: str
    status: str  # pending, succeeded, failed, canceled
    attempts: int
    last_status_code: int | None  # None until an attempt got an answer
    next_attempt_at: datetime | None  # None once finished
    created_at: datetime
    last_error: str | None  # what went wrong when no answer came back, or why it was canceled
    last_attempt_at: datetime | None
    delivered_at: datetime | None

    @classmethod
    def of(cls, delivery: WebhookDelivery) -> DeliveryOut:
        return cls(
            id=delivery.id,
            event_id=delivery.event_id,
            event_type=delivery.event_type,
            status=delivery.status.value,
            attempts=delivery.attempts,
            last_status_code=delivery.last_status_code,
            next_attempt_at=delivery.next_attempt_at,
            created_at=delivery.created_at,
            last_error=delivery.last_error,
            last_attempt_at=delivery.last_attempt_at,
            delivered_at=delivery.delivered_at,
        )


class DeliveryListOut(msgspec.Struct, kw_only=True):
    data: list[DeliveryOut]
    next_cursor: str | None


class WebhookEndpointsController(Controller):
    path = WEBHOOK_ENDPOINTS_PATH
    tags = ["webhooks"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @post(
        "/",
        status_code=201,
        responses=problem_responses(*_MANAGE_PROBLEMS, ErrorCode.UNSAFE_URL, ErrorCode.CONFLICT),
    )
    async def create_endpoint(
        self, data: JSONBody[CreateEndpointBody], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> CreatedEndpointOut:
        """Register an `https` URL for the listed event types (all of them when `events` is left
        out). `secret` signs its deliveries and appears only in this answer. `422 unsafe_url` for
        private, loopback or link-local targets unless the server allows them."""
        endpoints = await webhook_endpoints_from(svcs_container)
        created = await endpoints.create(principal, data.url, data.events)
        return CreatedEndpointOut(
            **msgspec.structs.asdict(EndpointOut.of(created.endpoint)), secret=created.secret
        )

    @get("/", responses=problem_responses(*_MANAGE_PROBLEMS))
    async def list_endpoints(
        self, principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> EndpointListOut:
        """The caller's endpoints, newest first (without their secrets)."""
        endpoints = await webhook_endpoints_from(svcs_container)
        return EndpointListOut(data=[EndpointOut.of(e) for e in await endpoints.list(principal)])

    @get("/{endpoint_id:str}", responses=problem_responses(*_ENDPOINT_PROBLEMS))
    async def get_endpoint(
        self, endpoint_id: FromPath[str], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> EndpointOut:
        endpoints = await webhook_endpoints_from(svcs_container)
        return EndpointOut.of(await endpoints.get(principal, endpoint_id))

    @patch("/{endpoint_id:str}", responses=problem_responses(*_ENDPOINT_PROBLEMS, ErrorCode.UNSAFE_URL))
    async def update_endpoint(
        self,
        endpoint_id: FromPath[str],
        data: JSONBody[UpdateEndpointBody],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> EndpointOut:
        """Change the URL or the event filter, or turn the endpoint off (`enabled: false`, which
        cancels its pending deliveries) or on again, also after a `410 Gone` disabled it."""
        endpoints = await webhook_endpoints_from(svcs_container)
        updated = await endpoints.update(
            principal,
            endpoint_id,
            url=None if data.url is msgspec.UNSET else data.url,
            events=None if data.events is msgspec.UNSET else data.events,
            enabled=None if data.enabled is msgspec.UNSET else data.enabled,
        )
        return EndpointOut.of(updated)

    @delete("/{endpoint_id:str}", status_code=204, responses=problem_responses(*_ENDPOINT_PROBLEMS))
    async def delete_endpoint(
        self, endpoint_id: FromPath[str], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> None:
        """Remove the endpoint and its secrets; its pending deliveries are canceled."""
        endpoints = await webhook_endpoints_from(svcs_container)
        await endpoints.delete(principal, endpoint_id)

    @post(
        "/{endpoint_id:str}/secret/rotate",
        status_code=200,
        responses=problem_responses(*_ENDPOINT_PROBLEMS, ErrorCode.CONFLICT),
    )
    async def rotate_endpoint_secret(
        self, endpoint_id: FromPath[str], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> SecretOut:
        """A new secret, shown only in this answer. The previous one keeps signing alongside it
        for 24 hours (two `v1,` signatures), so the receiver can switch without losing a message."""
        endpoints = await webhook_endpoints_from(svcs_container)
        secret, version = await endpoints.rotate_secret(principal, endpoint_id)
        return SecretOut.of(secret, version)

    @get(
        "/{endpoint_id:str}/deliveries",
        responses=problem_responses(*_ENDPOINT_PROBLEMS, ErrorCode.INVALID_CURSOR),
    )
    async def list_deliveries(
        self,
        endpoint_id: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
        limit: PageLimit = None,
        cursor: FromQuery[str | None] = None,
    ) -> DeliveryListOut:
        """The endpoint's deliveries, newest first; pass `next_cursor` back as `cursor`."""
        endpoints = await webhook_endpoints_from(svcs_container)
        page, after = await endpoints.deliveries(principal, endpoint_id, cursor=cursor, limit=limit)
        return DeliveryListOut(
            data=[DeliveryOut.of(d) for d in page],
            next_cursor=None if after is None else encode_cursor(after),
        )

    @post(
        "/{endpoint_id:str}/deliveries/{delivery_id:str}/retry",
        status_code=202,
        responses=problem_responses(*_ENDPOINT_PROBLEMS, ErrorCode.INVALID_STATE),
    )
    async def retry_delivery(
        self,
        endpoint_id: FromPath[str],
        delivery_id: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> DeliveryOut:
        """Send a finished (failed, succeeded or canceled) delivery once more, now: `202` with the
        delivery, pending again. `409 invalid_state` while it is still pending (its schedule
        retries it) or when the endpoint is disabled."""
        endpoints = await webhook_endpoints_from(svcs_container)
        return DeliveryOut.of(await endpoints.retry(principal, endpoint_id, delivery_id))


class WebhookSecretController(Controller):
    path = WEBHOOK_SECRET_PATH
    tags = ["webhooks"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @get("/", responses=problem_responses(*_MANAGE_PROBLEMS))
    async def get_account_secret(
        self, principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> SecretOut:
        """The secret that signs deliveries to a generation's own `webhook_url`, made on first use."""
        account_secret = await account_webhook_secret_from(svcs_container)
        return SecretOut.of(*await account_secret.show(principal))

    @post("/rotate", status_code=200, responses=problem_responses(*_MANAGE_PROBLEMS, ErrorCode.CONFLICT))
    async def rotate_account_secret(
        self, principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> SecretOut:
        """A new account secret; the previous one keeps signing alongside it for 24 hours."""
        account_secret = await account_webhook_secret_from(svcs_container)
        return SecretOut.of(*await account_secret.rotate(principal))
