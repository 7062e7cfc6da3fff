"""Issue 7 "Done when": traffic through two server processes (`pictor serve --workers 2`) and a
`pictor worker`, on real PostgreSQL and Valkey, reads back as consistent totals: the API's
`/metrics` sums both processes (prometheus-client multiprocess mode), the worker serves its own
`/metrics`, and each event is counted once, where it happened. `promtool check metrics` (Debian's
prometheus package) finds nothing wrong in either exposition.

The traffic runs once for the module; each test reads what it left.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import httpx
import psycopg
import pytest
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from adapters.postgres.migrations import apply_migrations
from tests.e2e.processes import PictorProcess, clean_environ, free_port
from tests.e2e.test_generations_end_to_end import Deployment
from tests.support import services
from tests.support.accounts import PASSWORD

pytestmark = pytest.mark.e2e

TOKEN = "e2e-metrics-token"
POOL_MAX = 3
PLANS_REQUESTS = 40  # unauthenticated GET /v1/plans, spread over both server processes
MONTHLY_IMAGES = 3  # the fourth generation is refused with quota_exceeded
BURST = 20  # requests per credential per hour: GET /v1/me past it is refused with rate_limited
OVER_BURST = 3
WRONG_LOGINS = 5  # the account throttle allows five attempts; the sixth is too_many_attempts
BOUND_SECONDS = 90  # a bound on every wait, not a threshold under test

PLANS = f"""
format = 1

[plans.free]
name = "Metered"
monthly_price_cents = 0
currency = "USD"
monthly_images = {MONTHLY_IMAGES}
rate_limit = {{ requests = {BURST}, per_seconds = 3600, burst = {BURST} }}
max_concurrent_jobs = 1
max_image_pixels = 262144
features = ["api_access"]
"""

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    """The sum of `name` over every series whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(value for (n, series), value in samples.items() if n == name and wanted <= set(series))


@dataclass
class Driven:
    """The running deployment and what the traffic was."""

    deployment: Deployment
    api_url: str
    worker_url: str
    multiprocess_dir: Path
    stored_bytes: int


def scrape(url: str) -> str:
    response = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


def wait_until(what: str, check: Callable[[], bool], deployment: Deployment) -> None:
    deadline = time.monotonic() + BOUND_SECONDS
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {BOUND_SECONDS} s\n{deployment.output()}")


