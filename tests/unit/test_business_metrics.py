"""Business counters: what each hook counts for each outcome, and what it leaves alone."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from adapters.memory.mailer import MemoryMailer
from core.email import EmailMessage
from core.errors import DomainError, ErrorCode
from entrypoints.business_metrics import (
    CountingMailer,
    observe_generation_canceled,
    observe_registration,
    observing_generation_acceptance,
    observing_login,
)


def value(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_registration_counts_one() -> None:
    before = value("pictor_registrations_total")
    observe_registration()
    assert value("pictor_registrations_total") == before + 1


@pytest.mark.parametrize(
    ("raised", "outcome"),
    [
        (DomainError(ErrorCode.INVALID_CREDENTIALS, "Wrong email or password"), "invalid_credentials"),
        (DomainError(ErrorCode.TOO_MANY_ATTEMPTS, "Too many"), "too_many_attempts"),
        (DomainError(ErrorCode.SERVICE_UNAVAILABLE, "down"), "failed"),
        (RuntimeError("bug"), "failed"),
    ],
)
def test_login_failures_are_counted_by_outcome_and_raised_unchanged(raised: Exception, outcome: str) -> None:
    outcomes = ("succeeded", "invalid_credentials", "too_many_attempts", "failed")
    before = {o: value("pictor_logins_total", outcome=o) for o in outcomes}
    throttled = value("pictor_rate_limit_rejections_total", limit="login")
    with pytest.raises(type(raised)) as caught, observing_login():
        raise raised
    assert caught.value is raised
    after = {o: value("pictor_logins_total", outcome=o) for o in outcomes}
    assert after == {**before, outcome: before[outcome] + 1}
    expected_throttled = throttled + (1 if outcome == "too_many_attempts" else 0)
    assert value("pictor_rate_limit_rejections_total", limit="login") == expected_throttled


def test_a_successful_login_counts_succeeded() -> None:
    before = value("pictor_logins_total", outcome="succeeded")
    with observing_login():
        pass
    assert value("pictor_logins_total", outcome="succeeded") == before + 1


def test_every_outcome_series_exists_before_its_first_event() -> None:
    # Alerts on rate() see the first rejection as a change only if the series existed at 0.
    for outcome in ("succeeded", "invalid_credentials", "too_many_attempts", "failed"):
        assert REGISTRY.get_sample_value("pictor_logins_total", {"outcome": outcome}) is not None
    for reason in ("quota_exceeded", "concurrency_limit"):
        assert REGISTRY.get_sample_value("pictor_quota_rejections_total", {"reason": reason}) is not None
    for limit in ("api", "login"):
        assert REGISTRY.get_sample_value("pictor_rate_limit_rejections_total", {"limit": limit}) is not None


def test_an_accepted_generation_counts_queued_and_no_rejection() -> None:
    queued = value("pictor_generations_total", status="queued")
    rejected = value("pictor_quota_rejections_total", reason="quota_exceeded")
    with observing_generation_acceptance():
        pass
    assert value("pictor_generations_total", status="queued") == queued + 1
    assert value("pictor_quota_rejections_total", reason="quota_exceeded") == rejected


@pytest.mark.parametrize("code", [ErrorCode.QUOTA_EXCEEDED, ErrorCode.CONCURRENCY_LIMIT])
def test_a_plan_refusal_counts_a_quota_rejection_and_nothing_queued(code: ErrorCode) -> None:
    queued = value("pictor_generations_total", status="queued")
    rejected = value("pictor_quota_rejections_total", reason=code.value)
    with pytest.raises(DomainError), observing_generation_acceptance():
        raise DomainError(code, "refused")
    assert value("pictor_quota_rejections_total", reason=code.value) == rejected + 1
    assert value("pictor_generations_total", status="queued") == queued


def test_bad_input_is_neither_queued_nor_a_quota_rejection() -> None:
    queued = value("pictor_generations_total", status="queued")
    rejections = [
        value("pictor_quota_rejections_total", reason=r) for r in ("quota_exceeded", "concurrency_limit")
    ]
    with pytest.raises(DomainError), observing_generation_acceptance():
        raise DomainError(ErrorCode.PROMPT_REJECTED, "no")
    assert value("pictor_generations_total", status="queued") == queued
    after = [
        value("pictor_quota_rejections_total", reason=r) for r in ("quota_exceeded", "concurrency_limit")
    ]
    assert after == rejections


def test_a_cancel_counts_canceled() -> None:
    before = value("pictor_generations_total", status="canceled")
    observe_generation_canceled()
    assert value("pictor_generations_total", status="canceled") == before + 1


def message(kind: str) -> EmailMessage:
    return EmailMessage(to="ada@example.com", subject="s", text="t", html="<p>t</p>", kind=kind)


class FailingMailer:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def send(self, message: EmailMessage) -> None:
        raise self.error


async def test_emails_are_counted_by_kind_and_outcome() -> None:
    inner = MemoryMailer()
    sent = value("pictor_emails_total", kind="verify_email", outcome="sent")
    await CountingMailer(inner).send(message("verify_email"))
    assert value("pictor_emails_total", kind="verify_email", outcome="sent") == sent + 1
    assert [m.kind for m in inner.sent] == ["verify_email"]

    failed = value("pictor_emails_total", kind="reset_password", outcome="failed")
    sent_resets = value("pictor_emails_total", kind="reset_password", outcome="sent")
    error = ConnectionError("smtp down")
    with pytest.raises(ConnectionError) as caught:
        await CountingMailer(FailingMailer(error)).send(message("reset_password"))
    assert caught.value is error  # the email job retries on it
    assert value("pictor_emails_total", kind="reset_password", outcome="failed") == failed + 1
    assert value("pictor_emails_total", kind="reset_password", outcome="sent") == sent_resets


async def test_a_cancelled_send_is_no_verdict() -> None:
    before = value("pictor_emails_total", kind="quota_notice", outcome="failed")
    with pytest.raises(asyncio.CancelledError):
        await CountingMailer(FailingMailer(asyncio.CancelledError())).send(message("quota_notice"))
    assert value("pictor_emails_total", kind="quota_notice", outcome="failed") == before
