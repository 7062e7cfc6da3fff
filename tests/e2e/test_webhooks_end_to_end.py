"""Issue 6 "Done when": webhooks on real processes, every delivery checked with the reference
`standardwebhooks` package.

One deployment is shared by the module: PostgreSQL (a fresh schema), Valkey (cache and SAQ queue),
local files, `pictor serve` without an embedded worker and a separate `pictor worker` (replaced
when a test kills it), with PICTOR_WEBHOOKS_ALLOW_PRIVATE=true so a plain-http receiver on
127.0.0.1 is a valid target, a short retry schedule and a short outbox poll. Each test uses its
own user and its own receiver path. The SSRF test runs a second, small deployment with the default
PICTOR_WEBHOOKS_ALLOW_PRIVATE=false.

Events come from real state changes over the API: a generation that renders
(`generation.succeeded`, whose links are signed again at each attempt) or a move to the `pro` plan
(`subscription.updated`, a body that is the same bytes on every attempt).

Waits are bounded only so that a broken build fails instead of hanging; no test asserts a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest
import standardwebhooks

from adapters.postgres.migrations import apply_migrations
from tests.e2e.processes import PictorProcess, clean_environ, free_port
from tests.e2e.test_generations_end_to_end import Deployment, shared_environ, start_serve
from tests.support import services
from tests.support.accounts import PASSWORD
from tests.support.webhook_receiver import Received, Reply, WebhookReceiver

pytestmark = pytest.mark.e2e

RETRY_SCHEDULE = "0,0.5,0.5,0.5"  # four attempts, half a second apart
BOUND = 60.0  # seconds: a bound on a wait, never a threshold under test
# A killed sender's lease lasts 20 s (15 s timeout + 5 s); then a relay round dispatches again.
RECOVERY_BOUND = 120.0


# ---------------------------------------------------------------------------- the deployment


@dataclass
class Stack:
    """A running deployment, the environment its processes share, and its current worker."""

    env: dict[str, str]
    log_dir: Path
    deployment: Deployment
    database_url: str
    worker: PictorProcess | None = None
    started_workers: int = 0

    @property
    def base_url(self) -> str:
        return self.deployment.base_url

    def start_worker(self) -> PictorProcess:
        self.started_workers += 1
        name = f"worker-{self.started_workers}"
        self.worker = PictorProcess(["worker"], clean_environ(self.env), self.log_dir / f"{name}.log")
        self.deployment.processes.append(self.worker)
        return self.worker

    def ensure_worker(self) -> None:
        if self.worker is None or self.worker.process.poll() is not None:
            self.start_worker()

    def kill_worker(self) -> None:
        """SIGKILL the current worker's whole process group: no shutdown, no clean-up."""
        assert self.worker is not None
        self.worker.kill()
        assert self.worker.process.returncode == -9
        self.worker = None


@contextlib.contextmanager
def fresh_schema() -> Iterator[str]:
    """A fresh, migrated schema in the test database, dropped afterwards; yields its URL."""
    base = services.require_postgres()
    schema = services.unique_name("wh")
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as error:
        services.unavailable(f"PostgreSQL: {error}")
    separator = "&" if "?" in base else "?"
    url = f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    try:
        asyncio.run(apply_migrations(url))
        yield url
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as running:
        yield running


def stack_environ(log_dir: Path, port: int, database_url: str, valkey_url: str) -> dict[str, str]:
    env = shared_environ(log_dir, port)
    env |= {
        "PICTOR_DATABASE_URL": database_url,
        "PICTOR_VALKEY_URL": valkey_url,
        "PICTOR_QUEUE_URL": valkey_url,
        "PICTOR_NAMESPACE": services.unique_name("wh").replace("_", "-"),
        "PICTOR_STORAGE_URL": (log_dir / "blobs").as_uri(),
        # Serve and worker must share these: the worker signs image links and derives the
        # webhook secrets that the API showed.
        "PICTOR_SECRET_URL_SIGNING_KEY": "e2e-signing-key",
        "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "e2e-webhook-master-key-of-enough-length",
        "PICTOR_METRICS_TOKEN": "e2e-metrics-token",
        "PICTOR_EMBEDDED_WORKER": "false",  # only the separate worker relays the outbox and sends
        "PICTOR_WEBHOOK_RETRY_SCHEDULE": RETRY_SCHEDULE,
        "PICTOR_OUTBOX_POLL_INTERVAL_SECONDS": "0.2",
        "PICTOR_LOG_LEVEL": "info",
    }
    return env