@pytest.fixture(scope="module")
def schema_url() -> Iterator[str]:
    """A fresh schema for the module (the `postgres_url` fixture lives one test only)."""
    base = services.require_postgres()
    schema = services.unique_name("metrics")
    try:
        with psycopg.connect(base, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE SCHEMA "{schema}"')
    except psycopg.OperationalError as error:
        services.unavailable(f"PostgreSQL: {error}")
    separator = "&" if "?" in base else "?"
    url = f"{base}{separator}options={quote(f'-csearch_path={schema}')}"
    asyncio.run(apply_migrations(url))
    yield url
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def register_and_login(base_url: str, email: str) -> str:
    registered = httpx.post(f"{base_url}/v1/auth/register", json={"email": email, "password": PASSWORD})
    assert registered.status_code == 201, registered.text
    login = httpx.post(f"{base_url}/v1/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200, login.text
    return str(login.json()["token"])


def api_key(base_url: str, session: str) -> dict[str, str]:
    created = httpx.post(
        f"{base_url}/v1/api-keys", json={"name": "metrics"}, headers={"Authorization": f"Bearer {session}"}
    )
    assert created.status_code == 201, created.text
    return {"Authorization": f"Bearer {created.json()['key']}"}


@pytest.fixture(scope="module")
def driven(schema_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Driven]:
    valkey_url = services.require_valkey()
    tmp_path = tmp_path_factory.mktemp("metrics")
    plans = tmp_path / "plans.toml"
    plans.write_text(PLANS)
    port, worker_port = free_port(), free_port()
    # `pictor serve --workers 2` makes one of its own; this one is the test's, to inspect. Like an
    # operator's, it must exist: prometheus-client opens its files there on import.
    multiprocess_dir = tmp_path / "prometheus"
    multiprocess_dir.mkdir()
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path / "var"),
            "PICTOR_PORT": str(port),
            "PICTOR_DATABASE_URL": schema_url,
            "PICTOR_VALKEY_URL": valkey_url,
            "PICTOR_QUEUE_URL": valkey_url,
            "PICTOR_NAMESPACE": services.unique_name("metrics").replace("_", "-"),
            "PICTOR_STORAGE_URL": (tmp_path / "blobs").as_uri(),
            "PICTOR_SECRET_URL_SIGNING_KEY": "e2e-signing-key",
            "PICTOR_METRICS_TOKEN": TOKEN,
            "PICTOR_PLANS_FILE": str(plans),
            "PICTOR_EMBEDDED_WORKER": "false",
            "PICTOR_RENDER_STEPS": "2",
            "PICTOR_RENDER_WORKERS": "1",
            "PICTOR_DB_POOL_MIN": "1",
            "PICTOR_DB_POOL_MAX": str(POOL_MAX),
            "PICTOR_METRICS_SAMPLE_INTERVAL_SECONDS": "0.5",
            "PICTOR_WORKER_METRICS_PORT": str(worker_port),
            "PICTOR_LOG_LEVEL": "warning",
        }
    )
    base_url = f"http://127.0.0.1:{port}"
    deployment = Deployment(base_url)
    try:
        server = PictorProcess(
            ["serve", "--workers", "2"],
            {**env, "PROMETHEUS_MULTIPROC_DIR": str(multiprocess_dir)},
            tmp_path / "serve.log",
        )
        deployment.processes.append(server)
        server.wait_ready(base_url, timeout=90)
        api_metrics = f"{base_url}/metrics"

        # Before any worker runs: two verification emails wait on the email queue, as the API sees.
        ada = register_and_login(base_url, "ada@example.com")
        bea = register_and_login(base_url, "bea@example.com")
        wait_until(
            "the API's queue gauges show the waiting emails",
            lambda: total(parse(scrape(api_metrics)), "pictor_queue_depth", queue="email") == 2,
            deployment,
        )
        for _ in range(WRONG_LOGINS + 1):
            refused = httpx.post(
                f"{base_url}/v1/auth/login",
                json={"email": "nobody@example.com", "password": "wrong password!"},
            )
            assert refused.status_code in (401, 429), refused.text
        assert refused.json()["code"] == "too_many_attempts"

        # A new connection each: the kernel spreads them over both server processes.
        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(
                pool.map(lambda _: httpx.get(f"{base_url}/v1/plans").status_code, range(PLANS_REQUESTS))
            )
        assert statuses == [200] * PLANS_REQUESTS

        worker = PictorProcess(["worker"], env, tmp_path / "worker.log")
        deployment.processes.append(worker)
        ada_key = api_key(base_url, ada)
        stored_bytes = 0
        for n in range(MONTHLY_IMAGES):
            done = httpx.post(
                f"{base_url}/v1/generations",
                json={"prompt": f"harbour number {n}", "size": "256x256", "n": 1, "seed": n},
                headers={**ada_key, "Prefer": "wait=60"},
                timeout=90,
            )
            assert done.status_code == 200, (done.text, deployment.output())
            assert done.json()["status"] == "succeeded", done.text
            stored_bytes += sum(image["bytes"] for image in done.json()["images"])
        over_quota = httpx.post(
            f"{base_url}/v1/generations", json={"prompt": "one too many", "size": "256x256"}, headers=ada_key
        )
        assert (over_quota.status_code, over_quota.json()["code"]) == (402, "quota_exceeded")

        bea_key = api_key(base_url, bea)
        answers = [
            httpx.get(f"{base_url}/v1/me", headers=bea_key).status_code for _ in range(BURST + OVER_BURST)
        ]
        assert answers == [200] * BURST + [429] * OVER_BURST

        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        wait_until(
            "the worker sent both verification emails",
            lambda: (
                total(parse(scrape(worker_url)), "pictor_emails_total", kind="verify_email", outcome="sent")
                == 2
            ),
            deployment,
        )
        yield Driven(deployment, api_metrics, worker_url, multiprocess_dir, stored_bytes)
    finally:
        deployment.stop()


