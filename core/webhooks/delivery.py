"""Sending webhook deliveries: the `webhooks` job's use case, and the dispatcher that enqueues it."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import msgspec

from core.errors import DomainError, ErrorCode
from core.events import GENERATION_SUCCEEDED
from core.generations.generation import Generation
from core.jobs import WEBHOOKS, JobSpec
from core.ports import BlobStore, Clock, Database, Ids, JobQueue, UnitOfWork
from core.ports import WebhookTransport as Transport
from core.webhooks.deliveries import (
    ATTEMPT_TIMEOUT_SECONDS,
    AttemptOutcome,
    AttemptResult,
    WebhookDelivery,
    canceled,
    record_attempt,
)
from core.webhooks.endpoints import EndpointStatus
from core.webhooks.secret_keeper import WebhookSecretKeeper
from core.webhooks.signing import signature_header
from core.webhooks.signing_secrets import SecretOwner

log = logging.getLogger("pictor.webhooks")

DELIVER_WEBHOOK = "deliver_webhook"
DISPATCH_LEASE = timedelta(seconds=60)  # a dispatched job that never ran is dispatched again after this
# Beyond the attempt's timeout, before a silent sender counts as dead and its lease runs out.
SEND_LEASE_MARGIN = timedelta(seconds=5)


class DeliveryReport(msgspec.Struct, frozen=True, kw_only=True):
    """What one `webhooks` job did, for logs and metrics."""

    outcome: str  # an AttemptOutcome, or `skipped` (duplicate job) / `canceled` (endpoint gone)
    event_type: str | None = None
    status_code: int | None = None
    duration_seconds: float | None = None  # the HTTP attempt
    lag_seconds: float | None = None  # from the event to a successful delivery


def deliver_job_spec(delivery: WebhookDelivery) -> JobSpec:
    """The job that makes the next attempt of a dispatched (leased) delivery; one per dispatch."""
    if delivery.locked_until is None:
        raise ValueError("only a dispatched delivery has a job")
    attempt = delivery.attempts + 1
    dispatched_until = delivery.locked_until.isoformat()
    return JobSpec(
        queue=WEBHOOKS,
        function=DELIVER_WEBHOOK,
        kwargs={"delivery_id": delivery.id, "attempt": attempt, "dispatched_until": dispatched_until},
        key=f"webhook:{delivery.id}:{attempt}:{dispatched_until}",
        timeout_seconds=ATTEMPT_TIMEOUT_SECONDS + SEND_LEASE_MARGIN.total_seconds(),
        attempts=1,  # the delivery's own schedule retries, not the queue
    )


async def dispatch_due_deliveries(
    database: Database, jobs: JobQueue, clock: Clock, *, limit: int = 200
) -> int:
    """Lease the deliveries that are due and enqueue a job for each; returns how many.

    A job lost on the way (the queue was flushed, the enqueue failed, its worker died) leaves a
    lease that runs out, and the delivery is dispatched again with a new lease, which the old job
    can no longer take: deliveries wait in the database, never only in the queue.
    """
    now = clock.now()
    async with database.unit_of_work() as uow:
        due = await uow.webhook_deliveries.claim_due(now, limit, now + DISPATCH_LEASE)
        await uow.commit()
    for delivery in due:
        try:
            await jobs.enqueue(deliver_job_spec(delivery))
        except Exception:
            log.warning(
                "could not enqueue a webhook delivery", extra={"delivery_id": delivery.id}, exc_info=True
            )
    return len(due)


class WebhookSender:
    """Makes one attempt of one delivery: sign, send, record the outcome."""

    def __init__(
        self,
        *,
        database: Database,
        transport: Transport,
        keeper: WebhookSecretKeeper,
        blobs: BlobStore,
        ids: Ids,
        clock: Clock,
        schedule: Sequence[float],
        link_lifetime: timedelta,
    ) -> None:
        self._database = database
        self._transport = transport
        self._keeper = keeper
        self._blobs = blobs
        self._ids = ids
        self._clock = clock
        self._schedule = tuple(schedule)
        self._link_lifetime = link_lifetime

    async def deliver(self, delivery_id: str, attempt: int, dispatched_until: str) -> DeliveryReport:
        """Make attempt `attempt` of the delivery, if the dispatch `dispatched_until` (the lease it
        set) still holds it; a duplicate or stale job does nothing (`skipped`)."""
        lease_until = self._clock.now() + timedelta(seconds=ATTEMPT_TIMEOUT_SECONDS) + SEND_LEASE_MARGIN
        dispatch = datetime.fromisoformat(dispatched_until)
        async with self._database.unit_of_work() as uow:
            delivery = await uow.webhook_deliveries.start_attempt(delivery_id, attempt, dispatch, lease_until)
            if delivery is None:
                return DeliveryReport(outcome="skipped")
            endpoint = None
            if delivery.endpoint_id is not None:
                endpoint = await uow.webhook_endpoints.get(delivery.endpoint_id)
                if endpoint is None or endpoint.status is not EndpointStatus.ACTIVE:
                    reason = "endpoint removed" if endpoint is None else "endpoint disabled"
                    await uow.webhook_deliveries.update(canceled(delivery, reason, self._clock.now()))
                    await uow.commit()
                    return DeliveryReport(outcome="canceled", event_type=delivery.event_type)
                owner, owner_id = SecretOwner.ENDPOINT, delivery.endpoint_id
            else:
                owner, owner_id = SecretOwner.ACCOUNT, delivery.user_id
            # Everything the attempt reads, read with the lease: the secrets' versions and the
            # generation whose images the body links to.
            versions = await uow.webhook_secrets.live(owner, owner_id, self._clock.now())
            generation = None
            if delivery.event_type == GENERATION_SUCCEEDED:
                generation = await uow.generations.get_for_user(delivery.user_id, str(delivery.data["id"]))
            await uow.commit()
        # An endpoint's deliveries go to its URL of now: an owner who fixed a wrong URL and retries
        # reaches the fixed one.
        url = delivery.url if endpoint is None else endpoint.url
        try:
            if not versions and owner is SecretOwner.ACCOUNT:  # the account's secret: made on first use
                versions = [await self._keeper.account_secret(self._database, delivery.user_id)]
            secrets = await self._keeper.signing_secrets(versions)
        except DomainError as error:
            if error.code is not ErrorCode.SECRET_MISSING:
                raise
            # An operator retired a master key version still in use: retried on schedule meanwhile.
            log.error("webhook signing secret unavailable", extra={"delivery_id": delivery.id}, exc_info=True)
            return await self._record(
                delivery, AttemptResult(error=f"signing secret unavailable: {error.detail}")
            )
        body = msgspec.json.encode(
            {
                "type": delivery.event_type,
                "timestamp": delivery.event_occurred_at,
                "data": await self._data(delivery, generation),
            }
        )
        sent_at = self._clock.now()
        timestamp = int(sent_at.timestamp())
        headers = {
            "webhook-id": delivery.event_id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": signature_header(secrets, delivery.event_id, timestamp, body),
            "content-type": "application/json",
        }
        result = await self._transport.send(
            url, headers=headers, body=body, timeout_seconds=ATTEMPT_TIMEOUT_SECONDS
        )
        return await self._record(delivery, result)

    async def _record(self, sent: WebhookDelivery, result: AttemptResult) -> DeliveryReport:
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            current = await uow.webhook_deliveries.get_for_update(sent.id)
            if current is None or current.is_finished or current.attempts != sent.attempts:
                return DeliveryReport(
                    outcome="skipped", event_type=sent.event_type
                )  # retried by hand meanwhile
            updated, outcome = record_attempt(
                current, result, now=now, schedule=self._schedule, jitter=self._ids.random()
            )
            await uow.webhook_deliveries.update(updated)
            if outcome is AttemptOutcome.GONE and updated.endpoint_id is not None:
                await self._disable_endpoint(uow, updated.endpoint_id, now)
            await uow.commit()
        lag = (now - sent.event_occurred_at).total_seconds() if outcome is AttemptOutcome.SUCCEEDED else None
        if outcome is not AttemptOutcome.SUCCEEDED:
            log.info(
                "webhook attempt failed",
                extra={
                    "delivery_id": sent.id,
                    "outcome": outcome.value,
                    "status_code": result.status_code,
                    "error": result.error,
                },
            )
        return DeliveryReport(
            outcome=outcome.value,
            event_type=sent.event_type,
            status_code=result.status_code,
            duration_seconds=result.duration_seconds,
            lag_seconds=lag,
        )

    async def _disable_endpoint(self, uow: UnitOfWork, endpoint_id: str, now: datetime) -> None:
        """410 Gone: the receiver asked us to stop. The endpoint is disabled (its owner can enable
        it again) and its other pending deliveries are canceled."""
        endpoint = await uow.webhook_endpoints.get(endpoint_id)
        if endpoint is not None and endpoint.status is EndpointStatus.ACTIVE:
            await uow.webhook_endpoints.update(
                msgspec.structs.replace(
                    endpoint,
                    status=EndpointStatus.DISABLED,
                    disabled_reason="the receiver answered 410 Gone",
                    updated_at=now,
                )
            )
        await uow.webhook_deliveries.cancel_pending_for_endpoint(
            endpoint_id, "endpoint disabled (410 Gone)", now
        )

    async def _data(self, delivery: WebhookDelivery, generation: Generation | None) -> dict[str, Any]:
        """The delivery's data, with fresh signed links to a succeeded generation's images."""
        if delivery.event_type != GENERATION_SUCCEEDED:
            return delivery.data
        images: list[dict[str, Any]] = []
        if generation is not None and generation.images_expired_at is None:
            for image in generation.images:
                link = await self._blobs.signed_url(image.blob_key, expires_in=self._link_lifetime)
                images.append(
                    {
                        "index": image.index,
                        "url": link.url,
                        "url_expires_at": link.expires_at,
                        "content_type": image.content_type,
                        "width": image.width,
                        "height": image.height,
                        "bytes": image.bytes,
                        "sha256": image.sha256,
                    }
                )
        return {**delivery.data, "images": images}
