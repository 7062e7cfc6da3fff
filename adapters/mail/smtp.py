"""The Mailer port over SMTP, with the standard library (smtplib, off the event loop)."""

from __future__ import annotations

import asyncio
import email.message
import email.utils
import smtplib
import ssl
from typing import Literal, get_args
from urllib.parse import parse_qsl, unquote, urlsplit

from core.email import EmailMessage

SmtpSecurity = Literal["none", "starttls", "tls"]

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def to_mime(message: EmailMessage, *, sender: str) -> email.message.EmailMessage:
    """The message as multipart/alternative: the plain text first, the HTML as the richer part."""
    mime = email.message.EmailMessage()
    mime["From"] = sender
    mime["To"] = message.to
    mime["Subject"] = message.subject
    mime["Date"] = email.utils.formatdate(localtime=False, usegmt=True)
    domain = email.utils.parseaddr(sender)[1].rpartition("@")[2] or None
    mime["Message-ID"] = email.utils.make_msgid(domain=domain)
    mime.set_content(message.text)
    mime.add_alternative(message.html, subtype="html")
    return mime


class SmtpMailer:
    """Implements `core.ports.Mailer` by handing each message to an SMTP server.

    `security`: "tls" speaks TLS from the first byte (SMTPS, port 465); "starttls" upgrades the
    connection and fails when the server does not offer it (never falls back to clear text);
    "none" sends in the clear, for a relay on the same host or network. One connection per
    message: emails are few and go through the `email` job queue, which retries on any error
    raised here.
    """

    def __init__(
        self,
        *,
        host: str,
        port: int,
        sender: str,
        username: str | None = None,
        password: str | None = None,
        security: SmtpSecurity = "starttls",
        timeout: float = 10.0,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if security not in get_args(SmtpSecurity):
            raise ValueError(f"unknown SMTP security {security!r}; use one of {get_args(SmtpSecurity)}")
        self.host = host
        self.port = port
        self.sender = sender
        self.security: SmtpSecurity = security
        self.timeout = timeout
        self.username = username
        self._password = password
        # The default verifies the server's certificate against the system's CAs; pass a
        # context to trust a private CA.
        self._ssl_context = ssl_context

    def __repr__(self) -> str:
        return (
            f"SmtpMailer(host={self.host!r}, port={self.port}, sender={self.sender!r}, "
            f"security={self.security!r}, username={self.username!r})"
        )

    async def send(self, message: EmailMessage) -> None:
        mime = to_mime(message, sender=self.sender)
        await asyncio.to_thread(self._send_blocking, mime)

    def _context(self) -> ssl.SSLContext:
        return self._ssl_context or ssl.create_default_context()

    def _send_blocking(self, mime: email.message.EmailMessage) -> None:
        client: smtplib.SMTP
        if self.security == "tls":
            client = smtplib.SMTP_SSL(self.host, self.port, timeout=self.timeout, context=self._context())
        else:
            client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
        with client:
            if self.security == "starttls":
                # Raises SMTPNotSupportedError when the server does not offer STARTTLS.
                client.starttls(context=self._context())
            if self.username is not None:
                client.login(self.username, self._password or "")
            client.send_message(mime)


def smtp_mailer_from_url(url: str, *, sender: str) -> SmtpMailer:
    """An SmtpMailer from `smtp://[user[:password]@]host[:port][?starttls=true][&timeout=10]`.

    `smtp://` sends in the clear (port 25 by default) unless `starttls=true` (port 587 by
    default); `smtps://` is TLS from the start (port 465 by default). User and password are
    percent-decoded. Anything else raises ValueError, so a typo fails at start-up.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in {"smtp", "smtps"}:
        raise ValueError("an SMTP URL starts with smtp:// or smtps://")
    if not parts.hostname:
        raise ValueError("the SMTP URL has no host")
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = set(options) - {"starttls", "timeout"}
    if unknown:
        raise ValueError(f"unknown SMTP URL option(s): {', '.join(sorted(unknown))}")
    starttls = _flag(options.get("starttls", "false"), "starttls")
    security: SmtpSecurity
    if scheme == "smtps":
        if starttls:
            raise ValueError("smtps:// is TLS already; starttls applies to smtp:// only")
        security, default_port = "tls", 465
    elif starttls:
        security, default_port = "starttls", 587
    else:
        security, default_port = "none", 25
    try:
        port = parts.port or default_port
        timeout = float(options.get("timeout", "10"))
    except ValueError as error:
        raise ValueError(f"invalid SMTP URL: {error}") from None
    if timeout <= 0:
        raise ValueError("the SMTP timeout must be positive")
    return SmtpMailer(
        host=parts.hostname,
        port=port,
        sender=sender,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password is not None else None,
        security=security,
        timeout=timeout,
    )


def _flag(value: str, name: str) -> bool:
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ValueError(f"SMTP URL option {name} must be true or false, not {value!r}")