def requests_per_process(directory: Path, route: str) -> dict[int, float]:
    """Each server process's own count of GET `route`, from its counter file."""
    counts = {}
    for path in directory.glob("counter_*.db"):
        pid = int(path.stem.removeprefix("counter_"))
        counted = sum(
            sample.value
            for metric in MultiProcessCollector.merge([str(path)])
            for sample in metric.samples
            if sample.name == "pictor_http_requests_total" and sample.labels.get("route") == route
        )
        if counted:
            counts[pid] = counted
    return counts


def test_two_server_processes_and_a_worker_add_up(driven: Driven) -> None:
    api = parse(scrape(driven.api_url))

    # HTTP: both processes served the requests; /metrics reports their sum, exactly what was sent.
    per_process = requests_per_process(driven.multiprocess_dir, "/v1/plans")
    assert len(per_process) == 2, per_process
    assert sum(per_process.values()) == PLANS_REQUESTS
    assert total(api, "pictor_http_requests_total", route="/v1/plans") == PLANS_REQUESTS
    assert total(api, "pictor_http_requests_total", route="/v1/plans", status="200") == PLANS_REQUESTS
    # Each process's pool reports its own gauges; live processes add up.
    assert total(api, "pictor_db_pool_max") == 2 * POOL_MAX

    # Business counters, each counted once by the process where it happened.
    assert total(api, "pictor_registrations_total") == 2
    assert total(api, "pictor_logins_total", outcome="succeeded") == 2
    assert total(api, "pictor_logins_total", outcome="invalid_credentials") == WRONG_LOGINS
    assert total(api, "pictor_logins_total", outcome="too_many_attempts") == 1
    assert total(api, "pictor_rate_limit_rejections_total", limit="login") == 1
    assert total(api, "pictor_rate_limit_rejections_total", limit="api") == OVER_BURST
    assert total(api, "pictor_quota_rejections_total", reason="quota_exceeded") == 1
    assert total(api, "pictor_generations_total", status="queued") == MONTHLY_IMAGES
    assert total(api, "pictor_generations_total", status="succeeded") == 0  # the API renders nothing

    # The worker's own /metrics: its renders, images and emails, its one pool, the queues.
    unauthorized = httpx.get(driven.worker_url, timeout=30)
    assert unauthorized.status_code == 401
    assert unauthorized.json()["code"] == "unauthenticated"
    worker = parse(scrape(driven.worker_url))
    assert total(worker, "pictor_generations_total", status="succeeded") == MONTHLY_IMAGES
    assert total(worker, "pictor_generations_total", status="queued") == 0  # counted by the API only
    assert total(worker, "pictor_images_stored_total") == MONTHLY_IMAGES
    assert total(worker, "pictor_images_stored_bytes_total") == driven.stored_bytes
    assert total(worker, "pictor_emails_total", kind="verify_email", outcome="sent") == 2
    assert total(worker, "pictor_db_pool_max") == POOL_MAX
    assert total(worker, "pictor_http_requests_total") == 0  # no API in the worker

    # Queue gauges, sampled in the background by both: every queue has its series, none is stuck.
    for samples in (api, worker):
        queues = {dict(series)["queue"] for (name, series) in samples if name == "pictor_queue_depth"}
        assert queues == {"generation", "generation-priority", "webhooks", "email", "maintenance"}
    deployment = driven.deployment
    wait_until(
        "the email queue drained, as the API sees it",
        lambda: total(parse(scrape(driven.api_url)), "pictor_queue_depth", queue="email") == 0,
        deployment,
    )


def test_promtool_finds_no_problem_in_either_exposition(driven: Driven) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        services.unavailable("promtool is not installed (Debian's prometheus package; .ci/run installs it)")
    for where, url in (("api", driven.api_url), ("worker", driven.worker_url)):
        text = scrape(url)
        checked = subprocess.run(
            [str(promtool), "check", "metrics"],
            input=text.encode(),
            capture_output=True,
            timeout=60,
            check=False,
        )
        findings = (checked.stdout + checked.stderr).decode().strip()
        assert checked.returncode == 0 and not findings, f"{where}: {findings}"
