"""Business counters (issue 7 item 1): registrations, logins by outcome, quota and rate-limit
rejections, emails by kind and outcome, and the generations the API accepts or cancels.

The core stays free of prometheus: these are recorded by the entrypoints from what the use cases
return or raise (routes, the auth guard, job functions), and emails by a Mailer decorator the job
functions wrap around the port. Generations reaching their end, images stored and webhook
deliveries are counted in `generation_metrics` and `webhook_metrics`, beside their jobs.

Every label value comes from a closed set written here or in the code (error codes, email kinds),
never from a request, so the number of series stays bounded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

from prometheus_client import Counter

from core.email import EmailMessage
from core.errors import DomainError, ErrorCode
from core.ports import Mailer
from entrypoints.generation_metrics import observe_generation_status

REGISTRATIONS: Final = Counter("pictor_registrations_total", "Accounts created through the API")
LOGINS: Final = Counter(
    "pictor_logins_total",
    "Login attempts by outcome (succeeded, invalid_credentials, too_many_attempts, failed)",
    ["outcome"],
)
QUOTA_REJECTIONS: Final = Counter(
    "pictor_quota_rejections_total",
    "Generations refused by the caller's plan (quota_exceeded, concurrency_limit)",
    ["reason"],
)
RATE_LIMIT_REJECTIONS: Final = Counter(
    "pictor_rate_limit_rejections_total",
    "Requests refused by a rate limit (api: the plan's request rate; login: failed-login throttling)",
    ["limit"],
)
EMAILS: Final = Counter(
    "pictor_emails_total",
    "Emails handed to the mailer, by kind and outcome (sent, failed)",
    ["kind", "outcome"],
)

# Login failures worth telling apart; any other error is "failed".
_LOGIN_OUTCOMES: Final = {
    ErrorCode.INVALID_CREDENTIALS: "invalid_credentials",
    ErrorCode.TOO_MANY_ATTEMPTS: "too_many_attempts",
}
_QUOTA_REASONS: Final = frozenset({ErrorCode.QUOTA_EXCEEDED, ErrorCode.CONCURRENCY_LIMIT})

# The limits that reject requests (label values of RATE_LIMIT_REJECTIONS).
API_RATE_LIMIT: Final = "api"
LOGIN_THROTTLE: Final = "login"

# Series that exist from the start at 0, so `rate()` and alerts see the first event as a change.
for _outcome in ("succeeded", *_LOGIN_OUTCOMES.values(), "failed"):
    LOGINS.labels(_outcome)
for _code in _QUOTA_REASONS:
    QUOTA_REJECTIONS.labels(_code.value)
for _limit in (API_RATE_LIMIT, LOGIN_THROTTLE):
    RATE_LIMIT_REJECTIONS.labels(_limit)


def observe_registration() -> None:
    """One account created (call it after the use case returned)."""
    REGISTRATIONS.inc()


@contextmanager
def observing_login() -> Iterator[None]:
    """Around `Authentication.login`: counts its outcome, and a throttled attempt as a rate-limit
    rejection too. Exceptions pass through unchanged."""
    try:
        yield
    except DomainError as error:
        outcome = _LOGIN_OUTCOMES.get(error.code, "failed")
        LOGINS.labels(outcome).inc()
        if error.code is ErrorCode.TOO_MANY_ATTEMPTS:
            RATE_LIMIT_REJECTIONS.labels(LOGIN_THROTTLE).inc()
        raise
    except Exception:
        LOGINS.labels("failed").inc()
        raise
    LOGINS.labels("succeeded").inc()


def observe_rate_limit_rejection(limit: str) -> None:
    """A request refused by `limit` (API_RATE_LIMIT or LOGIN_THROTTLE)."""
    RATE_LIMIT_REJECTIONS.labels(limit).inc()


@contextmanager
def observing_generation_acceptance() -> Iterator[None]:
    """Around `Generations.accept`: counts the generation `queued` when it is accepted, or the
    quota rejection when the plan refused it. Other refusals (bad input) count nothing here."""
    try:
        yield
    except DomainError as error:
        if error.code in _QUOTA_REASONS:
            QUOTA_REJECTIONS.labels(error.code.value).inc()
        raise
    observe_generation_status("queued")


def observe_generation_canceled() -> None:
    """A generation canceled by its owner (call it after `Generations.cancel` returned)."""
    observe_generation_status("canceled")


class CountingMailer:
    """A Mailer that counts every message it passes on, by the message's kind and outcome.

    The job functions wrap the registered Mailer in one; a failure is counted and raised again,
    so the email job still retries (each failed try counts once).
    """

    def __init__(self, inner: Mailer) -> None:
        self._inner = inner

    async def send(self, message: EmailMessage) -> None:
        try:
            await self._inner.send(message)
        except Exception:  # a cancelled send (worker stopping) is no verdict on the email
            EMAILS.labels(message.kind, "failed").inc()
            raise
        EMAILS.labels(message.kind, "sent").inc()