@contextlib.contextmanager
def running_stack(
    tmp_path_factory: pytest.TempPathFactory, name: str, *, allow_private: bool
) -> Iterator[Stack]:
    """Its own schema, `pictor serve` and one `pictor worker`; everything stops on exit."""
    valkey_url = services.require_valkey()
    log_dir = tmp_path_factory.mktemp(name)
    port = free_port()
    with fresh_schema() as database_url:
        env = stack_environ(log_dir, port, database_url, valkey_url)
        env["PICTOR_WEBHOOKS_ALLOW_PRIVATE"] = "true" if allow_private else "false"
        stack = Stack(env, log_dir, Deployment(f"http://127.0.0.1:{port}"), database_url)
        try:
            start_serve(env, log_dir, stack.deployment)
            stack.start_worker()
            yield stack
        finally:
            stack.deployment.stop()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory, "webhooks", allow_private=True) as running:
        yield running


@pytest.fixture
def pictor(stack: Stack) -> Stack:
    """The shared deployment with a live worker (a test before may have killed it)."""
    stack.ensure_worker()
    return stack


# ---------------------------------------------------------------------------- API steps


@dataclass(frozen=True)
class Account:
    """A fresh user: a session token (plan changes need one) and an API key (everything else)."""

    user_id: str
    session: dict[str, str]
    key: dict[str, str]


