"""The webhook use cases over the in-memory fakes: fan-out from the outbox, lease-based dispatch,
signed attempts on a retry schedule, 410 and removal, rotation overlap, per-request URLs, manual
retries, a dead worker's lease, and quota notices."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import msgspec
import pytest

from adapters.memory.blob_store import MemoryBlobStore
from adapters.memory.mailer import MemoryMailer
from adapters.memory.secrets import MemorySecrets
from adapters.memory.webhook_transport import MemoryWebhookTransport, Reply
from adapters.storage.link_signer import LinkSigner
from core.accounts.principal import Principal
from core.errors import DomainError, ErrorCode
from core.event_handlers import SEND_QUOTA_NOTICE, QuotaNotices, audit_billing_changes, schedule_quota_notices
from core.events import GENERATION_FAILED, GENERATION_SUCCEEDED
from core.generations import generation as lifecycle
from core.generations.generation import GeneratedImage, Generation
from core.generations.requests import GenerationRequest
from core.generations.service import generation_event
from core.jobs import EMAIL, WEBHOOKS
from core.secrets import URL_SIGNING_KEY, WEBHOOK_SECRET_KEY
from core.use_cases.publish_outbox import publish_outbox
from core.webhooks.deliveries import DeliveryStatus, WebhookDelivery
from core.webhooks.delivery import (
    DISPATCH_LEASE,
    DeliveryReport,
    WebhookSender,
    deliver_job_spec,
    dispatch_due_deliveries,
)
from core.webhooks.endpoints import EndpointStatus
from core.webhooks.fan_out import WebhookFanOut
from core.webhooks.management import AccountWebhookSecret, WebhookEndpoints
from core.webhooks.secret_keeper import WebhookSecretKeeper
from core.webhooks.signing import WebhookVerificationError, verify
from core.webhooks.signing_secrets import ROTATION_OVERLAP
from tests.support.generation_world import GenerationWorld

SCHEDULE = (0.0, 5.0, 5.0)
HOOK = "https://hooks.example.com/pictor"


class WebhookWorld(GenerationWorld):
    def __init__(self) -> None:
        super().__init__()
        self.secrets = MemorySecrets({WEBHOOK_SECRET_KEY: ["master-1"], URL_SIGNING_KEY: ["links"]})
        self.transport = MemoryWebhookTransport(
            hosts={"hooks.example.com": ["93.184.216.34"]}, now=self.clock.now
        )
        self.blobs = MemoryBlobStore(
            clock=self.clock, link_signer=LinkSigner(self.secrets, self.clock, "https://pictor.example")
        )
        self.keeper = WebhookSecretKeeper(secrets=self.secrets, ids=self.ids, clock=self.clock)
        self.endpoints = WebhookEndpoints(
            database=self.database,
            keeper=self.keeper,
            jobs=self.jobs,
            ids=self.ids,
            clock=self.clock,
            allow_private=False,
        )
        self.account_secret = AccountWebhookSecret(database=self.database, keeper=self.keeper)
        self.fan_out = WebhookFanOut(ids=self.ids, clock=self.clock, schedule=SCHEDULE)
        self.sender = WebhookSender(
            database=self.database,
            transport=self.transport,
            keeper=self.keeper,
            blobs=self.blobs,
            ids=self.ids,
            clock=self.clock,
            schedule=SCHEDULE,
            link_lifetime=timedelta(hours=24),
        )

    async def finished_generation(self, owner: Principal, *, webhook_url: str | None = None) -> Generation:
        """A generation that succeeded with one stored image, its event in the outbox."""
        generation = await self.generations.accept(
            owner, GenerationRequest(prompt="a fox", webhook_url=webhook_url)
        )
        running = lifecycle.start(await self.stored(generation.id), self.clock.now())
        key = f"generations/{owner.user_id}/{generation.id}/0.png"
        await self.blobs.put(key, b"png-bytes", content_type="image/png")
        image = GeneratedImage(
            index=0, blob_key=key, content_type="image/png", width=64, height=64, bytes=9, sha256="0" * 64
        )
        done = lifecycle.succeed(running, [image], self.clock.now())
        async with self.database.unit_of_work() as uow:
            await uow.generations.update(done)
            await uow.usage.release(done.id, refund=False, at=self.clock.now())
            await uow.outbox.add(generation_event(done, event_id=self.ids.new_id(), now=self.clock.now()))
            await uow.commit()
        return done

    async def publish(self) -> int:
        return await publish_outbox(
            self.database,
            self.clock,
            [audit_billing_changes, schedule_quota_notices, self.fan_out],
            jobs=self.jobs,
        )

    def deliveries(self) -> list[WebhookDelivery]:
        return self.database.committed_webhook_deliveries()

    async def dispatch_and_run(self) -> list[DeliveryReport]:
        """What the relay and the `webhooks` workers do: dispatch what is due, run each job."""
        await dispatch_due_deliveries(self.database, self.jobs, self.clock)
        reports = []
        for delivery in self.deliveries():
            leased = delivery.locked_until is not None and delivery.locked_until > self.clock.now()
            if delivery.status is DeliveryStatus.PENDING and leased:
                spec = deliver_job_spec(delivery)
                assert await self.jobs.status(WEBHOOKS, spec.key or "") is not None  # it was enqueued
                reports.append(await self.sender.deliver(**spec.kwargs))
        return reports


@pytest.fixture
def world() -> WebhookWorld:
    return WebhookWorld()


def check_signed(request: Any, secret: str, now: int) -> dict[str, Any]:
    verify(secret, request.headers, request.body, now)
    body: dict[str, Any] = msgspec.json.decode(request.body)
    return body


async def test_a_succeeded_generation_reaches_the_endpoint_signed_with_fresh_image_links(
    world: WebhookWorld,
) -> None:
    ann = await world.user()
    created = await world.endpoints.create(ann, HOOK, None)
    assert created.secret.startswith("whsec_") and created.endpoint.status is EndpointStatus.ACTIVE
    generation = await world.finished_generation(ann)

    assert await world.publish() == 1
    [delivery] = world.deliveries()
    assert (delivery.endpoint_id, delivery.event_type, delivery.status) == (
        created.endpoint.id,
        GENERATION_SUCCEEDED,
        DeliveryStatus.PENDING,
    )
    assert await world.publish() == 0  # published once; a re-publication would add nothing either

    [report] = await world.dispatch_and_run()
    assert report.outcome == "succeeded" and report.status_code == 200 and report.lag_seconds == 0
    [request] = world.transport.sent_to(HOOK)
    body = check_signed(request, created.secret, int(world.clock.now().timestamp()))
    assert request.headers["webhook-id"] == delivery.event_id
    assert body["type"] == GENERATION_SUCCEEDED and body["data"]["id"] == generation.id
    [image] = body["data"]["images"]
    assert image["url"].startswith("https://pictor.example/v1/files/") and image["sha256"] == "0" * 64
    [done] = world.deliveries()
    assert done.status is DeliveryStatus.SUCCEEDED and done.attempts == 1 and done.locked_until is None


async def test_a_receiver_failing_twice_gets_the_same_message_three_times_and_accepts_it_once(
    world: WebhookWorld,
) -> None:
    ann = await world.user()
    created = await world.endpoints.create(ann, HOOK, [GENERATION_SUCCEEDED])
    world.transport.script(HOOK, Reply(status_code=500), Reply(status_code=503, retry_after_seconds=7))
    await world.finished_generation(ann)
    await world.publish()

    assert [r.outcome for r in await world.dispatch_and_run()] == ["retrying"]
    assert await world.dispatch_and_run() == []  # not due yet: the schedule says 5 s (±10 %)
    world.clock.advance(6)
    assert [r.outcome for r in await world.dispatch_and_run()] == ["retrying"]
    world.clock.advance(6)
    assert await world.dispatch_and_run() == []  # Retry-After: 7 outlasts the 5 s step
    world.clock.advance(2)
    assert [r.outcome for r in await world.dispatch_and_run()] == ["succeeded"]

    requests = world.transport.sent_to(HOOK)
    assert len(requests) == 3 and len({r.headers["webhook-id"] for r in requests}) == 1
    for request in requests:
        check_signed(request, created.secret, int(request.sent_at.timestamp()))
    [delivery] = world.deliveries()
    assert (delivery.status, delivery.attempts, delivery.last_status_code) == (
        DeliveryStatus.SUCCEEDED,
        3,
        200,
    )
    page, _ = await world.endpoints.deliveries(ann, created.endpoint.id)
    assert page == [delivery]


async def test_the_schedule_runs_out_and_the_owner_retries_by_hand(world: WebhookWorld) -> None:
    ann = await world.user()
    created = await world.endpoints.create(ann, HOOK, None)
    world.transport.script(HOOK, *[Reply.timeout()] * 3)
    await world.finished_generation(ann)
    await world.publish()
    for _ in range(3):
        await world.dispatch_and_run()
        world.clock.advance(6)
    [failed] = world.deliveries()
    assert (
        failed.status is DeliveryStatus.FAILED
        and failed.attempts == 3
        and failed.last_error == "timeout after 15s"
    )

    again = await world.endpoints.retry(ann, created.endpoint.id, failed.id)
    assert again.status is DeliveryStatus.PENDING
    job = await world.jobs.status(WEBHOOKS, deliver_job_spec(again).key or "")
    assert job is not None  # enqueued at once, not left to the next dispatch round
    with pytest.raises(DomainError) as pending:  # on its way: the job will make the attempt
        await world.endpoints.retry(ann, created.endpoint.id, again.id)
    assert pending.value.code is ErrorCode.INVALID_STATE
    assert (await world.sender.deliver(**deliver_job_spec(again).kwargs)).outcome == "succeeded"
    [delivered] = world.deliveries()
    assert (delivered.status, delivered.attempts) == (DeliveryStatus.SUCCEEDED, 4)
    assert len({r.headers["webhook-id"] for r in world.transport.sent_to(HOOK)}) == 1


async def test_stale_and_duplicate_jobs_send_nothing_and_a_dead_senders_lease_runs_out(
    world: WebhookWorld,
) -> None:
    ann = await world.user()
    await world.endpoints.create(ann, HOOK, None)
    await world.finished_generation(ann)
    await world.publish()
    await dispatch_due_deliveries(world.database, world.jobs, world.clock)
    [dispatched] = world.deliveries()
    first_job = deliver_job_spec(dispatched)

    # The job never ran (its queue lost it): after the dispatch lease the delivery is dispatched again.
    world.clock.advance(DISPATCH_LEASE.total_seconds())
    assert await dispatch_due_deliveries(world.database, world.jobs, world.clock) == 1
    [redispatched] = world.deliveries()
    second_job = deliver_job_spec(redispatched)
    assert second_job.key != first_job.key
    assert (await world.sender.deliver(**first_job.kwargs)).outcome == "skipped"  # stale: the lease moved on

    # A worker takes the delivery and dies while sending: nothing is recorded, the lease runs out.
    assert redispatched.locked_until is not None
    async with world.database.unit_of_work() as uow:
        taken = await uow.webhook_deliveries.start_attempt(
            redispatched.id, 1, redispatched.locked_until, world.clock.now() + timedelta(seconds=20)
        )
        await uow.commit()
    assert taken is not None
    assert (await world.sender.deliver(**second_job.kwargs)).outcome == "skipped"  # taken by the dead one
    assert await dispatch_due_deliveries(world.database, world.jobs, world.clock) == 0  # its lease holds
    world.clock.advance(20)
    assert [r.outcome for r in await world.dispatch_and_run()] == ["succeeded"]
    assert len(world.transport.sent_to(HOOK)) == 1


async def test_410_disables_the_endpoint_and_cancels_its_other_deliveries(world: WebhookWorld) -> None:
    ann = await world.user()
    created = await world.endpoints.create(ann, HOOK, None)
    world.transport.script(HOOK, Reply(status_code=410))
    await world.finished_generation(ann)
    await world.finished_generation(ann)
    await world.publish()
    await dispatch_due_deliveries(world.database, world.jobs, world.clock)
    first, second = sorted(world.deliveries(), key=lambda d: d.id)
    assert (await world.sender.deliver(**deliver_job_spec(first).kwargs)).outcome == "gone"
    endpoint = await world.endpoints.get(ann, created.endpoint.id)
    assert endpoint.status is EndpointStatus.DISABLED and "410" in (endpoint.disabled_reason or "")
    states = {d.id: d.status for d in world.deliveries()}
    assert states == {first.id: DeliveryStatus.FAILED, second.id: DeliveryStatus.CANCELED}
    assert (await world.sender.deliver(**deliver_job_spec(second).kwargs)).outcome == "skipped"
    with pytest.raises(DomainError) as disabled:
        await world.endpoints.retry(ann, created.endpoint.id, first.id)
    assert disabled.value.code is ErrorCode.INVALID_STATE
    # Its owner turns it on again; new events flow, and the failed one can be retried.
    await world.endpoints.update(ann, created.endpoint.id, enabled=True)
    await world.endpoints.update(ann, created.endpoint.id, url=HOOK + "/fixed")
    await world.endpoints.retry(ann, created.endpoint.id, first.id)  # its job is enqueued at once
    assert [r.outcome for r in await world.dispatch_and_run()] == ["succeeded"]
    assert len(world.transport.sent_to(HOOK + "/fixed")) == 1  # the endpoint's URL of now


async def test_a_removed_endpoint_gets_nothing_more_and_keeps_its_record(world: WebhookWorld) -> None:
    ann = await world.user()
    created = await world.endpoints.create(ann, HOOK, None)
    await world.finished_generation(ann)
    await world.publish()
    await world.endpoints.delete(ann, created.endpoint.id)
    assert await world.dispatch_and_run() == []
    [delivery] = world.deliveries()
    assert delivery.status is DeliveryStatus.CANCELED and delivery.last_error == "endpoint removed"
    assert world.transport.requests == []
    with pytest.raises(DomainError) as gone:
        await world.endpoints.get(ann, created.endpoint.id)
    assert gone.value.code is ErrorCode.NOT_FOUND


async def test_filters_and_owners_decide_who_gets_an_event(world: WebhookWorld) -> None:
    ann, bob = await world.user(), await world.user("bob@example.com")
    await world.endpoints.create(ann, HOOK, [GENERATION_FAILED])
    await world.endpoints.create(bob, HOOK + "/bob", None)
    await world.finished_generation(ann)
    await world.publish()
    assert world.deliveries() == []  # Ann wants failures only; Bob's endpoint is not Ann's
    [bobs] = await world.endpoints.list(bob)
    assert [e.id for e in await world.endpoints.list(ann)] != [bobs.id]
    with pytest.raises(DomainError) as foreign:
        await world.endpoints.get(ann, bobs.id)
    assert foreign.value.code is ErrorCode.NOT_FOUND


async def test_rotation_signs_with_both_secrets_for_the_overlap_then_the_new_one_only(
    world: WebhookWorld,
) -> None:
    ann = await world.user()
    created = await world.endpoints.create(ann, HOOK, None)
    new_secret, _ = await world.endpoints.rotate_secret(ann, created.endpoint.id)
    assert new_secret != created.secret
    await world.finished_generation(ann)
    await world.publish()
    await world.dispatch_and_run()
    [request] = world.transport.requests
    now = int(world.clock.now().timestamp())
    assert len(request.headers["webhook-signature"].split(" ")) == 2
    check_signed(request, new_secret, now)
    check_signed(request, created.secret, now)

    world.clock.advance(ROTATION_OVERLAP.total_seconds())
    await world.finished_generation(ann)
    await world.publish()
    await world.dispatch_and_run()
    latest = world.transport.requests[-1]
    later = int(world.clock.now().timestamp())
    check_signed(latest, new_secret, later)
    with pytest.raises(WebhookVerificationError):
        check_signed(latest, created.secret, later)


async def test_a_generations_own_webhook_url_is_signed_with_the_account_secret(world: WebhookWorld) -> None:
    ann = await world.user()
    own = "https://hooks.example.com/own?generation=1"
    await world.finished_generation(ann, webhook_url=own)
    await world.publish()
    [report] = await world.dispatch_and_run()
    assert report.outcome == "succeeded"
    shown, _ = await world.account_secret.show(ann)  # made on first use, by the delivery
    assert (await world.account_secret.show(ann))[0] == shown
    [request] = world.transport.sent_to(own)
    check_signed(request, shown, int(world.clock.now().timestamp()))
    rotated, _ = await world.account_secret.rotate(ann)
    assert rotated != shown and (await world.account_secret.show(ann))[0] == rotated


async def test_unsafe_urls_are_refused_at_registration_and_at_delivery(world: WebhookWorld) -> None:
    ann = await world.user()
    for url in ("https://127.0.0.1/", "https://10.0.0.1/", "https://169.254.169.254/", "https://[::1]/"):
        with pytest.raises(DomainError) as refused:
            await world.endpoints.create(ann, url, None)
        assert refused.value.code is ErrorCode.UNSAFE_URL
    with pytest.raises(DomainError) as own:
        await world.generations.accept(ann, GenerationRequest(prompt="x", webhook_url="https://10.0.0.1/in"))
    assert own.value.code is ErrorCode.UNSAFE_URL
    # A name that resolves to a private address passes registration and is refused when sending.
    world.transport.set_host("internal.example.com", ["10.1.2.3"])
    await world.endpoints.create(ann, "https://internal.example.com/in", None)
    await world.finished_generation(ann)
    await world.publish()
    [report] = await world.dispatch_and_run()
    assert report.outcome == "retrying" and world.transport.requests == []
    [delivery] = world.deliveries()
    assert (delivery.last_error or "").startswith("unsafe target")


async def test_a_retired_master_key_version_fails_attempts_clearly_until_fixed(world: WebhookWorld) -> None:
    ann = await world.user()
    created = await world.endpoints.create(ann, HOOK, None)
    await world.finished_generation(ann)
    await world.publish()
    world.secrets.rotate(WEBHOOK_SECRET_KEY, "master-2")
    world.secrets.retire(WEBHOOK_SECRET_KEY, (await world.secrets.versions(WEBHOOK_SECRET_KEY))[-1].version)
    [report] = await world.dispatch_and_run()
    assert report.outcome == "retrying" and world.transport.requests == []
    [delivery] = world.deliveries()
    assert (delivery.last_error or "").startswith("signing secret unavailable")
    # Rotating the endpoint's secret makes one from the current master key; delivery resumes,
    # signed with what can still be derived.
    new_secret, _ = await world.endpoints.rotate_secret(ann, created.endpoint.id)
    world.clock.advance(6)
    assert [r.outcome for r in await world.dispatch_and_run()] == ["succeeded"]
    [request] = world.transport.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    check_signed(request, new_secret, int(world.clock.now().timestamp()))


async def test_quota_thresholds_send_one_notice_each(world: WebhookWorld) -> None:
    ann = await world.user()
    for _ in range(5):  # the free plan here allows 6 images: 80 % after 5
        reservation = world.ids.new_id()
        await world.quotas.reserve(ann.user_id, ann.plan, reservation, 1)
        await world.quotas.settle(reservation)
    await world.publish()
    [event] = [m for m in world.database.committed_outbox() if m.type == "quota.threshold_reached"]
    job = await world.jobs.status(EMAIL, f"quota-notice:{event.id}")
    assert job is not None and job.function == SEND_QUOTA_NOTICE
    mailer = MemoryMailer()
    notices = QuotaNotices(database=world.database, mailer=mailer, app_url="https://app.example")
    assert await notices.send(ann.user_id, 80, 5, 6, world.clock.now().isoformat())
    message = mailer.last_to(ann.user.email, kind="quota_notice")
    assert message is not None and "80%" in message.subject and "https://app.example/billing" in message.text
