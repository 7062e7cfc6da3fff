"""An in-memory WebhookTransport: the SSRF rules of the real one, a name table for DNS, and
scripted answers instead of receivers."""

from __future__ import annotations

import math
from collections import defaultdict, deque
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime

import msgspec

from adapters.webhooks_http.conventions import (
    CONNECTION_REFUSED,
    DEFAULT_USER_AGENT,
    UnsafeTarget,
    check_addresses,
    check_target,
    outgoing_headers,
    timed_out,
    unresolvable,
)
from core.webhooks.deliveries import AttemptResult


class Reply(msgspec.Struct, frozen=True, kw_only=True):
    """A scripted answer to one attempt: a status (with an optional Retry-After in seconds), or no
    answer at all: `error` (e.g. `Reply.refused()`) or a timeout (`Reply.timeout()`)."""

    status_code: int = 200
    retry_after_seconds: float | None = None
    error: str | None = None
    timed_out: bool = False

    @classmethod
    def refused(cls) -> Reply:
        """Nothing listens at the target."""
        return cls(error=CONNECTION_REFUSED)

    @classmethod
    def timeout(cls) -> Reply:
        """The receiver never answers within the attempt's timeout."""
        return cls(timed_out=True)


class SentRequest(msgspec.Struct, frozen=True, kw_only=True):
    """One attempt that passed the SSRF guard: what went out, to which checked address, and when."""

    url: str
    address: str
    headers: dict[str, str]
    body: bytes
    timeout_seconds: float
    sent_at: datetime


class MemoryWebhookTransport:
    """Implements `core.ports.WebhookTransport` in memory.

    `hosts` stands in for DNS (name → addresses; a name not in it cannot be resolved; IP literals
    are never looked up). Targets and addresses are checked exactly as by `HttpWebhookTransport`,
    with the same error texts. Every attempt that passes the guard is recorded in `requests` (the
    headers as the real transport sends them) and answered by the next `Reply` scripted for its
    URL with `script`, or 200 once the script runs out. An attempt the guard refuses records nothing.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        hosts: Mapping[str, Sequence[str]] | None = None,
        now: Callable[[], datetime] | None = None,
        user_agent: str = DEFAULT_USER_AGENT,
    ) -> None:
        self._allow_private = allow_private
        self._hosts = {name.lower(): list(addresses) for name, addresses in (hosts or {}).items()}
        self._now = now or (lambda: datetime.now(UTC))
        self._user_agent = user_agent
        self._scripts: defaultdict[str, deque[Reply]] = defaultdict(deque)
        self.requests: list[SentRequest] = []

    def script(self, url: str, *replies: Reply) -> None:
        """Answer the next attempts to exactly `url` with `replies`, in order."""
        self._scripts[url].extend(replies)

    def set_host(self, name: str, addresses: Sequence[str]) -> None:
        """Point `name` at `addresses` from now on (a DNS change, e.g. a rebinding attack)."""
        self._hosts[name.lower()] = list(addresses)

    def sent_to(self, url: str) -> list[SentRequest]:
        """The recorded attempts to exactly `url`, oldest first."""
        return [request for request in self.requests if request.url == url]

    async def send(
        self, url: str, *, headers: dict[str, str], body: bytes, timeout_seconds: float
    ) -> AttemptResult:
        if not 0 < timeout_seconds < math.inf:
            raise ValueError("timeout_seconds must be a positive number of seconds")
        try:
            target = check_target(url, allow_private=self._allow_private)
            if target.ip_literal is not None:
                addresses = [target.ip_literal]
            else:
                addresses = self._hosts.get(target.host, [])
                if not addresses:
                    raise UnsafeTarget(unresolvable(target.host))
            check_addresses(target, addresses, allow_private=self._allow_private)
        except UnsafeTarget as refusal:
            return AttemptResult(error=str(refusal))
        self.requests.append(
            SentRequest(
                url=url,
                address=addresses[0],
                headers=outgoing_headers(headers, user_agent=self._user_agent),
                body=body,
                timeout_seconds=timeout_seconds,
                sent_at=self._now(),
            )
        )
        script = self._scripts.get(url)
        reply = script.popleft() if script else Reply()
        if reply.timed_out:
            return AttemptResult(error=timed_out(timeout_seconds), duration_seconds=timeout_seconds)
        if reply.error is not None:
            return AttemptResult(error=reply.error)
        return AttemptResult(status_code=reply.status_code, retry_after_seconds=reply.retry_after_seconds)