def new_account(base_url: str, label: str) -> Account:
    email = f"{label}-{services.unique_name('u')}@example.com".replace("_", "-")
    registered = httpx.post(f"{base_url}/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{base_url}/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    session = {"Authorization": f"Bearer {login.json()['token']}"}
    created = httpx.post(f"{base_url}/v1/api-keys", json={"name": "webhooks"}, headers=session)
    assert created.status_code == 201, created.text
    key = {"Authorization": f"Bearer {created.json()['key']}"}
    me = httpx.get(f"{base_url}/v1/me", headers=key, timeout=30)
    assert me.status_code == 200, me.text
    return Account(user_id=str(me.json()["id"]), session=session, key=key)


def register_endpoint(base_url: str, account: Account, url: str, events: list[str]) -> dict[str, Any]:
    created = httpx.post(
        f"{base_url}/v1/webhook-endpoints",
        json={"url": url, "events": events},
        headers=account.key,
        timeout=30,
    )
    assert created.status_code == 201, created.text
    body = dict(created.json())
    assert body["secret"].startswith("whsec_") and body["url"] == url, body
    return body


def upgrade(base_url: str, account: Account) -> None:
    """Move to `pro` (a trial from free, nothing to pay): one `subscription.updated` event."""
    upgraded = httpx.post(
        f"{base_url}/v1/subscription", json={"plan": "pro"}, headers=account.session, timeout=30
    )
    assert upgraded.status_code == 200, upgraded.text


def generate(base_url: str, account: Account, n: int, **extra: Any) -> str:
    created = httpx.post(
        f"{base_url}/v1/generations",
        json={"prompt": "a lighthouse at dusk", "size": "256x256", "n": n, **extra},
        headers=account.key,
        timeout=30,
    )
    assert created.status_code == 202, created.text
    return str(created.json()["id"])


def deliveries(base_url: str, account: Account, endpoint_id: str) -> list[dict[str, Any]]:
    listed = httpx.get(
        f"{base_url}/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=account.key, timeout=30
    )
    assert listed.status_code == 200, listed.text
    return list(listed.json()["data"])


def wait_for_delivery(
    stack: Stack, account: Account, endpoint_id: str, done: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The endpoint's only delivery, once `done` holds for it."""
    deadline = time.monotonic() + BOUND
    listed: list[dict[str, Any]] = []
    while time.monotonic() < deadline:
        listed = deliveries(stack.base_url, account, endpoint_id)
        if len(listed) == 1 and done(listed[0]):
            return listed[0]
        time.sleep(0.2)
    raise AssertionError(f"deliveries never got there: {listed}\n{stack.deployment.output()}")


def verified(secret: str, request: Received) -> dict[str, Any]:
    """The payload, verified by the reference implementation (it raises when it may not trust it)."""
    payload = standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    assert isinstance(payload, dict)
    return payload


def refused_by(secret: str, request: Received) -> bool:
    try:
        standardwebhooks.Webhook(secret).verify(request.body, request.headers)
    except standardwebhooks.WebhookVerificationError:
        return True
    return False


def signatures(request: Received) -> list[str]:
    return request.headers["webhook-signature"].split(" ")


def check_images(payload: dict[str, Any], generation_id: str, n: int) -> None:
    """The thin payload names the generation and carries signed links (no bytes) that download."""
    data = payload["data"]
    assert (data["id"], data["status"], data["n"]) == (generation_id, "succeeded", n), data
    assert [image["index"] for image in data["images"]] == list(range(n))
    for image in data["images"]:
        assert set(image) >= {"url", "url_expires_at", "sha256", "bytes", "content_type"}, image
        download = httpx.get(image["url"], timeout=30)  # the link is the permission
        assert download.status_code == 200, download.text
        assert hashlib.sha256(download.content).hexdigest() == image["sha256"]
        assert len(download.content) == image["bytes"]


def wrong_secret(secret: str) -> str:
    return "whsec_" + ("B" if secret[6] == "A" else "A") + secret[7:]


# ---------------------------------------------------------------------------- tests


def test_deliveries_verify_with_standardwebhooks_before_and_after_a_secret_rotation(
    pictor: Stack, receiver: WebhookReceiver
) -> None:
    base = pictor.base_url
    account = new_account(base, "signed")
    path = "/signed"
    endpoint = register_endpoint(
        base, account, receiver.url(path), ["generation.succeeded", "subscription.updated"]
    )
    old_secret = endpoint["secret"]

    generation_id = generate(base, account, n=2)
    (first,) = receiver.wait_for(path, 1, timeout=BOUND)
    payload = verified(old_secret, first)
    assert refused_by(wrong_secret(old_secret), first)  # the check above can fail
    assert payload["type"] == "generation.succeeded" and "timestamp" in payload, payload
    check_images(payload, generation_id, n=2)
    assert len(signatures(first)) == 1
    delivered = wait_for_delivery(pictor, account, endpoint["id"], lambda d: d["status"] == "succeeded")
    assert first.headers["webhook-id"] == delivered["event_id"]
    assert (delivered["event_type"], delivered["attempts"], delivered["last_status_code"]) == (
        "generation.succeeded",
        1,
        200,
    )

    rotated = httpx.post(
        f"{base}/v1/webhook-endpoints/{endpoint['id']}/secret/rotate", headers=account.key, timeout=30
    )
    assert rotated.status_code == 200, rotated.text
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_") and new_secret != old_secret

    upgrade(base, account)
    second = receiver.wait_for(path, 2, timeout=BOUND)[1]
    assert second.headers["webhook-id"] != first.headers["webhook-id"]
    # During the 24 h overlap both secrets sign: a receiver on either one accepts the message.
    assert len(signatures(second)) == 2 and all(s.startswith("v1,") for s in signatures(second))
    after_rotation = verified(new_secret, second)
    assert verified(old_secret, second) == after_rotation
    assert refused_by(wrong_secret(new_secret), second)
    assert after_rotation["type"] == "subscription.updated"
    assert after_rotation["data"]["plan"] == "pro", after_rotation


def test_a_receiver_that_fails_twice_gets_three_identical_attempts_and_accepts_one(
    pictor: Stack, receiver: WebhookReceiver
) -> None:
    base = pictor.base_url
    account = new_account(base, "flaky")
    path = "/flaky"
    receiver.script(path, [Reply(500), Reply(500)])  # then 200
    endpoint = register_endpoint(base, account, receiver.url(path), ["subscription.updated"])

    upgrade(base, account)
    attempts = receiver.wait_for(path, 3, timeout=BOUND)
    for attempt in attempts:
        assert verified(endpoint["secret"], attempt)["type"] == "subscription.updated"
    assert len({a.headers["webhook-id"] for a in attempts}) == 1  # stable across retries
    assert len({a.body for a in attempts}) == 1  # the same message, byte for byte
    assert [a.status for a in attempts] == [500, 500, 200]  # exactly one accepted

    delivery = wait_for_delivery(pictor, account, endpoint["id"], lambda d: d["status"] == "succeeded")
    assert delivery["event_id"] == attempts[0].headers["webhook-id"]
    assert (delivery["attempts"], delivery["last_status_code"], delivery["next_attempt_at"]) == (3, 200, None)
    assert len(receiver.received(path)) == 3  # a finished delivery is not sent again


async def unpublished_events(database_url: str, user_id: str) -> list[tuple[str, str]]:
    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        rows = await conn.execute(
            "SELECT id, type FROM outbox WHERE payload->>'user_id' = %s AND published_at IS NULL",
            (user_id,),
        )
        return [(str(id_), str(type_)) for id_, type_ in await rows.fetchall()]


def test_an_event_committed_while_no_worker_runs_is_delivered_by_the_next_worker(
    pictor: Stack, receiver: WebhookReceiver
) -> None:
    base = pictor.base_url
    account = new_account(base, "offline")
    path = "/offline"
    endpoint = register_endpoint(base, account, receiver.url(path), ["subscription.updated"])

    pictor.kill_worker()
    upgrade(base, account)  # the state change commits its event to the outbox, and nobody publishes it
    ((event_id, event_type),) = asyncio.run(unpublished_events(pictor.database_url, account.user_id))
    assert event_type == "subscription.updated"
    assert receiver.received(path) == []

    pictor.start_worker()
    (request,) = receiver.wait_for(path, 1, timeout=BOUND)
    assert request.headers["webhook-id"] == event_id
    assert verified(endpoint["secret"], request)["data"]["plan"] == "pro"
    assert asyncio.run(unpublished_events(pictor.database_url, account.user_id)) == []
    wait_for_delivery(pictor, account, endpoint["id"], lambda d: d["status"] == "succeeded")


@pytest.mark.timeout(RECOVERY_BOUND + 120)
def test_a_worker_killed_while_sending_leaves_a_lease_that_runs_out_and_the_event_arrives_again(
    pictor: Stack, receiver: WebhookReceiver
) -> None:
    base = pictor.base_url
    account = new_account(base, "killed")
    path = "/killed"
    hang = Reply.hang()
    receiver.script(path, [hang])  # the first request waits for us; the next one gets 200
    endpoint = register_endpoint(base, account, receiver.url(path), ["subscription.updated"])

    upgrade(base, account)
    (in_flight,) = receiver.wait_for(path, 1, timeout=BOUND)
    pending = deliveries(base, account, endpoint["id"])
    assert [(d["status"], d["attempts"]) for d in pending] == [("pending", 0)], pending
    pictor.kill_worker()  # in the middle of the attempt: no answer recorded, the send lease stays
    killed_at = time.monotonic()
    hang.release()  # answers a connection nobody holds any more

    pictor.start_worker()
    again = receiver.wait_for(path, 2, timeout=RECOVERY_BOUND)[1]
    print(f"\nthe event arrived again {again.at - killed_at:.1f} s after the SIGKILL")  # reported only
    assert again.headers["webhook-id"] == in_flight.headers["webhook-id"]
    assert again.body == in_flight.body
    assert verified(endpoint["secret"], in_flight) == verified(endpoint["secret"], again)
    assert again.status == 200
    delivery = wait_for_delivery(pictor, account, endpoint["id"], lambda d: d["status"] == "succeeded")
    assert delivery["event_id"] == in_flight.headers["webhook-id"]
    assert delivery["last_status_code"] == 200
    # Only attempts whose outcome was recorded count; the killed one never got that far.
    assert delivery["attempts"] >= 1


def test_a_per_request_webhook_url_is_signed_with_the_account_secret(
    pictor: Stack, receiver: WebhookReceiver
) -> None:
    base = pictor.base_url
    account = new_account(base, "per-request")
    path = "/per-request"
    shown = httpx.get(f"{base}/v1/webhook-secret", headers=account.key, timeout=30)
    assert shown.status_code == 200, shown.text
    secret = shown.json()["secret"]
    assert secret.startswith("whsec_")
    again = httpx.get(f"{base}/v1/webhook-secret", headers=account.key, timeout=30)
    assert again.json()["secret"] == secret  # made on first use, then the same

    generation_id = generate(base, account, n=1, webhook_url=receiver.url(path))
    (request,) = receiver.wait_for(path, 1, timeout=BOUND)
    payload = verified(secret, request)
    assert refused_by(wrong_secret(secret), request)
    assert payload["type"] == "generation.succeeded"
    check_images(payload, generation_id, n=1)
    assert len(signatures(request)) == 1


def test_410_gone_disables_the_endpoint_and_a_manual_retry_delivers_after_enabling_it(
    pictor: Stack, receiver: WebhookReceiver
) -> None:
    base = pictor.base_url
    account = new_account(base, "gone")
    path = "/gone"
    receiver.script(path, [Reply(410)])  # then 200
    endpoint = register_endpoint(base, account, receiver.url(path), ["subscription.updated"])
    endpoint_url = f"{base}/v1/webhook-endpoints/{endpoint['id']}"

    upgrade(base, account)
    (gone,) = receiver.wait_for(path, 1, timeout=BOUND)
    verified(endpoint["secret"], gone)
    failed = wait_for_delivery(pictor, account, endpoint["id"], lambda d: d["status"] == "failed")
    assert (failed["attempts"], failed["last_status_code"], failed["next_attempt_at"]) == (1, 410, None)
    shown = httpx.get(endpoint_url, headers=account.key, timeout=30).json()
    assert shown["status"] == "disabled" and "410" in shown["disabled_reason"], shown

    retry_url = f"{endpoint_url}/deliveries/{failed['id']}/retry"
    refused = httpx.post(retry_url, headers=account.key, timeout=30)
    assert refused.status_code == 409 and refused.json()["code"] == "invalid_state", refused.text
    enabled = httpx.patch(endpoint_url, json={"enabled": True}, headers=account.key, timeout=30)
    assert enabled.status_code == 200 and enabled.json()["status"] == "active", enabled.text

    retried = httpx.post(retry_url, headers=account.key, timeout=30)
    assert retried.status_code == 202, retried.text
    second = receiver.wait_for(path, 2, timeout=BOUND)[1]
    assert second.headers["webhook-id"] == gone.headers["webhook-id"] == failed["event_id"]
    assert verified(endpoint["secret"], second) == verified(endpoint["secret"], gone)
    done = wait_for_delivery(pictor, account, endpoint["id"], lambda d: d["status"] == "succeeded")
    assert (done["attempts"], done["last_status_code"]) == (2, 200)


def test_private_targets_are_refused_at_registration_and_a_private_name_at_delivery(
    tmp_path_factory: pytest.TempPathFactory, receiver: WebhookReceiver
) -> None:
    """The default configuration (PICTOR_WEBHOOKS_ALLOW_PRIVATE=false), in a deployment of its own."""
    with running_stack(tmp_path_factory, "guarded", allow_private=False) as guarded:
        refuse_private_targets(guarded, receiver)


def refuse_private_targets(guarded: Stack, receiver: WebhookReceiver) -> None:
    base = guarded.base_url
    account = new_account(base, "ssrf")
    for url in (
        "https://127.0.0.1/",
        "https://10.0.0.1/",
        "https://169.254.169.254/",
        "https://[::1]/",
        receiver.url("/plain-http"),  # plain http is refused as well, whatever the host
    ):
        refused = httpx.post(
            f"{base}/v1/webhook-endpoints", json={"url": url}, headers=account.key, timeout=30
        )
        assert refused.status_code == 422, (url, refused.text)
        assert refused.json()["code"] == "unsafe_url", (url, refused.text)
    per_request = httpx.post(
        f"{base}/v1/generations",
        json={"prompt": "a lighthouse", "size": "256x256", "webhook_url": "https://10.0.0.1/hook"},
        headers=account.key,
        timeout=30,
    )
    assert per_request.status_code == 422 and per_request.json()["code"] == "unsafe_url", per_request.text

    # A name is not resolved at registration; at delivery it resolves to loopback and is refused
    # before any connection is made (the receiver listens on that very port).
    path = "/ssrf"
    endpoint = register_endpoint(
        base, account, receiver.url(path, host="localhost", scheme="https"), ["subscription.updated"]
    )
    connections_before = receiver.connections
    upgrade(base, account)
    failed = wait_for_delivery(guarded, account, endpoint["id"], lambda d: d["status"] == "failed")
    assert failed["attempts"] == len(RETRY_SCHEDULE.split(","))  # every attempt refused, none sent
    assert failed["last_status_code"] is None
    assert failed["last_error"].startswith("unsafe target"), failed
    assert receiver.received(path) == []
    assert receiver.connections == connections_before
