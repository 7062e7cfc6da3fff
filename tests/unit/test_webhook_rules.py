"""The pure webhook rules: retry schedule, delivery transitions, derived secrets and their rotation,
event filters and target checks at registration."""

from __future__ import annotations

import base64
import time
from datetime import UTC, datetime, timedelta

import pytest
import standardwebhooks
from hypothesis import given
from hypothesis import strategies as st

from core.errors import DomainError, ErrorCode
from core.events import EVENT_TYPES
from core.webhooks.deliveries import (
    JITTER,
    MAX_RETRY_AFTER_SECONDS,
    SVIX_SCHEDULE_SECONDS,
    AttemptOutcome,
    AttemptResult,
    DeliveryStatus,
    WebhookDelivery,
    canceled,
    new_delivery,
    parse_schedule,
    record_attempt,
    retried_by_hand,
    retry_delay_seconds,
)
from core.webhooks.endpoints import EndpointStatus, WebhookEndpoint, checked_target, event_filter
from core.webhooks.signing import signature_header
from core.webhooks.signing_secrets import (
    ROTATION_OVERLAP,
    SecretOwner,
    WebhookSecretVersion,
    derive_secret,
    live_versions,
    new_version,
    retire,
)

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
MASTER = "master-key-0123456789abcdef0123456789abcdef"


def delivery(schedule: tuple[float, ...] = SVIX_SCHEDULE_SECONDS) -> WebhookDelivery:
    return new_delivery(
        id="d1",
        user_id="u1",
        endpoint_id="e1",
        url="https://hooks.example.com/in",
        event_id="ev1",
        event_type="generation.succeeded",
        event_occurred_at=T0,
        data={"id": "g1"},
        schedule=schedule,
        now=T0,
    )


# --- retry schedule ---


def test_a_new_delivery_is_due_at_once_with_the_schedules_attempts() -> None:
    fresh = delivery()
    assert fresh.status is DeliveryStatus.PENDING and fresh.attempts == 0
    assert fresh.max_attempts == len(SVIX_SCHEDULE_SECONDS) == 8
    assert fresh.next_attempt_at == T0 and fresh.is_due(T0)
    assert not fresh.is_due(T0 - timedelta(seconds=1))
    leased = WebhookDelivery(**{**_fields(fresh), "locked_until": T0 + timedelta(seconds=60)})
    assert not leased.is_due(T0) and leased.is_due(T0 + timedelta(seconds=60))


def _fields(d: WebhookDelivery) -> dict[str, object]:
    return {f: getattr(d, f) for f in d.__struct_fields__}


@pytest.mark.parametrize("attempts_made", range(1, 8))
def test_the_delay_follows_svixs_schedule_within_the_jitter(attempts_made: int) -> None:
    step = SVIX_SCHEDULE_SECONDS[attempts_made]
    low = retry_delay_seconds(attempts_made, SVIX_SCHEDULE_SECONDS, jitter=0.0)
    mid = retry_delay_seconds(attempts_made, SVIX_SCHEDULE_SECONDS, jitter=0.5)
    high = retry_delay_seconds(attempts_made, SVIX_SCHEDULE_SECONDS, jitter=0.999999)
    assert low == pytest.approx(step * (1 - JITTER)) and mid == pytest.approx(step)
    assert high == pytest.approx(step * (1 + JITTER), rel=1e-5)


@given(
    attempts_made=st.integers(min_value=1, max_value=50),
    jitter=st.floats(min_value=0.0, max_value=0.999999),
    retry_after=st.none() | st.floats(min_value=0.0, max_value=10 * MAX_RETRY_AFTER_SECONDS),
)
def test_a_delay_is_never_shorter_than_the_step_minus_jitter_nor_retry_after(
    attempts_made: int, jitter: float, retry_after: float | None
) -> None:
    delay = retry_delay_seconds(
        attempts_made, SVIX_SCHEDULE_SECONDS, jitter=jitter, retry_after_seconds=retry_after
    )
    step = SVIX_SCHEDULE_SECONDS[min(attempts_made, len(SVIX_SCHEDULE_SECONDS) - 1)]
    assert step * (1 - JITTER) - 1e-9 <= delay <= max(step * (1 + JITTER), MAX_RETRY_AFTER_SECONDS)
    if retry_after is not None:
        assert delay >= min(retry_after, MAX_RETRY_AFTER_SECONDS) - 1e-9


