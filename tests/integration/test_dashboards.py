"""The Grafana dashboard and the Prometheus alerting rules in deploy/ use exactly the metric names
Pictor exports: every name in their expressions is in a live `/metrics` of the API or of the worker
(after some traffic), apart from Prometheus's own `up`. promtool, when installed (CI installs it),
checks the rules, runs their unit tests and checks the example configuration.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from adapters.postgres.migrations import apply_migrations
from tests.e2e.processes import PictorProcess, clean_environ, free_port
from tests.support import services
from tests.support.accounts import PASSWORD

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "pictor.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"
TOKEN = "dashboards-metrics-token"
PROMETHEUS_OWN = frozenset({"up"})  # written by Prometheus for every target, not by Pictor

# --- PromQL: which names in an expression are metric names -----------------------------------

_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{?\w+\}?|\[\[\w+\]\]")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\[\]]*\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_OFFSET = re.compile(r"\boffset\s+-?\w+")
_NUMBER = re.compile(r"(?<![\w:])(?:0x[0-9a-fA-F]+|\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)")
_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and label names left out)."""
    text = _STRING.sub('""', expr)
    text = _GRAFANA_VARIABLE.sub("1", text)
    text = _MATCHERS.sub("", text)
    text = _RANGE.sub("", text)
    text = _LABEL_LIST.sub("", text)
    text = _OFFSET.sub("", text)
    text = _NUMBER.sub("1", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        name = match.group()
        if name.lower() in _KEYWORDS or text[match.end() :].lstrip().startswith("("):
            continue  # a keyword, or a function or aggregation being called
        names.add(name)
    return names


def test_metric_names_are_read_from_promql_as_prometheus_reads_it() -> None:
    assert metric_names(
        "histogram_quantile(0.99, sum by (le, route)"
        ' (rate(pictor_http_request_duration_seconds_bucket{route!~"a|b(c)"}[5m])))'
    ) == {"pictor_http_request_duration_seconds_bucket"}
    assert metric_names(
        "sum(rate(a_total[$__rate_interval])) / clamp_min(sum(rate(b_total[5m] offset 1h)), 1e-9) > 0.05"
        ' and on (job) up{job=~"$job"} == 0 unless sum(c) without (instance) > bool 2'
    ) == {"a_total", "b_total", "up", "c"}
    assert metric_names('max by (queue) (d{queue=~"$queue"}) * 60 - e:recorded:rate5m') == {
        "d",
        "e:recorded:rate5m",
    }
    assert metric_names('count(f) by (le) + label_replace(g, "x", "$1", "y", "(.*)")') == {"f", "g"}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    expressions = []

    def panels(items: list[dict[str, object]]) -> Iterator[dict[str, object]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))  # type: ignore[arg-type]

    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):  # type: ignore[attr-defined]
            expressions.append(target["expr"])
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            found = re.fullmatch(r"label_values\((.+),\s*\w+\)", query) or re.fullmatch(
                r"query_result\((.+)\)", query
            )
            assert found, f"a template variable query this test cannot read: {query}"
            expressions.append(found.group(1))
    return expressions


def alert_expressions() -> list[str]:
    rules = yaml.safe_load(ALERTS.read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def test_the_dashboard_is_laid_out_for_grafana() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels)
    variables = {variable["name"] for variable in dashboard["templating"]["list"]}
    assert {"datasource", "queue", "job"} <= variables
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for target in panel.get("targets", []):
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert target["refId"] and target["expr"], panel["title"]
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval"}
            assert used <= variables, (panel["title"], used - variables)


def test_the_files_hold_the_expressions_we_expect() -> None:
    dashboard = dashboard_expressions()
    alerts = alert_expressions()
    assert len(dashboard) >= 30 and len(alerts) >= 10
    used = set().union(*(metric_names(e) for e in dashboard + alerts))
    # The areas the dashboard and alerts must cover.
    for expected in (
        "pictor_http_requests_total",
        "pictor_http_request_duration_seconds_bucket",
        "pictor_http_errors_total",
        "pictor_generations_total",
        "pictor_queue_depth",
        "pictor_queue_oldest_job_age_seconds",
        "pictor_webhook_deliveries_total",
        "pictor_cache_hits_total",
        "pictor_db_pool_in_use",
        "pictor_db_pool_waiting",
        "pictor_alert_active",
        "pictor_job_failures_total",
        "pictor_errors_total",
        "up",
    ):
        assert expected in used, expected


# --- Against live expositions ----------------------------------------------------------------


@dataclass
class Live:
    api_url: str
    worker_url: str


