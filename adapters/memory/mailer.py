"""An in-memory Mailer for tests: it keeps what was sent, and can be told to fail."""

from __future__ import annotations

from core.email import EmailMessage


class MemoryMailer:
    """Implements `core.ports.Mailer` by appending each message to `sent`.

    `fail_next(error)` makes the next send(s) raise instead, as an unreachable SMTP server
    would, so the email job's retries can be tested.
    """

    def __init__(self) -> None:
        self.sent: list[EmailMessage] = []
        self._failures: list[Exception] = []

    async def send(self, message: EmailMessage) -> None:
        if self._failures:
            raise self._failures.pop(0)
        self.sent.append(message)

    def fail_next(self, error: Exception, *, times: int = 1) -> None:
        """Raise `error` from the next `times` sends (nothing is recorded for them)."""
        self._failures.extend([error] * times)

    def last_to(self, address: str, *, kind: str | None = None) -> EmailMessage | None:
        """The latest message to `address` (case-insensitive), of `kind` when given."""
        wanted = address.casefold()
        for message in reversed(self.sent):
            if message.to.casefold() == wanted and (kind is None or message.kind == kind):
                return message
        return None
