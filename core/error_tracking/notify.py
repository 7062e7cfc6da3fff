"""Sending an alert to the operator's ops webhook: signed, and tried again briefly when it fails."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Final

from core.error_tracking.alerts import OPS_WEBHOOK_SECRET, Alert, alert_body, alert_headers, signing_secrets
from core.errors import DomainError, ErrorCode
from core.ports import Clock, Secrets, WebhookTransport
from core.webhooks.deliveries import AttemptResult

Sleep = Callable[[float], Awaitable[None]]

# The cooldown is claimed before sending, so a lost alert stays lost until it ends: a receiver
# that blinks gets two more tries within seconds.
RETRY_DELAYS_SECONDS: Final = (1.0, 5.0)
ATTEMPT_TIMEOUT_SECONDS: Final = 10.0


class OpsAlertSender:
    """Posts alerts to `url` through a WebhookTransport (the operator's own URL: the transport
    given here may allow private addresses)."""

    def __init__(
        self,
        *,
        url: str,
        secrets: Secrets,
        transport: WebhookTransport,
        clock: Clock,
        sleep: Sleep,
        retry_delays_seconds: Sequence[float] = RETRY_DELAYS_SECONDS,
        timeout_seconds: float = ATTEMPT_TIMEOUT_SECONDS,
    ) -> None:
        self._url = url
        self._secrets = secrets
        self._transport = transport
        self._clock = clock
        self._sleep = sleep
        self._delays = tuple(retry_delays_seconds)
        self._timeout = timeout_seconds

    async def send(self, alert: Alert) -> AttemptResult:
        """The last attempt's result: a 2xx, an answer not worth retrying, or the final failure.
        Raises DomainError(secret_missing) when no version of the signing secret is usable."""
        versions = await self._secrets.versions(OPS_WEBHOOK_SECRET)
        secrets = signing_secrets([version.value for version in versions])
        if not secrets:
            raise DomainError(
                ErrorCode.SECRET_MISSING,
                f"No usable {OPS_WEBHOOK_SECRET} (a whsec_ value, or at least 24 bytes) to sign alerts with",
            )
        body = alert_body(alert)
        result = AttemptResult(error="not attempted")
        for delay in (0.0, *self._delays):
            if delay:
                await self._sleep(delay)
            # A fresh timestamp per attempt: receivers refuse messages older than a few minutes.
            headers = alert_headers(alert, body, secrets, int(self._clock.now().timestamp()))
            result = await self._transport.send(
                self._url, headers=headers, body=body, timeout_seconds=self._timeout
            )
            if result.succeeded or not _worth_retrying(result):
                return result
        return result


def _worth_retrying(result: AttemptResult) -> bool:
    if result.status_code is None:
        return not (result.error or "").startswith("unsafe target")  # refused by policy: same next time
    return result.status_code in (408, 429) or result.status_code >= 500