def test_retry_after_beyond_a_day_is_capped() -> None:
    assert retry_delay_seconds(1, (0, 5), jitter=0.5, retry_after_seconds=10**9) == MAX_RETRY_AFTER_SECONDS
    assert retry_delay_seconds(1, (0, 5), jitter=0.5, retry_after_seconds=2) == pytest.approx(
        5
    )  # shorter: schedule


def test_delay_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        retry_delay_seconds(0, SVIX_SCHEDULE_SECONDS, jitter=0.5)
    with pytest.raises(ValueError):
        retry_delay_seconds(1, SVIX_SCHEDULE_SECONDS, jitter=1.0)


@pytest.mark.parametrize(
    ("text", "steps"), [("0,5,300", (0.0, 5.0, 300.0)), ("0", (0.0,)), (" 0 , 0.5 ", (0.0, 0.5))]
)
def test_schedules_parse_from_configuration(text: str, steps: tuple[float, ...]) -> None:
    assert parse_schedule(text) == steps


@pytest.mark.parametrize("text", ["", "a,b", "0,-1", "0,,5", "nan", "inf"])
def test_bad_schedules_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_schedule(text)


# --- attempts ---


def test_a_2xx_succeeds_and_releases_the_lease() -> None:
    leased = WebhookDelivery(**{**_fields(delivery()), "locked_until": T0 + timedelta(seconds=30)})
    done, outcome = record_attempt(
        leased, AttemptResult(status_code=204), now=T0, schedule=SVIX_SCHEDULE_SECONDS, jitter=0.5
    )
    assert outcome is AttemptOutcome.SUCCEEDED and done.status is DeliveryStatus.SUCCEEDED
    assert (done.attempts, done.delivered_at, done.next_attempt_at, done.locked_until) == (1, T0, None, None)
    assert done.last_status_code == 204


@pytest.mark.parametrize(
    "result",
    [
        AttemptResult(status_code=500),
        AttemptResult(status_code=302),  # redirects are not followed: a failure
        AttemptResult(status_code=199),
        AttemptResult(error="timeout after 15s"),
        AttemptResult(error="unsafe target: hooks.example.com resolves to a private address"),
    ],
)
def test_anything_but_2xx_is_retried_on_schedule(result: AttemptResult) -> None:
    after, outcome = record_attempt(delivery(), result, now=T0, schedule=SVIX_SCHEDULE_SECONDS, jitter=0.5)
    assert outcome is AttemptOutcome.RETRYING and after.status is DeliveryStatus.PENDING
    assert after.next_attempt_at == T0 + timedelta(seconds=5) and after.attempts == 1
    assert after.last_error == result.error and after.last_status_code == result.status_code


def test_the_schedule_runs_out_into_failed() -> None:
    current = delivery((0, 1, 1))
    outcomes = []
    for _ in range(3):
        current, outcome = record_attempt(
            current, AttemptResult(status_code=503), now=T0, schedule=(0, 1, 1), jitter=0.0
        )
        outcomes.append(outcome)
    assert outcomes == [AttemptOutcome.RETRYING, AttemptOutcome.RETRYING, AttemptOutcome.FAILED]
    assert (
        current.status is DeliveryStatus.FAILED and current.next_attempt_at is None and current.attempts == 3
    )


def test_410_gone_fails_at_once() -> None:
    after, outcome = record_attempt(
        delivery(), AttemptResult(status_code=410), now=T0, schedule=SVIX_SCHEDULE_SECONDS, jitter=0.5
    )
    assert outcome is AttemptOutcome.GONE and after.status is DeliveryStatus.FAILED and after.attempts == 1


def test_a_long_error_is_cut() -> None:
    after, _ = record_attempt(
        delivery(), AttemptResult(error="x" * 5000), now=T0, schedule=SVIX_SCHEDULE_SECONDS, jitter=0.5
    )
    assert after.last_error is not None and len(after.last_error) == 500


def test_a_manual_retry_allows_exactly_one_more_attempt_now() -> None:
    failed, _ = record_attempt(
        delivery((0,)), AttemptResult(status_code=500), now=T0, schedule=(0,), jitter=0.5
    )
    assert failed.status is DeliveryStatus.FAILED
    later = T0 + timedelta(hours=1)
    again = retried_by_hand(failed, later, later + timedelta(seconds=60))
    assert again.status is DeliveryStatus.PENDING and again.max_attempts == 2
    # Dispatched at once: leased to its job, and due again only if that job never runs.
    assert again.locked_until == later + timedelta(seconds=60) and again.next_attempt_at == later
    assert not again.is_due(later) and again.is_due(later + timedelta(seconds=60))
    final, outcome = record_attempt(
        again, AttemptResult(status_code=500), now=later, schedule=(0,), jitter=0.5
    )
    assert outcome is AttemptOutcome.FAILED and final.attempts == 2


