"""A Mailer that prints: the embedded default, so a developer can open the link in the terminal."""

from __future__ import annotations

import sys
from typing import TextIO

from core.email import EmailMessage

_RULE = "-" * 72


class ConsoleMailer:
    """Implements `core.ports.Mailer` by writing the recipient, subject and text body to a stream.

    The stream is standard output unless given; it is looked up at each send, so redirecting
    `sys.stdout` later still applies. The HTML part is left out: the text carries the same link.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream

    async def send(self, message: EmailMessage) -> None:
        stream = self._stream if self._stream is not None else sys.stdout
        # One write, so messages sent concurrently do not interleave.
        stream.write(
            f"{_RULE}\nEmail ({message.kind})\nTo: {message.to}\nSubject: {message.subject}\n\n"
            f"{message.text.rstrip()}\n{_RULE}\n"
        )
        stream.flush()
