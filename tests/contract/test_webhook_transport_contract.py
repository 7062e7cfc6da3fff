"""The WebhookTransport port: the HTTP transport and the in-memory fake, one suite.

The HTTP transport talks to a threaded HTTP/1.1 receiver on 127.0.0.1 that records every
connection and request and answers as scripted; the fake gets the same scripts as `Reply`s and a
name table equal to the HTTP transport's resolver. Both must report statuses, `Retry-After` and
failures alike, deliver bodies and headers byte-exact, never follow redirects, never raise for what
the network does, and refuse unsafe targets (the issue's SSRF list) before any connection.

Then what only the HTTP transport does: TLS to a pinned address with SNI and certificate checks for
the real name, one deadline over the whole attempt, connecting to the address it checked (DNS
rebinding), bounded reads of hostile answers, the next address when one refuses, the system
resolver, and the reading of `Retry-After`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import email.utils
import socket
import socketserver
import ssl
import threading
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.webhook_transport import MemoryWebhookTransport, Reply
from adapters.webhooks_http.conventions import parse_retry_after
from adapters.webhooks_http.transport import HttpWebhookTransport, Resolver
from core.ports import WebhookTransport
from core.webhooks.deliveries import AttemptResult

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
TIMEOUT = 5.0
HOSTS: dict[str, list[str]] = {
    "localhost": ["127.0.0.1"],
    "hooks.example.test": ["127.0.0.1"],
    "internal.example.test": ["10.1.2.3"],
    "mixed.example.test": ["93.184.216.34", "10.0.0.7"],  # one public, one private address
    "public.example.test": ["93.184.216.34"],  # never connected to: only used where http is refused
}
EVENT_BODY = (
    '{"type":"generation.succeeded","timestamp":"2026-03-01T12:00:00Z",'
    '"data":{"id":"gen_1","prompt":"Zoë’s 画像 🎨"}}'
).encode()
SIGNED_HEADERS = {
    "webhook-id": "msg_2uKbqVdQmcFBbCKEXyaR7Z6xZkx",
    "webhook-timestamp": "1772366400",
    "webhook-signature": "v1,K5oZfzN95Z9UVu1EsfQmfVNQhnkZ2pj9o9NDN/H/pI4= v1,bm9ULXRoZS1zYW1lLXNlY3JldA==",
    "X-Request-ID": "req_01HZX",
}


def table_resolver(
    hosts: Mapping[str, Sequence[str]], calls: list[tuple[str, int]] | None = None
) -> Resolver:
    """A resolver reading `hosts`, as the fake does; unknown names fail like getaddrinfo."""

    async def resolve(host: str, port: int) -> list[str]:
        if calls is not None:
            calls.append((host, port))
        if host not in hosts:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return list(hosts[host])

    return resolve


# --- a receiver on loopback ----------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """What the receiver does with one request."""

    status: int = 200
    headers: tuple[tuple[str, str], ...] = ()
    body: bytes = b""
    hang: bool = False  # answer only once the test ends
    raw: bytes | None = None  # write these bytes instead of an HTTP answer, then hang up
    trickle: bool = False  # send the status line, then one endless header a byte at a time
    stall_body: bool = False  # send the status and headers, then one body byte, then nothing
    huge_body: int = 0  # announce and stream this many body bytes


@dataclass(frozen=True)
class Received:
    """One request as the receiver read it."""

    method: str
    target: str  # path and query
    host: str
    headers: dict[str, str]  # names lower-cased
    body: bytes


class Receiver:
    """A threaded HTTP/1.1 server on 127.0.0.1 (TLS when given a server context)."""

    def __init__(self, tls: ssl.SSLContext | None = None) -> None:
        self.tls = tls
        self.lock = threading.Lock()
        self.requests: list[Received] = []
        self.connections = 0
        self.tls_failures = 0
        self.server_names: list[str | None] = []
        self.release = threading.Event()  # ends every hanging answer
        self.body_aborted = threading.Event()
        self.body_completed = threading.Event()
        self._answers: defaultdict[str, deque[Answer]] = defaultdict(deque)
        if tls is not None:
            tls.sni_callback = self._on_server_name
        self._server = _Server(self)
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()

    def url(self, path: str = "/hook", *, host: str = "127.0.0.1") -> str:
        scheme = "https" if self.tls is not None else "http"
        return f"{scheme}://{host}:{self.port}{path}"

    def answer(self, path: str, *answers: Answer) -> None:
        """Answer the next requests to `path` (path and query) so; then 200 with no body."""
        with self.lock:
            self._answers[path].extend(answers)

    def take(self, received: Received) -> Answer:
        with self.lock:
            self.requests.append(received)
            script = self._answers.get(received.target)
            return script.popleft() if script else Answer()

    def stop(self) -> None:
        self.release.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _on_server_name(self, connection: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        with self.lock:
            self.server_names.append(name)


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host name up (getfqdn); nothing here needs it.
        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = "127.0.0.1", int(self.server_address[1])

    def verify_request(self, request: Any, client_address: Any) -> bool:
        with self.receiver.lock:
            self.receiver.connections += 1
        return True

    def finish_request(self, request: Any, client_address: Any) -> None:
        if self.receiver.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(30)
        try:  # the handshake runs in this connection's thread, not in the accept loop
            wrapped = self.receiver.tls.wrap_socket(request, server_side=True)
        except OSError:
            with self.receiver.lock:
                self.receiver.tls_failures += 1
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # clients hanging up mid-answer are part of the tests


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        receiver = self.server.receiver
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        answer = receiver.take(
            Received(
                method=self.command,
                target=self.path,
                host=self.headers.get("Host", ""),
                headers={name.lower(): value for name, value in self.headers.items()},
                body=body,
            )
        )
        if answer.hang:
            receiver.release.wait(30)
        if answer.raw is not None:
            self.wfile.write(answer.raw)
            self.close_connection = True
            return
        if answer.trickle:
            self.wfile.write(b"HTTP/1.1 200 OK\r\nX-Slow: ")
            while not receiver.release.wait(0.05):
                self.wfile.write(b"a")
                self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(answer.status)
        for name, value in answer.headers:
            self.send_header(name, value)
        length = answer.huge_body or (100 if answer.stall_body else len(answer.body))
        self.send_header("Content-Length", str(length))
        self.end_headers()
        if answer.stall_body:
            self.wfile.write(b"{")
            self.wfile.flush()
            receiver.release.wait(30)
        elif answer.huge_body:
            self._stream(answer.huge_body)
        else:
            self.wfile.write(answer.body)

    def _stream(self, size: int) -> None:
        chunk = b"x" * 65536
        try:
            for _ in range(size // len(chunk)):
                self.wfile.write(chunk)
            self.wfile.flush()
        except OSError:
            self.server.receiver.body_aborted.set()
            self.close_connection = True
            return
        self.server.receiver.body_completed.set()


# --- one suite over both adapters ----------------------------------------------------------------


class HttpCase:
    """The HTTP transport against a live receiver."""

    def __init__(self, receiver: Receiver) -> None:
        self.receiver = receiver
        self._transports: list[HttpWebhookTransport] = []

    def transport(self, *, allow_private: bool) -> WebhookTransport:
        transport = HttpWebhookTransport(
            allow_private=allow_private, resolver=table_resolver(HOSTS), now=lambda: NOW
        )
        self._transports.append(transport)
        return transport

    def url(self, path: str = "/hook", *, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.receiver.port}{path}"

    def answer(
        self,
        path: str,
        status: int,
        *,
        retry_after_seconds: int | None = None,
        as_http_date: bool = False,
        location: str | None = None,
    ) -> None:
        headers: list[tuple[str, str]] = []
        if retry_after_seconds is not None:
            when = NOW + timedelta(seconds=retry_after_seconds)
            value = (
                email.utils.format_datetime(when, usegmt=True) if as_http_date else str(retry_after_seconds)
            )
            headers.append(("Retry-After", value))
        if location is not None:
            headers.append(("Location", location))
        body = b"" if status in (204, 304) else b'{"ok":false}'
        self.receiver.answer(path, Answer(status=status, headers=tuple(headers), body=body))

    def never_answer(self, path: str) -> None:
        self.receiver.answer(path, Answer(hang=True))

    def unused_url(self, path: str = "/hook") -> str:
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        return f"http://127.0.0.1:{port}{path}"

    def received(self) -> list[Received]:
        with self.receiver.lock:
            return list(self.receiver.requests)

    def connections(self) -> int:
        with self.receiver.lock:
            return self.receiver.connections

    async def aclose(self) -> None:
        for transport in self._transports:
            await transport.aclose()


class MemoryCase:
    """The fake, scripted to behave as the receiver would."""

    PORT = 8080

    def __init__(self) -> None:
        self._transports: list[MemoryWebhookTransport] = []

    def transport(self, *, allow_private: bool) -> WebhookTransport:
        transport = MemoryWebhookTransport(allow_private=allow_private, hosts=HOSTS, now=lambda: NOW)
        self._transports.append(transport)
        return transport

    def url(self, path: str = "/hook", *, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.PORT}{path}"

    def _script(self, path: str, reply: Reply) -> None:
        # Scripts belong to a transport: tests make theirs before scripting answers.
        for transport in self._transports:
            transport.script(self.url(path), reply)

    def answer(
        self,
        path: str,
        status: int,
        *,
        retry_after_seconds: int | None = None,
        as_http_date: bool = False,
        location: str | None = None,
    ) -> None:
        retry_after = None if retry_after_seconds is None else float(retry_after_seconds)
        self._script(path, Reply(status_code=status, retry_after_seconds=retry_after))

    def never_answer(self, path: str) -> None:
        self._script(path, Reply.timeout())

    def unused_url(self, path: str = "/hook") -> str:
        url = f"http://127.0.0.1:9{path}"
        for transport in self._transports:
            transport.script(url, Reply.refused())
        return url

    def received(self) -> list[Received]:
        found = []
        for transport in self._transports:
            for sent in transport.requests:
                parts = urlsplit(sent.url)
                target = parts.path + (f"?{parts.query}" if parts.query else "")
                headers = {name.lower(): value for name, value in sent.headers.items()}
                found.append(Received("POST", target, parts.netloc, headers, sent.body))
        return found

    def connections(self) -> int:
        return sum(len(transport.requests) for transport in self._transports)

    async def aclose(self) -> None:
        pass


Case = HttpCase | MemoryCase


@pytest.fixture
def start_receiver() -> Iterator[Callable[..., Receiver]]:
    """Starts receivers on 127.0.0.1; stops them (ending any hanging answer) after the test."""
    receivers: list[Receiver] = []

    def start(tls: ssl.SSLContext | None = None) -> Receiver:
        receiver = Receiver(tls)
        receivers.append(receiver)
        return receiver

    yield start
    for receiver in receivers:
        receiver.stop()


@pytest.fixture(params=["memory", "http"])
async def case(
    request: pytest.FixtureRequest, start_receiver: Callable[..., Receiver]
) -> AsyncIterator[Case]:
    chosen: Case = MemoryCase() if request.param == "memory" else HttpCase(start_receiver())
    try:
        yield chosen
    finally:
        await chosen.aclose()


async def post(transport: WebhookTransport, url: str, *, timeout: float = TIMEOUT) -> AttemptResult:
    return await transport.send(url, headers=dict(SIGNED_HEADERS), body=EVENT_BODY, timeout_seconds=timeout)


@pytest.mark.parametrize("status", [200, 201, 202, 204, 299])
async def test_a_2xx_answer_is_a_success(case: Case, status: int):
    transport = case.transport(allow_private=True)
    case.answer("/hook", status)
    result = await post(transport, case.url("/hook"))
    assert (result.status_code, result.error, result.retry_after_seconds) == (status, None, None)
    assert result.succeeded and not result.gone
    assert result.duration_seconds >= 0
    assert [r.target for r in case.received()] == ["/hook"]


@pytest.mark.parametrize("status", [500, 503, 400, 404, 429, 304])
async def test_any_other_status_is_a_failure_that_keeps_its_code(case: Case, status: int):
    transport = case.transport(allow_private=True)
    case.answer("/hook", status)
    result = await post(transport, case.url("/hook"))
    assert (result.status_code, result.error) == (status, None)
    assert not result.succeeded and not result.gone


async def test_410_means_gone(case: Case):
    transport = case.transport(allow_private=True)
    case.answer("/hook", 410)
    result = await post(transport, case.url("/hook"))
    assert result.status_code == 410
    assert result.gone and not result.succeeded


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_a_redirect_is_reported_and_its_location_never_fetched(case: Case, status: int):
    transport = case.transport(allow_private=True)
    case.answer("/hook", status, location=case.url("/elsewhere"))
    result = await post(transport, case.url("/hook"))
    assert (result.status_code, result.error) == (status, None)
    assert not result.succeeded
    assert [r.target for r in case.received()] == ["/hook"]


async def test_retry_after_in_seconds(case: Case):
    transport = case.transport(allow_private=True)
    case.answer("/hook", 503, retry_after_seconds=120)
    result = await post(transport, case.url("/hook"))
    assert (result.status_code, result.retry_after_seconds) == (503, 120.0)


async def test_retry_after_as_an_http_date(case: Case):
    transport = case.transport(allow_private=True)
    case.answer("/hook", 429, retry_after_seconds=90, as_http_date=True)
    result = await post(transport, case.url("/hook"))
    assert (result.status_code, result.retry_after_seconds) == (429, 90.0)


async def test_body_and_headers_arrive_byte_exact(case: Case):
    transport = case.transport(allow_private=True)
    body = EVENT_BODY + bytes(range(256))
    url = case.url("/hooks/pictor?account=a%2Fb&x=1")
    result = await transport.send(url, headers=dict(SIGNED_HEADERS), body=body, timeout_seconds=TIMEOUT)
    assert result.succeeded
    [received] = case.received()
    assert received.method == "POST"
    assert received.target == "/hooks/pictor?account=a%2Fb&x=1"
    assert received.host == urlsplit(url).netloc
    assert received.body == body
    for name, value in SIGNED_HEADERS.items():
        assert received.headers[name.lower()] == value
    assert received.headers["content-type"] == "application/json"
    assert received.headers["user-agent"] == "Pictor-Webhooks/1"


async def test_the_callers_content_type_and_user_agent_win_and_its_host_is_ignored(case: Case):
    transport = case.transport(allow_private=True)
    url = case.url("/hook")
    given = {"Content-Type": "application/cloudevents+json", "User-Agent": "Custom/2", "Host": "evil.test"}
    result = await transport.send(url, headers=given, body=b"{}", timeout_seconds=TIMEOUT)
    assert result.succeeded
    [received] = case.received()
    assert received.headers["content-type"] == "application/cloudevents+json"
    assert received.headers["user-agent"] == "Custom/2"
    assert received.host == urlsplit(url).netloc


async def test_each_attempt_is_one_request(case: Case):
    transport = case.transport(allow_private=True)
    case.answer("/hook", 500)
    first = await post(transport, case.url("/hook"))
    second = await post(transport, case.url("/hook"))
    assert (first.status_code, second.status_code) == (500, 200)
    assert len(case.received()) == 2


async def test_a_receiver_that_never_answers_times_out(case: Case):
    transport = case.transport(allow_private=True)
    case.never_answer("/hook")
    result = await post(transport, case.url("/hook"), timeout=0.3)
    assert (result.status_code, result.error, result.retry_after_seconds) == (
        None,
        "timeout after 0.3s",
        None,
    )


async def test_connection_refused_is_a_result(case: Case):
    transport = case.transport(allow_private=True)
    result = await post(transport, case.unused_url())
    assert (result.status_code, result.error) == (None, "connection refused")
    assert not result.succeeded


@pytest.mark.parametrize("allow_private", [False, True])
async def test_an_unresolvable_host_is_a_result(case: Case, allow_private: bool):
    transport = case.transport(allow_private=allow_private)
    result = await post(transport, "https://nowhere.example.test/hook")
    assert (result.status_code, result.error) == (None, "cannot resolve nowhere.example.test")
    assert case.connections() == 0


@pytest.mark.parametrize(
    ("host", "error"),
    [
        ("127.0.0.1", "unsafe target: 127.0.0.1 is a loopback address"),
        ("10.0.0.1", "unsafe target: 10.0.0.1 is a private address"),
        ("169.254.169.254", "unsafe target: 169.254.169.254 is a link-local address (cloud metadata)"),
        ("[::1]", "unsafe target: ::1 is a loopback address"),
        (
            "[::ffff:127.0.0.1]",
            "unsafe target: ::ffff:127.0.0.1 is an IPv4-embedding IPv6 of a loopback address",
        ),
        ("localhost", "unsafe target: localhost resolves to a loopback address"),
        ("hooks.example.test", "unsafe target: hooks.example.test resolves to a loopback address"),
        ("internal.example.test", "unsafe target: internal.example.test resolves to a private address"),
        ("mixed.example.test", "unsafe target: mixed.example.test resolves to a private address"),
    ],
)
async def test_private_targets_are_refused_by_default_without_connecting(case: Case, host: str, error: str):
    transport = case.transport(allow_private=False)
    result = await post(transport, case.url("/hook", host=host, scheme="https"))
    assert (result.status_code, result.error) == (None, error)
    assert case.connections() == 0
    assert case.received() == []


async def test_plain_http_is_refused_unless_private_targets_are_allowed(case: Case):
    refusing = case.transport(allow_private=False)
    result = await post(refusing, "http://public.example.test/hook")
    assert result.error == "unsafe target: webhook URLs must use https"
    assert case.connections() == 0
    allowing = case.transport(allow_private=True)
    assert (await post(allowing, case.url("/hook"))).succeeded


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "hooks.example.test"])
async def test_loopback_is_reachable_when_private_targets_are_allowed(case: Case, host: str):
    transport = case.transport(allow_private=True)
    url = case.url("/hook", host=host)
    result = await post(transport, url)
    assert (result.status_code, result.error) == (200, None)
    [received] = case.received()
    assert received.host == urlsplit(url).netloc  # the name the URL gave, not the address


@pytest.mark.parametrize(
    ("host", "error"),
    [
        ("0.0.0.0", "unsafe target: 0.0.0.0 is an unspecified address"),
        ("224.0.0.1", "unsafe target: 224.0.0.1 is a multicast address"),
        ("192.0.2.10", "unsafe target: 192.0.2.10 is a reserved address"),
    ],
)
async def test_addresses_that_are_never_targets_stay_refused_when_private_is_allowed(
    case: Case, host: str, error: str
):
    transport = case.transport(allow_private=True)
    result = await post(transport, case.url("/hook", host=host))
    assert result.error == error
    assert case.connections() == 0


@pytest.mark.parametrize(
    ("url", "error"),
    [
        ("https://user:pw@hooks.example.test/hook", "unsafe target: webhook URLs must not carry credentials"),
        ("ftp://hooks.example.test/hook", "unsafe target: webhook URLs must use https or http"),
        ("https://hooks.example.test/hook#part", "unsafe target: webhook URLs must not have a fragment"),
        (
            "https://2130706433/hook",
            "unsafe target: the URL host looks like a numeric address; write the address in dotted form",
        ),
    ],
)
async def test_malformed_urls_are_refused_before_anything_else(case: Case, url: str, error: str):
    transport = case.transport(allow_private=True)
    result = await post(transport, url)
    assert result.error == error
    assert case.connections() == 0


@pytest.mark.parametrize("timeout", [0, -1, float("nan"), float("inf")])
async def test_a_timeout_that_is_not_a_positive_number_is_the_callers_mistake(case: Case, timeout: float):
    transport = case.transport(allow_private=True)
    with pytest.raises(ValueError):
        await post(transport, case.url("/hook"), timeout=timeout)
    assert case.connections() == 0


# --- the fake's own bookkeeping ------------------------------------------------------------------


async def test_the_fake_records_what_it_sent_where_and_when():
    fake = MemoryWebhookTransport(
        hosts={"hooks.example.com": ["2606:4700::1111", "1.1.1.1"]}, now=lambda: NOW
    )
    url = "https://hooks.example.com/hook"
    fake.script(url, Reply(status_code=503, retry_after_seconds=30), Reply.refused())
    results = [await post(fake, url, timeout=2.5) for _ in range(3)]
    assert [(r.status_code, r.error, r.retry_after_seconds) for r in results] == [
        (503, None, 30.0),
        (None, "connection refused", None),
        (200, None, None),
    ]
    assert [(s.address, s.timeout_seconds, s.sent_at, s.body) for s in fake.sent_to(url)] == [
        ("2606:4700::1111", 2.5, NOW, EVENT_BODY)
    ] * 3
    fake.set_host("hooks.example.com", ["10.0.0.5"])
    assert (await post(fake, url)).error == "unsafe target: hooks.example.com resolves to a private address"
    assert len(fake.requests) == 3


# --- only the HTTP transport: TLS to a pinned address --------------------------------------------


@dataclass(frozen=True)
class Certificates:
    """A test CA and a server certificate it signed for `hooks.pictor.test` only."""

    ca_file: Path
    chain_file: Path
    key_file: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.chain_file, self.key_file)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca_file))


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Pictor test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.pictor.test")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.pictor.test")]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    folder = tmp_path_factory.mktemp("webhook-tls")
    pem = serialization.Encoding.PEM
    certificates = Certificates(folder / "ca.pem", folder / "chain.pem", folder / "key.pem")
    certificates.ca_file.write_bytes(ca.public_bytes(pem))
    certificates.chain_file.write_bytes(leaf.public_bytes(pem) + ca.public_bytes(pem))
    certificates.key_file.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return certificates


@pytest.fixture
async def make_transport() -> AsyncIterator[Callable[..., HttpWebhookTransport]]:
    """Builds HTTP transports (allow_private=True and the test host table unless told otherwise)."""
    made: list[HttpWebhookTransport] = []

    def make(**options: Any) -> HttpWebhookTransport:
        options.setdefault("allow_private", True)
        options.setdefault("resolver", table_resolver(HOSTS))
        transport = HttpWebhookTransport(**options)
        made.append(transport)
        return transport

    yield make
    for transport in made:
        await transport.aclose()


async def test_https_to_a_pinned_address_verifies_the_certificate_for_the_name(
    start_receiver: Callable[..., Receiver],
    make_transport: Callable[..., HttpWebhookTransport],
    certificates: Certificates,
):
    receiver = start_receiver(certificates.server_context())
    calls: list[tuple[str, int]] = []
    transport = make_transport(
        resolver=table_resolver({"hooks.pictor.test": ["127.0.0.1"]}, calls),
        verify=certificates.client_context(),
    )
    result = await post(transport, receiver.url("/hook", host="hooks.pictor.test"))
    assert (result.status_code, result.error) == (200, None)
    assert calls == [("hooks.pictor.test", receiver.port)]
    assert receiver.server_names == ["hooks.pictor.test"]  # SNI carries the name, not the address
    [received] = receiver.requests
    assert received.host == f"hooks.pictor.test:{receiver.port}"
    assert received.body == EVENT_BODY


async def test_https_refuses_a_certificate_for_another_name(
    start_receiver: Callable[..., Receiver],
    make_transport: Callable[..., HttpWebhookTransport],
    certificates: Certificates,
):
    receiver = start_receiver(certificates.server_context())
    transport = make_transport(
        resolver=table_resolver({"other.pictor.test": ["127.0.0.1"]}), verify=certificates.client_context()
    )
    result = await post(transport, receiver.url("/hook", host="other.pictor.test"))
    assert result.status_code is None
    assert result.error is not None and result.error.startswith("TLS certificate rejected: ")
    assert "other.pictor.test" in result.error
    assert receiver.server_names == ["other.pictor.test"]
    assert receiver.requests == []


async def test_https_trusts_only_real_authorities_by_default(
    start_receiver: Callable[..., Receiver],
    make_transport: Callable[..., HttpWebhookTransport],
    certificates: Certificates,
):
    receiver = start_receiver(certificates.server_context())
    transport = make_transport(resolver=table_resolver({"hooks.pictor.test": ["127.0.0.1"]}))
    result = await post(transport, receiver.url("/hook", host="hooks.pictor.test"))
    assert result.error is not None and result.error.startswith("TLS certificate rejected: ")
    assert receiver.requests == []


async def test_plain_http_to_a_tls_receiver_is_a_result(
    start_receiver: Callable[..., Receiver],
    make_transport: Callable[..., HttpWebhookTransport],
    certificates: Certificates,
):
    receiver = start_receiver(certificates.server_context())
    result = await post(make_transport(), f"http://127.0.0.1:{receiver.port}/hook")
    assert result.status_code is None and result.error is not None
    assert receiver.requests == []


# --- only the HTTP transport: DNS rebinding, addresses, the system resolver ----------------------


async def test_the_connection_goes_to_the_checked_address_and_is_resolved_once(
    start_receiver: Callable[..., Receiver], make_transport: Callable[..., HttpWebhookTransport]
):
    receiver = start_receiver()
    with pytest.raises(socket.gaierror):  # the system cannot find it: only our resolver's answer can
        socket.getaddrinfo("rebind.test", receiver.port)
    calls: list[tuple[str, int]] = []
    transport = make_transport(resolver=table_resolver({"rebind.test": ["127.0.0.1"]}, calls))
    result = await post(transport, receiver.url("/hook", host="rebind.test"))
    assert (result.status_code, result.error) == (200, None)
    assert calls == [("rebind.test", receiver.port)]
    [received] = receiver.requests
    assert received.host == f"rebind.test:{receiver.port}"


async def test_the_next_checked_address_is_tried_when_one_refuses(
    start_receiver: Callable[..., Receiver], make_transport: Callable[..., HttpWebhookTransport]
):
    receiver = start_receiver()  # listens on 127.0.0.1 only
    transport = make_transport(resolver=table_resolver({"dual.test": ["::1", "127.0.0.1", "::1"]}))
    result = await post(transport, receiver.url("/hook", host="dual.test"))
    assert (result.status_code, result.error) == (200, None)
    assert len(receiver.requests) == 1


async def test_the_system_resolver_refuses_localhost_by_default(
    start_receiver: Callable[..., Receiver], make_transport: Callable[..., HttpWebhookTransport]
):
    receiver = start_receiver()
    refusing = HttpWebhookTransport(allow_private=False)
    try:
        result = await post(refusing, receiver.url("/hook", host="localhost").replace("http:", "https:"))
    finally:
        await refusing.aclose()
    assert result.error == "unsafe target: localhost resolves to a loopback address"
    assert receiver.connections == 0
    allowing = HttpWebhookTransport(allow_private=True)
    try:
        result = await post(allowing, receiver.url("/hook", host="localhost"))
    finally:
        await allowing.aclose()
    assert (result.status_code, result.error) == (200, None)
    assert receiver.requests[0].host == f"localhost:{receiver.port}"


# --- only the HTTP transport: the deadline and hostile receivers ---------------------------------


async def test_the_deadline_covers_resolving(make_transport: Callable[..., HttpWebhookTransport]):
    async def never(host: str, port: int) -> list[str]:
        await asyncio.Event().wait()
        return ["127.0.0.1"]

    result = await post(make_transport(resolver=never), "http://slow-dns.test/hook", timeout=0.2)
    assert (result.status_code, result.error) == (None, "timeout after 0.2s")


async def test_the_deadline_is_overall_not_per_read(
    start_receiver: Callable[..., Receiver], make_transport: Callable[..., HttpWebhookTransport]
):
    receiver = start_receiver()
    receiver.answer("/hook", Answer(trickle=True))  # every read gets a byte well within the timeout
    result = await post(make_transport(), receiver.url("/hook"), timeout=0.5)
    assert (result.status_code, result.error) == (None, "timeout after 0.5s")


async def test_a_status_that_came_back_counts_even_if_the_body_stalls(
    start_receiver: Callable[..., Receiver], make_transport: Callable[..., HttpWebhookTransport]
):
    receiver = start_receiver()
    receiver.answer("/hook", Answer(status=202, stall_body=True, headers=(("Retry-After", "7"),)))
    result = await post(make_transport(), receiver.url("/hook"), timeout=1.0)
    assert (result.status_code, result.error, result.retry_after_seconds) == (202, None, 7.0)


async def test_a_huge_answer_is_not_read_to_the_end(
    start_receiver: Callable[..., Receiver], make_transport: Callable[..., HttpWebhookTransport]
):
    receiver = start_receiver()
    receiver.answer("/hook", Answer(status=200, huge_body=256 * 1024 * 1024))
    result = await post(make_transport(), receiver.url("/hook"))
    assert (result.status_code, result.error) == (200, None)
    assert receiver.body_aborted.wait(30)  # we hung up long before the receiver finished writing
    assert not receiver.body_completed.is_set()


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"", "the receiver closed the connection without answering"),
        (b"NOT HTTP AT ALL\r\n\r\n", "the receiver's answer is not valid HTTP"),
        (b"HTTP/1.1 200 OK\r\nContent-Length: nope\r\n\r\n", "the receiver's answer is not valid HTTP"),
    ],
)
async def test_broken_answers_are_results(
    start_receiver: Callable[..., Receiver],
    make_transport: Callable[..., HttpWebhookTransport],
    raw: bytes,
    error: str,
):
    receiver = start_receiver()
    receiver.answer("/hook", Answer(raw=raw))
    result = await post(make_transport(), receiver.url("/hook"))
    assert (result.status_code, result.error) == (None, error)
    assert EVENT_BODY.decode() not in error


async def test_a_closed_transport_refuses_to_send(make_transport: Callable[..., HttpWebhookTransport]):
    transport = make_transport()
    await transport.aclose()
    with pytest.raises(RuntimeError):
        await post(transport, "http://127.0.0.1:9/hook")


# --- only the HTTP transport: reading Retry-After ------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        (None, None),
        ("120", 120.0),
        (" 0 ", 0.0),
        ("86400000", 86_400_000.0),  # the delivery rules cap it, not the reading
        ("-5", None),
        ("1.5", None),
        ("soon", None),
        ("", None),
        ("１２", None),  # full-width digits are no delta-seconds
        ("9" * 400, None),
        ("Sun, 01 Mar 2026 12:02:00 GMT", 120.0),
        ("Sunday, 01-Mar-26 12:00:30 GMT", 30.0),  # RFC 850
        ("Sun Mar  1 12:00:05 2026", 5.0),  # asctime
        ("Sun, 01 Mar 2026 11:59:00 GMT", None),  # already past
        ("Sun, 32 Mar 2026 12:00:00 GMT", None),
    ],
)
def test_parse_retry_after(value: str | None, seconds: float | None):
    assert parse_retry_after(value, NOW) == seconds


@given(st.text(max_size=60))
def test_parse_retry_after_never_raises(value: str):
    seconds = parse_retry_after(value, NOW)
    assert seconds is None or seconds >= 0