def exported_names(text: str) -> set[str]:
    """Every name the exposition lets a query select: the families it declares (even before their
    first sample) with the series names their type implies, and every sample's name."""
    names: set[str] = set()
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
        "gauge": ("",),
        "info": ("_info",),
        "untyped": ("",),
    }
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def scrape(url: str) -> str:
    response = httpx.get(url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=30)
    assert response.status_code == 200, response.text
    return response.text


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    """`pictor serve` and a separate `pictor worker` on PostgreSQL and Valkey, after some traffic."""
    tmp_path = tmp_path_factory.mktemp("dashboards")
    base = services.require_postgres()
    valkey = services.require_valkey()
    schema = services.unique_name("dash")
    import psycopg

    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA "{schema}"')
    separator = "&" if "?" in base else "?"
    database_url = f"{base}{separator}options=-csearch_path%3D{schema}"
    asyncio.run(apply_migrations(database_url))
    port, worker_port = free_port(), free_port()
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path / "var"),
            "PICTOR_PORT": str(port),
            "PICTOR_DATABASE_URL": database_url,
            "PICTOR_VALKEY_URL": valkey,
            "PICTOR_QUEUE_URL": valkey,
            "PICTOR_NAMESPACE": services.unique_name("dash").replace("_", "-"),
            "PICTOR_STORAGE_URL": (tmp_path / "blobs").as_uri(),
            "PICTOR_METRICS_TOKEN": TOKEN,
            "PICTOR_SECRET_URL_SIGNING_KEY": "dashboards-signing-key",
            "PICTOR_EMBEDDED_WORKER": "false",
            "PICTOR_WORKER_METRICS_PORT": str(worker_port),
            "PICTOR_METRICS_SAMPLE_INTERVAL_SECONDS": "0.5",
            "PICTOR_RENDER_STEPS": "2",
            "PICTOR_DB_POOL_MIN": "1",
            "PICTOR_DB_POOL_MAX": "4",
            "PICTOR_LOG_LEVEL": "warning",
        }
    )
    api_url = f"http://127.0.0.1:{port}"
    server = PictorProcess(["serve"], env, tmp_path / "serve.log")
    worker = PictorProcess(["worker"], env, tmp_path / "worker.log")
    try:
        server.wait_ready(api_url, timeout=90)
        drive_traffic(api_url)
        worker_url = f"http://127.0.0.1:{worker_port}/metrics"
        deadline = time.monotonic() + 60  # only against a hang: the worker listens once started
        while True:
            try:
                scrape(worker_url)
                break
            except (httpx.HTTPError, AssertionError):
                assert time.monotonic() < deadline, worker.output()
                time.sleep(0.2)
        yield Live(api_url=f"{api_url}/metrics", worker_url=worker_url)
    finally:
        for process in (worker, server):
            process.terminate(timeout=60)
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def drive_traffic(base_url: str) -> None:
    """A little of everything: accounts, a failed login, a 404, a generation rendered by the worker."""
    with httpx.Client(base_url=base_url, timeout=60) as client:
        assert client.post("/v1/auth/register", json={"email": "dash@example.com", "password": PASSWORD})
        assert (
            client.post("/v1/auth/login", json={"email": "dash@example.com", "password": "wrong"}).status_code
            == 401
        )
        login = client.post("/v1/auth/login", json={"email": "dash@example.com", "password": PASSWORD})
        assert login.status_code == 200, login.text
        auth = {"Authorization": f"Bearer {login.json()['token']}"}
        client.cookies.clear()
        assert client.get("/v1/me", headers=auth).status_code == 200
        assert client.get("/v1/nowhere").status_code == 404
        created = client.post(
            "/v1/generations",
            json={"prompt": "a lighthouse at dusk", "size": "256x256", "n": 1},
            headers={**auth, "Prefer": "wait=30"},
        )
        assert created.status_code in (200, 202), created.text


@pytest.mark.services
@pytest.mark.e2e
def test_every_metric_name_in_the_dashboard_and_the_alerts_is_exported(live: Live) -> None:
    exported = exported_names(scrape(live.api_url)) | exported_names(scrape(live.worker_url))
    unknown = {
        f"{source}: {name}"
        for source, expressions in (
            ("pictor.json", dashboard_expressions()),
            ("alerts.yml", alert_expressions()),
        )
        for expr in expressions
        for name in metric_names(expr)
        if name not in exported and name not in PROMETHEUS_OWN
    }
    assert unknown == set(), f"names Pictor does not export: {sorted(unknown)}"


def _promtool() -> str:
    promtool = shutil.which("promtool")
    if promtool is None:
        services.unavailable("promtool is not installed (Debian's prometheus package; .ci/run installs it)")
    assert promtool is not None
    return promtool


def _run(args: list[str]) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=60, check=False)
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


def test_promtool_checks_the_rules_and_their_unit_tests() -> None:
    promtool = _promtool()
    assert "SUCCESS: 12 rules found" in _run([promtool, "check", "rules", str(ALERTS)])
    assert "SUCCESS" in _run([promtool, "test", "rules", str(ALERT_TESTS)])


def test_promtool_checks_the_example_configuration(tmp_path: Path) -> None:
    promtool = _promtool()
    token = tmp_path / "pictor_metrics_token"
    token.write_text("a-token\n")
    config = PROMETHEUS_CONFIG.read_text().replace("/etc/prometheus/pictor_metrics_token", str(token))
    (tmp_path / "prometheus.yml").write_text(config)
    shutil.copy(ALERTS, tmp_path / "alerts.yml")
    output = _run([promtool, "check", "config", str(tmp_path / "prometheus.yml")])
    assert "SUCCESS: 12 rules found" in output
