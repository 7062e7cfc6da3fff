"""The ops alert webhook: signed so that `standardwebhooks` verifies it (with either version during a
rotation, and with a plain generated secret as well as a `whsec_` one), retried briefly, never
retried when retrying cannot help."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import msgspec
import pytest
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

from adapters.memory.clock import ManualClock
from adapters.memory.secrets import MemorySecrets
from adapters.memory.webhook_transport import MemoryWebhookTransport, Reply
from core.error_tracking.alerts import OPS_WEBHOOK_SECRET, Alert, signing_secret
from core.error_tracking.notify import OpsAlertSender
from core.errors import DomainError, ErrorCode

URL = "http://127.0.0.1:9/ops"
NOW = datetime.now(UTC).replace(microsecond=0)
OLD = "whsec_" + base64.b64encode(b"o" * 32).decode()
NEW = "a-generated-token-of-forty-three-characters"  # what `pictor secrets rotate` makes

ALERT = Alert(
    id="01J-alert",
    alert="http_5xx_rate",
    queue=None,
    summary="HTTP 5xx rate is 50.0% (10 of 20) over the last 300 s, above the 5.0% threshold",
    rate=0.5,
    threshold=0.05,
    failed=10,
    total=20,
    window_seconds=300,
    cooldown_seconds=900,
    triggered_at=NOW,
)


class Sleeps:
    def __init__(self) -> None:
        self.slept: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.slept.append(seconds)


def sender(secrets: MemorySecrets, transport: MemoryWebhookTransport, sleep: Sleeps) -> OpsAlertSender:
    # The clock reads the time of the test, not of the module's import: the reference verifier
    # accepts signatures five minutes either way of the real time, and a full run takes longer.
    clock = ManualClock(datetime.now(UTC).replace(microsecond=0))
    return OpsAlertSender(url=URL, secrets=secrets, transport=transport, clock=clock, sleep=sleep)


async def test_every_live_version_signs_so_a_rotation_breaks_no_receiver() -> None:
    transport = MemoryWebhookTransport(allow_private=True)
    secrets = MemorySecrets({OPS_WEBHOOK_SECRET: [NEW, OLD]})  # newest first

    result = await sender(secrets, transport, Sleeps()).send(ALERT)

    assert result.succeeded
    (request,) = transport.sent_to(URL)
    assert request.headers["webhook-id"] == ALERT.id
    assert request.headers["webhook-timestamp"].isdigit()
    # Receivers that know only the old version, or only the new one (as its raw bytes or as whsec_).
    for receiver in (Webhook(OLD), Webhook(NEW.encode()), Webhook(signing_secret(NEW) or "")):
        payload = receiver.verify(request.body, request.headers)
        assert payload["type"] == "ops.alert"
        assert msgspec.convert(payload["data"], Alert, strict=False) == ALERT
    with pytest.raises(WebhookVerificationError):
        Webhook("whsec_" + base64.b64encode(b"x" * 32).decode()).verify(request.body, request.headers)


async def test_a_failing_receiver_gets_two_more_tries_then_the_last_answer_is_reported() -> None:
    transport = MemoryWebhookTransport(allow_private=True)
    transport.script(URL, Reply(status_code=503), Reply(status_code=502), Reply(status_code=500))
    sleeps = Sleeps()

    result = await sender(MemorySecrets({OPS_WEBHOOK_SECRET: [OLD]}), transport, sleeps).send(ALERT)

    assert (result.status_code, len(transport.sent_to(URL)), sleeps.slept) == (500, 3, [1.0, 5.0])


async def test_a_retry_that_succeeds_ends_the_sending() -> None:
    transport = MemoryWebhookTransport(allow_private=True)
    transport.script(URL, Reply.refused(), Reply(status_code=204))
    result = await sender(MemorySecrets({OPS_WEBHOOK_SECRET: [OLD]}), transport, Sleeps()).send(ALERT)
    assert result.status_code == 204 and len(transport.sent_to(URL)) == 2


async def test_answers_that_retrying_cannot_change_are_not_retried() -> None:
    transport = MemoryWebhookTransport(allow_private=True)
    transport.script(URL, Reply(status_code=401))
    secrets = MemorySecrets({OPS_WEBHOOK_SECRET: [OLD]})
    assert (await sender(secrets, transport, Sleeps()).send(ALERT)).status_code == 401
    assert len(transport.sent_to(URL)) == 1

    guarded = MemoryWebhookTransport(allow_private=False)  # plain http to loopback is refused
    result = await sender(secrets, guarded, Sleeps()).send(ALERT)
    assert result.error is not None and result.error.startswith("unsafe target") and not guarded.requests


@pytest.mark.parametrize("values", [[], ["too-short"], ["whsec_not*base64"]])
async def test_no_usable_secret_is_a_secret_missing_error(values: list[str]) -> None:
    transport = MemoryWebhookTransport(allow_private=True)
    with pytest.raises(DomainError) as raised:
        await sender(MemorySecrets({OPS_WEBHOOK_SECRET: values}), transport, Sleeps()).send(ALERT)
    assert raised.value.code is ErrorCode.SECRET_MISSING and not transport.requests


async def test_a_malformed_version_does_not_stop_the_others() -> None:
    transport = MemoryWebhookTransport(allow_private=True)
    secrets = MemorySecrets({OPS_WEBHOOK_SECRET: ["short", OLD]})
    assert (await sender(secrets, transport, Sleeps()).send(ALERT)).succeeded
    (request,) = transport.requests
    assert len(request.headers["webhook-signature"].split(" ")) == 1
    Webhook(OLD).verify(request.body, request.headers)