def test_canceling_ends_a_pending_delivery() -> None:
    done = canceled(delivery(), "endpoint removed", T0)
    assert done.status is DeliveryStatus.CANCELED and done.is_finished and not done.is_due(T0)
    assert done.last_error == "endpoint removed"


# --- derived secrets ---


def version(salt: bytes = bytes(32), *, id: str = "v1", at: datetime = T0) -> WebhookSecretVersion:
    return new_version(
        id=id, owner=SecretOwner.ENDPOINT, owner_id="e1", user_id="u1", key_version="k1", salt=salt, now=at
    )


def test_a_derived_secret_is_a_standard_webhooks_secret_that_the_reference_verifies() -> None:
    secret = derive_secret(MASTER, version())
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) == 32
    body = b'{"type":"generation.succeeded"}'
    now = int(time.time())  # the reference verifier reads the real clock
    header = signature_header([secret], "msg_1", now, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": header}
    assert standardwebhooks.Webhook(secret).verify(body, headers) == {"type": "generation.succeeded"}


def test_secrets_depend_on_the_master_key_and_the_salt_only() -> None:
    assert derive_secret(MASTER, version()) == derive_secret(MASTER, version(id="other"))
    assert derive_secret(MASTER, version()) != derive_secret(MASTER + "x", version())
    assert derive_secret(MASTER, version()) != derive_secret(MASTER, version(bytes([1]) + bytes(31)))


def test_a_salt_must_be_long_enough() -> None:
    with pytest.raises(ValueError):
        version(bytes(16))


def test_rotation_keeps_the_old_version_signing_for_the_overlap_only() -> None:
    old = version(id="old")
    later = T0 + timedelta(days=3)
    retired = retire(old, later)
    new = version(bytes([7]) * 32, id="new", at=later)
    assert retired.expires_at == later + ROTATION_OVERLAP
    assert [v.id for v in live_versions([retired, new], later)] == ["new", "old"]
    assert [v.id for v in live_versions([retired, new], later + ROTATION_OVERLAP)] == ["new"]
    # Rotating again does not stretch the first version's overlap.
    assert retire(retired, later + timedelta(hours=1)) == retired


# --- endpoints ---


def test_event_filters_are_checked_and_deduplicated() -> None:
    assert event_filter(None) == () and event_filter([]) == ()
    assert event_filter(["generation.failed", "generation.failed", "quota.threshold_reached"]) == (
        "generation.failed",
        "quota.threshold_reached",
    )
    with pytest.raises(DomainError) as refused:
        event_filter(["generation.exploded"])
    assert refused.value.code is ErrorCode.VALIDATION_FAILED


def test_an_endpoint_wants_what_its_filter_names_while_active() -> None:
    everything = WebhookEndpoint(id="e", user_id="u", url="https://x.example/", created_at=T0, updated_at=T0)
    assert all(everything.wants(t) for t in EVENT_TYPES)
    some = WebhookEndpoint(**{**_fields_e(everything), "events": ("generation.failed",)})
    assert some.wants("generation.failed") and not some.wants("generation.succeeded")
    off = WebhookEndpoint(**{**_fields_e(everything), "status": EndpointStatus.DISABLED})
    assert not off.wants("generation.failed")


def _fields_e(e: WebhookEndpoint) -> dict[str, object]:
    return {f: getattr(e, f) for f in e.__struct_fields__}


@pytest.mark.parametrize(
    "url",
    [
        "https://127.0.0.1/hook",
        "https://10.0.0.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://[::1]/hook",
        "http://hooks.example.com/plain-http",
        "ftp://hooks.example.com/",
        "https://user:pass@hooks.example.com/",
    ],
)
def test_unsafe_targets_are_refused_at_registration(url: str) -> None:
    with pytest.raises(DomainError) as refused:
        checked_target(url, allow_private=False)
    assert refused.value.code is ErrorCode.UNSAFE_URL


def test_configuration_may_allow_private_and_plain_http_targets() -> None:
    assert checked_target("http://127.0.0.1:8123/hook", allow_private=True).port == 8123
    assert checked_target("https://hooks.example.com/in", allow_private=False).host == "hooks.example.com"
    with pytest.raises(DomainError):  # metadata and the like stay refused whatever the configuration
        checked_target("https://0.0.0.0/", allow_private=True)
