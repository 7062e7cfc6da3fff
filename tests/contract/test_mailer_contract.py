"""The Mailer port: memory, console and SMTP (against a real aiosmtpd server on loopback)."""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import io
import ipaddress
import socket
import ssl
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from email.message import EmailMessage as MimeMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, Envelope, LoginPassword, Session

from adapters.mail.console import ConsoleMailer
from adapters.mail.smtp import SmtpMailer, smtp_mailer_from_url
from adapters.memory.mailer import MemoryMailer
from core.accounts.emails import password_reset_email, verification_email
from core.email import EmailMessage
from core.ports import Mailer

SENDER = "Pictor <no-reply@pictor.example>"
LINK = "https://pictor.example/verify?token=tok_123&x=1"


# --- a real SMTP server --------------------------------------------------------------------------


class RecordingHandler:
    """aiosmtpd handler that keeps every envelope it accepts."""

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: Any, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"


class Credentials:
    """aiosmtpd authenticator accepting one user, remembering who logged in."""

    def __init__(self, username: str, password: str) -> None:
        self._expected = (username.encode(), password.encode())
        self.logins: list[str] = []

    def __call__(
        self, server: Any, session: Session, envelope: Envelope, mechanism: str, auth_data: Any
    ) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == self._expected:
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class SmtpServer:
    handler: RecordingHandler
    port: int


@pytest.fixture
def start_smtp_server() -> Iterator[Callable[..., SmtpServer]]:
    """Starts aiosmtpd servers on 127.0.0.1 (keyword arguments go to aiosmtpd); stops them after."""
    controllers: list[Controller] = []

    def start(**smtp_parameters: Any) -> SmtpServer:
        handler = RecordingHandler()
        port = free_port()
        controller = Controller(handler, hostname="127.0.0.1", port=port, **smtp_parameters)
        controller.start()
        controllers.append(controller)
        return SmtpServer(handler, port)

    yield start
    for controller in controllers:
        controller.stop()


