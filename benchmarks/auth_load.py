"""Authenticated `GET /v1/me` with an API key on a warm cache, next to two bare Litestar routes.

Run from the repository root (PostgreSQL and Valkey must be running, see README):

    uv run python benchmarks/auth_load.py [--duration 8] [--rounds 3] [--json]

Three servers, each granian with one worker on a free 127.0.0.1 port, driven in turn by the same
load generator (benchmarks/http_load.py) for every round:

- `bare /health/live`: bare Litestar returning a constant (the framework's ceiling);
- `bare /valkey`: bare Litestar doing one Valkey GET per request through Pictor's own client (the
  floor for a route that makes one network round trip, as a rate limit shared across processes
  must: DESIGN.md §11);
- `pictor /v1/me`: `pictor serve` on real PostgreSQL (a fresh schema) and Valkey, with a plan file
  whose default plan has limits that cannot bind during the run; the user and the key are made
  over HTTP, the cache is warmed, then only 2xx answers count.

Database work is counted, not assumed: Pictor's `/metrics` is read before and after the measured
rounds, and the report gives `pictor_db_query_duration_seconds_count` (every SQL statement the
pool ran, by first keyword) divided by the `/v1/me` requests Pictor answered in between (warm-up
included). A warm request runs none; what shows up is the principal cache's reload when an entry
expires (two SELECTs per key and process every PICTOR_CACHE_TTL_SECONDS, 30 by default) and the
key's `last_used_at`, written at most once a minute per key and process (an UPDATE).
Results are ratios against the baselines measured in the same run; nothing asserts a time.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.http_load import (
    BARE_CMD,
    BARE_NAME,
    HOST,
    PICTOR_CMD,
    ROOT,
    HarnessError,
    LoadResult,
    Server,
    Summary,
    choose_generator,
    expand_command,
    format_table,
    run_load,
    summarize,
)

DATABASE_URL = os.environ.get("PICTOR_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/test")
VALKEY_URL = os.environ.get("PICTOR_TEST_VALKEY_URL", "redis://127.0.0.1:6379/0")
METRICS_TOKEN = "bench-metrics-token"
PASSWORD = "a long benchmark passphrase"
# The default plan, with limits no run can reach: benchmarks measure a path, not a 402 or a 429.
UNBOUND_PLANS = """
format = 1
[plans.free]
name = "Benchmark"
monthly_price_cents = 0
currency = "USD"
monthly_images = 100000000
rate_limit = { requests = 1000000000, per_seconds = 1, burst = 1000000000 }
max_concurrent_jobs = 1000000
max_image_pixels = 4194304
"""
_COUNT_LINE = re.compile(
    r"^(pictor_[a-z_]+)_count\{([^}]*)\} ([0-9.e+]+)$|^(pictor_[a-z_]+_total)\{([^}]*)\} ([0-9.e+]+)$"
)


@dataclass(frozen=True)
class Counts:
    queries: float
    me_requests: float
    by_operation: dict[str, float]


def scrape(port: int) -> Counts:
    """SQL statements run and `/v1/me` requests answered so far, from Pictor's /metrics."""
    text = _request(port, "GET", "/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})[1]
    queries = 0.0
    me = 0.0
    by_operation: dict[str, float] = {}
    for line in text.splitlines():
        match = _COUNT_LINE.match(line)
        if match is None:
            continue
        if match.group(1) == "pictor_db_query_duration_seconds":
            queries += float(match.group(3))
            operation = re.search(r'operation="([^"]*)"', match.group(2))
            name = operation.group(1) if operation else "?"
            by_operation[name] = by_operation.get(name, 0.0) + float(match.group(3))
        elif match.group(4) == "pictor_http_requests_total" and 'route="/v1/me"' in match.group(5):
            me += float(match.group(6))
    return Counts(queries=queries, me_requests=me, by_operation=by_operation)


def _request(
    port: int, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, str]:
    connection = http.client.HTTPConnection(HOST, port, timeout=10)
    try:
        payload = json.dumps(body).encode() if body is not None else None
        all_headers = {**(headers or {}), **({"Content-Type": "application/json"} if payload else {})}
        connection.request(method, path, body=payload, headers=all_headers)
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def make_api_key(port: int) -> str:
    email = f"bench-{secrets.token_hex(4)}@example.com"
    status, text = _request(port, "POST", "/v1/auth/register", body={"email": email, "password": PASSWORD})
    if status != 201:
        raise HarnessError(f"register answered {status}: {text}")
    status, text = _request(port, "POST", "/v1/auth/login", body={"email": email, "password": PASSWORD})
    if status != 200:
        raise HarnessError(f"login answered {status}: {text}")
    session = json.loads(text)["token"]
    status, text = _request(
        port, "POST", "/v1/api-keys", body={"name": "bench"}, headers={"Authorization": f"Bearer {session}"}
    )
    if status != 201:
        raise HarnessError(f"creating a key answered {status}: {text}")
    return str(json.loads(text)["key"])


@contextlib.contextmanager
def fresh_schema() -> Any:
    """A new schema in the benchmark database, dropped afterwards; yields its URL."""
    import psycopg

    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    separator = "&" if "?" in DATABASE_URL else "?"
    try:
        yield f"{DATABASE_URL}{separator}options=-csearch_path%3D{name}"
    finally:
        with psycopg.connect(DATABASE_URL, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


@dataclass(frozen=True)
class AuthReport:
    generator: str
    summaries: tuple[Summary, ...]
    queries: float
    me_requests: float
    statements: dict[str, float]  # SQL statements run during the rounds, by first keyword

    def _rps(self, target: str, path: str) -> float:
        return next(s.rps for s in self.summaries if s.target == target and s.path == path)

    def ratios(self) -> dict[str, float | None]:
        me = self._rps("pictor", "/v1/me")
        constant = self._rps(BARE_NAME, "/health/live")
        valkey = self._rps(BARE_NAME, "/valkey")
        return {
            "pictor_me/bare_valkey_get": me / valkey if valkey else None,
            "pictor_me/bare_constant": me / constant if constant else None,
        }

    @property
    def queries_per_request(self) -> float | None:
        return self.queries / self.me_requests if self.me_requests else None

    def to_text(self) -> str:
        lines = [f"generator {self.generator}; medians over the rounds", format_table(self.summaries)]
        lines += [
            f"ratio {name}: {value:.2f}" if value else f"ratio {name}: n/a"
            for name, value in self.ratios().items()
        ]
        per_request = self.queries_per_request if self.queries_per_request is not None else float("nan")
        lines.append(
            f"database: {self.queries:.0f} SQL statements for {self.me_requests:.0f} /v1/me requests"
            f" = {per_request:.6f} per request"
            + (
                f" ({', '.join(f'{k} {v:.0f}' for k, v in self.statements.items())})"
                if self.statements
                else ""
            )
        )
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "results": [{k: v for k, v in asdict(s).items() if k != "runs"} for s in self.summaries],
            "ratios": self.ratios(),
            "sql_statements": self.queries,
            "me_requests": self.me_requests,
            "sql_per_request": self.queries_per_request,
            "sql_by_operation": self.statements,
        }


def run(*, generator: str, connections: int, duration: float, warmup: float, rounds: int) -> AuthReport:
    generator = choose_generator(generator)
    runs: dict[tuple[str, str], list[LoadResult]] = {}
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_schema())
        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pictor-auth-load-"))
        plans = Path(data_dir) / "plans.toml"
        plans.write_text(UNBOUND_PLANS)
        env = {
            **os.environ,
            "PICTOR_DATABASE_URL": database_url,
            "PICTOR_VALKEY_URL": VALKEY_URL,
            "PICTOR_QUEUE_URL": VALKEY_URL,
            "PICTOR_STORAGE_URL": "memory://",
            "PICTOR_NAMESPACE": f"bench{secrets.token_hex(3)}",
            "PICTOR_PLANS_FILE": str(plans),
            "PICTOR_METRICS_TOKEN": METRICS_TOKEN,
            "PICTOR_DATA_DIR": data_dir,
            "PICTOR_LOG_LEVEL": "warning",
        }
        migrate = expand_command("{bin}/pictor migrate {port}", 0)[:-1]
        done = subprocess.run(migrate, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HarnessError(f"pictor migrate failed: {done.stdout}{done.stderr}")
        bare = stack.enter_context(Server(BARE_NAME, BARE_CMD, {**os.environ, "BARE_VALKEY_URL": VALKEY_URL}))
        pictor = stack.enter_context(Server("pictor", PICTOR_CMD, env))
        bare.wait_ready("/valkey", (), 30)
        pictor.wait_ready("/health/ready", (), 60)
        key = make_api_key(pictor.port)
        auth = (("Authorization", f"Bearer {key}"),)
        pictor.wait_ready("/v1/me", auth, 10)  # warms the principal cache
        before = scrape(pictor.port)
        plan = [(bare, "/health/live", ()), (bare, "/valkey", ()), (pictor, "/v1/me", auth)]
        for round_number in range(1, rounds + 1):
            for server, path, headers in plan:
                print(f"round {round_number}/{rounds}: {server.name} {path} ...", file=sys.stderr, flush=True)
                result = run_load(
                    generator,
                    server.port,
                    path,
                    headers,
                    connections=connections,
                    duration=duration,
                    warmup=warmup,
                )
                server.ensure_running()
                print(f"  {result.rps:.0f} req/s, errors {result.errors}", file=sys.stderr, flush=True)
                runs.setdefault((server.name, path), []).append(result)
        after = scrape(pictor.port)
    summaries = tuple(summarize(name, path, results) for (name, path), results in runs.items())
    return AuthReport(
        generator=generator,
        summaries=summaries,
        queries=after.queries - before.queries,
        me_requests=after.me_requests - before.me_requests,
        statements={
            name: count - before.by_operation.get(name, 0.0)
            for name, count in after.by_operation.items()
            if count - before.by_operation.get(name, 0.0) > 0
        },
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="auth_load.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=8.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    try:
        report = run(
            generator=args.generator,
            connections=args.connections,
            duration=args.duration,
            warmup=args.warmup,
            rounds=args.rounds,
        )
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(json.dumps(report.to_json(), indent=2) if args.json else report.to_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