@dataclass(frozen=True)
class Certificate:
    server_context: ssl.SSLContext
    client_context: ssl.SSLContext  # trusts this certificate only


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> Certificate:
    """A self-signed certificate for 127.0.0.1, made for this run."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    folder: Path = tmp_path_factory.mktemp("smtp-tls")
    cert_file, key_file = folder / "cert.pem", folder / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_file, key_file)
    return Certificate(server_context, ssl.create_default_context(cafile=str(cert_file)))


def parse(envelope: Envelope) -> MimeMessage:
    raw = envelope.original_content or envelope.content
    assert isinstance(raw, bytes)
    message = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(message, MimeMessage)
    return message


# --- one suite over every adapter ----------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    """What reached the other side, read back the way that side shows it."""

    to: str
    subject: str
    text: str
    html: str | None  # None where the adapter shows no HTML (the console)


@dataclass
class MailerCase:
    mailer: Mailer
    delivered: Callable[[], list[Delivered]]


def _memory() -> MailerCase:
    mailer = MemoryMailer()
    return MailerCase(mailer, lambda: [Delivered(m.to, m.subject, m.text, m.html) for m in mailer.sent])


def _console() -> MailerCase:
    stream = io.StringIO()

    def delivered() -> list[Delivered]:
        found = []
        for block in stream.getvalue().split("-" * 72 + "\n")[1::2]:
            head, _, text = block.partition("\n\n")
            fields = dict(line.split(": ", 1) for line in head.splitlines()[1:])
            found.append(Delivered(fields["To"], fields["Subject"], text, None))
        return found

    return MailerCase(ConsoleMailer(stream), delivered)


def _smtp(server: SmtpServer) -> MailerCase:
    mailer = SmtpMailer(host="127.0.0.1", port=server.port, sender=SENDER, security="none")

    def delivered() -> list[Delivered]:
        found = []
        for envelope in server.handler.envelopes:
            assert envelope.mail_from == "no-reply@pictor.example"
            message = parse(envelope)
            assert message.get_content_type() == "multipart/alternative"
            assert message["From"] == SENDER
            assert envelope.rcpt_tos == [message["To"]]
            text_part = message.get_body(preferencelist=("plain",))
            html_part = message.get_body(preferencelist=("html",))
            assert text_part is not None and html_part is not None
            assert text_part.get_content_type() == "text/plain"
            assert html_part.get_content_type() == "text/html"
            # SMTP carries lines ending in CRLF; the adapter was given LF.
            text, html = (part.get_content().replace("\r\n", "\n") for part in (text_part, html_part))
            found.append(Delivered(message["To"], message["Subject"], text, html))
        return found

    return MailerCase(mailer, delivered)


@pytest.fixture(params=["memory", "console", "smtp"])
def case(request: pytest.FixtureRequest, start_smtp_server: Callable[..., SmtpServer]) -> MailerCase:
    if request.param == "memory":
        return _memory()
    if request.param == "console":
        return _console()
    return _smtp(start_smtp_server(enable_SMTPUTF8=True))


async def test_a_sent_message_arrives_with_recipient_subject_and_bodies(case: MailerCase):
    message = verification_email("ada@example.com", "Ada", LINK)
    await case.mailer.send(message)
    [delivered] = case.delivered()
    assert delivered.to == "ada@example.com"
    assert delivered.subject == message.subject
    assert LINK in delivered.text
    assert delivered.text.strip() == message.text.strip()
    if delivered.html is not None:
        assert delivered.html.strip() == message.html.strip()
        assert "https://pictor.example/verify?token=tok_123&amp;x=1" in delivered.html


async def test_messages_arrive_in_order_to_their_own_recipients(case: MailerCase):
    first = verification_email("ada@example.com", "Ada", LINK)
    second = password_reset_email("grace@example.com", "Grace", "https://pictor.example/reset?token=t2", 30)
    await case.mailer.send(first)
    await case.mailer.send(second)
    delivered = case.delivered()
    assert [(d.to, d.subject) for d in delivered] == [
        ("ada@example.com", first.subject),
        ("grace@example.com", second.subject),
    ]
    assert "https://pictor.example/reset?token=t2" in delivered[1].text


async def test_unicode_survives_the_trip(case: MailerCase):
    message = EmailMessage(
        to="zoë@example.com",
        subject="Bienvenue, Zoë — 画像",
        text=f"Grüße, Zoë 🎨\n\n{LINK}\n",
        html="<p>Grüße, Zoë 🎨</p>",
        kind="verify_email",
    )
    await case.mailer.send(message)
    [delivered] = case.delivered()
    assert delivered.to == message.to
    assert delivered.subject == message.subject
    assert "Grüße, Zoë 🎨" in delivered.text
    if delivered.html is not None:
        assert "Grüße, Zoë 🎨" in delivered.html


# --- SMTP security and failures ------------------------------------------------------------------


async def test_smtp_starttls_with_login(
    start_smtp_server: Callable[..., SmtpServer], certificate: Certificate
):
    credentials = Credentials("mailer", "s3cret:pass")
    server = start_smtp_server(
        tls_context=certificate.server_context,
        require_starttls=True,
        authenticator=credentials,
        auth_required=True,
    )
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=server.port,
        sender=SENDER,
        username="mailer",
        password="s3cret:pass",
        security="starttls",
        ssl_context=certificate.client_context,
    )
    await mailer.send(verification_email("ada@example.com", None, LINK))
    assert credentials.logins == ["mailer"]
    [envelope] = server.handler.envelopes
    assert envelope.rcpt_tos == ["ada@example.com"]


async def test_smtp_implicit_tls(start_smtp_server: Callable[..., SmtpServer], certificate: Certificate):
    server = start_smtp_server(ssl_context=certificate.server_context)
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=server.port,
        sender=SENDER,
        security="tls",
        ssl_context=certificate.client_context,
    )
    await mailer.send(verification_email("ada@example.com", None, LINK))
    assert [parse(e)["To"] for e in server.handler.envelopes] == ["ada@example.com"]


async def test_smtp_verifies_the_server_certificate_by_default(
    start_smtp_server: Callable[..., SmtpServer], certificate: Certificate
):
    server = start_smtp_server(ssl_context=certificate.server_context)
    mailer = SmtpMailer(host="127.0.0.1", port=server.port, sender=SENDER, security="tls")
    with pytest.raises(ssl.SSLCertVerificationError):
        await mailer.send(verification_email("ada@example.com", None, LINK))
    assert server.handler.envelopes == []


async def test_smtp_starttls_never_falls_back_to_clear_text(start_smtp_server: Callable[..., SmtpServer]):
    import smtplib

    server = start_smtp_server()  # offers no STARTTLS
    mailer = SmtpMailer(host="127.0.0.1", port=server.port, sender=SENDER, security="starttls")
    with pytest.raises(smtplib.SMTPNotSupportedError):
        await mailer.send(verification_email("ada@example.com", None, LINK))
    assert server.handler.envelopes == []


async def test_smtp_wrong_credentials_raise(
    start_smtp_server: Callable[..., SmtpServer], certificate: Certificate
):
    import smtplib

    server = start_smtp_server(
        tls_context=certificate.server_context,
        authenticator=Credentials("mailer", "right"),
        auth_required=True,
    )
    mailer = SmtpMailer(
        host="127.0.0.1",
        port=server.port,
        sender=SENDER,
        username="mailer",
        password="wrong",
        ssl_context=certificate.client_context,
    )
    with pytest.raises(smtplib.SMTPAuthenticationError):
        await mailer.send(verification_email("ada@example.com", None, LINK))
    assert server.handler.envelopes == []


async def test_smtp_unreachable_server_raises():
    mailer = SmtpMailer(host="127.0.0.1", port=free_port(), sender=SENDER, security="none", timeout=2)
    with pytest.raises(OSError):
        await mailer.send(verification_email("ada@example.com", None, LINK))


def test_smtp_refuses_an_unknown_security_mode():
    with pytest.raises(ValueError):
        SmtpMailer(host="h", port=25, sender=SENDER, security="ssl")  # type: ignore[arg-type]


# --- the SMTP URL --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "host", "port", "security", "username"),
    [
        ("smtp://mail.example", "mail.example", 25, "none", None),
        ("smtp://mail.example:2525", "mail.example", 2525, "none", None),
        ("smtp://u%40x:p%3Aw@mail.example?starttls=true", "mail.example", 587, "starttls", "u@x"),
        ("smtp://mail.example:1587?starttls=yes&timeout=3.5", "mail.example", 1587, "starttls", None),
        ("smtps://user:pw@mail.example", "mail.example", 465, "tls", "user"),
        ("SMTPS://mail.example:2465", "mail.example", 2465, "tls", None),
    ],
)
def test_smtp_mailer_from_url(url: str, host: str, port: int, security: str, username: str | None):
    mailer = smtp_mailer_from_url(url, sender=SENDER)
    assert (mailer.host, mailer.port, mailer.security, mailer.username) == (host, port, security, username)
    assert mailer.sender == SENDER


def test_smtp_url_options_and_secrets():
    mailer = smtp_mailer_from_url("smtp://u:p%3Aw%2F@h?starttls=false&timeout=3.5", sender=SENDER)
    assert mailer.security == "none"
    assert mailer.timeout == 3.5
    assert mailer._password == "p:w/"
    assert "p:w/" not in repr(mailer)


@pytest.mark.parametrize(
    "url",
    [
        "http://mail.example",
        "smtp://",
        "smtp://mail.example?tls=true",
        "smtp://mail.example?starttls=maybe",
        "smtps://mail.example?starttls=true",
        "smtp://mail.example:notaport",
        "smtp://mail.example?timeout=soon",
        "smtp://mail.example?timeout=0",
    ],
)
def test_smtp_mailer_from_url_refuses_what_it_cannot_honour(url: str):
    with pytest.raises(ValueError):
        smtp_mailer_from_url(url, sender=SENDER)


async def test_smtp_url_mailer_delivers(start_smtp_server: Callable[..., SmtpServer]):
    server = start_smtp_server()
    mailer = smtp_mailer_from_url(f"smtp://127.0.0.1:{server.port}", sender=SENDER)
    await mailer.send(verification_email("ada@example.com", None, LINK))
    assert len(server.handler.envelopes) == 1


# --- the fakes' own helpers ----------------------------------------------------------------------


async def test_memory_mailer_finds_the_last_message_to_an_address():
    mailer = MemoryMailer()
    first = verification_email("ada@example.com", None, "https://pictor.example/1")
    reset = password_reset_email("ada@example.com", None, "https://pictor.example/2", 30)
    other = verification_email("grace@example.com", None, "https://pictor.example/3")
    for message in (first, reset, other):
        await mailer.send(message)
    assert mailer.last_to("ADA@example.com") == reset
    assert mailer.last_to("ada@example.com", kind="verify_email") == first
    assert mailer.last_to("nobody@example.com") is None


async def test_memory_mailer_can_fail_like_an_unreachable_server():
    mailer = MemoryMailer()
    message = verification_email("ada@example.com", None, LINK)
    mailer.fail_next(ConnectionRefusedError("down"), times=2)
    for _ in range(2):
        with pytest.raises(ConnectionRefusedError):
            await mailer.send(message)
    await mailer.send(message)
    assert mailer.sent == [message]


async def test_console_mailer_writes_to_standard_output_by_default(capsys: pytest.CaptureFixture[str]):
    await ConsoleMailer().send(verification_email("ada@example.com", "Ada", LINK))
    out = capsys.readouterr().out
    assert "To: ada@example.com" in out
    assert f"\n{LINK}\n" in out
