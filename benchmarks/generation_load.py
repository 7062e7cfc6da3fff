"""Generations completed per second, end to end, with one `pictor worker` and then with two.

Run from the repository root (PostgreSQL and Valkey must be running, see README):

    uv run python benchmarks/generation_load.py [--generations 200] [--clients 4] [--json]

One `pictor serve` (no embedded worker) runs on real PostgreSQL (a fresh schema, dropped at the
end) with the SAQ queue on Valkey, file storage in a temporary directory, and a plan file whose
default plan has limits no run can reach (quota, rate limit, concurrent jobs). Then, for one and
then two `pictor worker` processes (each with the built-in renderer, PICTOR_RENDER_STEPS and
PICTOR_RENDER_WORKERS as the environment or the defaults say):

1. the workers start and log "worker started"; a fresh user and API key are made over HTTP;
2. batches of `--warmup` generations per worker are submitted and awaited until every worker's
   render processes run (the renderer's process pool starts lazily and which worker takes a job
   is up to the queue; on Linux the worker's process group shows it): start-up is not measured;
3. `--clients` threads submit `--generations` generations between them (`n=1`, `256x256` by
   default, distinct prompts and seeds), each thread one at a time on its own keep-alive
   connection, as fast as the API accepts them;
4. the harness polls the list endpoint (status `queued`, then `running`, one item each) until
   nothing is pending, then reads every generation of the user and checks each submitted one.

Reported per run, all from the server's own timestamps except the start:
- generations/s: succeeded generations / (last `finished_at` - the moment the first submit was
  sent, on this machine's wall clock, which the server shares);
- queue wait p50/p99: `created_at` -> `started_at` of each succeeded generation;
- render time p50/p99: `started_at` -> `finished_at` (the job: renderer, storage, settlement);
- failures: refused submissions plus generations that ended otherwise than `succeeded` or did not
  end within `--timeout` (expected 0);
then the speed-up of two workers over one (ratio of generations/s). The API, the workers, the
database and the load share the machine's cores: numbers are for comparing runs of the same
invocation, nothing asserts them. Traffic only goes to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.auth_load import UNBOUND_PLANS, VALKEY_URL, fresh_schema, make_api_key
from benchmarks.http_load import (
    HOST,
    PICTOR_CMD,
    ROOT,
    HarnessError,
    Server,
    expand_command,
    percentile,
    positive_int,
)

FINISHED = frozenset({"succeeded", "failed", "canceled"})
WORKER_READY_LINE = "worker started"
PAGE_LIMIT = 200  # the API's largest page
WARMUP_SEEDS = 1_000_000  # warm-up generations get seeds (and prompts) of their own
WARMUP_BATCHES = 10


# ---------------------------------------------------------------------------- pure parts


@dataclass(frozen=True)
class Timing:
    """The lifecycle timestamps of one generation, as the API reported them."""

    id: str
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error_code: str | None = None

    @property
    def queue_wait_ms(self) -> float | None:
        if self.started_at is None:
            return None
        return (self.started_at - self.created_at).total_seconds() * 1000

    @property
    def render_ms(self) -> float | None:
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds() * 1000


def _instant(value: Any) -> datetime | None:
    if value is None:
        return None
    parsed = datetime.fromisoformat(str(value))
    if parsed.tzinfo is None:
        raise ValueError(f"a timestamp without a time zone: {value!r}")
    return parsed


def timing_from(generation: Mapping[str, Any]) -> Timing:
    """A `generation` object of the API (API.md) reduced to what the benchmark measures."""
    created_at = _instant(generation["created_at"])
    if created_at is None:
        raise ValueError(f"generation {generation.get('id')!r} has no created_at")
    error = generation.get("error")
    return Timing(
        id=str(generation["id"]),
        status=str(generation["status"]),
        created_at=created_at,
        started_at=_instant(generation.get("started_at")),
        finished_at=_instant(generation.get("finished_at")),
        error_code=str(error["code"]) if isinstance(error, Mapping) and "code" in error else None,
    )


@dataclass(frozen=True)
class RunReport:
    """One run (a number of workers), reduced to the figures the issue asks for."""

    workers: int
    submitted: int  # generations the clients asked for
    succeeded: int
    failures: int  # refused submissions + generations not `succeeded` (or unfinished)
    seconds: float | None  # first submit -> last `finished_at` of a succeeded generation
    queue_wait_p50_ms: float | None
    queue_wait_p99_ms: float | None
    render_p50_ms: float | None
    render_p99_ms: float | None
    failure_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def per_second(self) -> float | None:
        """Generations completed per second, end to end; None when none completed."""
        if self.seconds is None or self.seconds <= 0 or self.succeeded == 0:
            return None
        return self.succeeded / self.seconds


def failure_kind(timing: Timing) -> str:
    if timing.status not in FINISHED:
        return f"unfinished ({timing.status})"
    if timing.status == "failed" and timing.error_code:
        return f"failed: {timing.error_code}"
    return timing.status


def build_run_report(
    workers: int,
    *,
    submitted: int,
    first_submit_at: datetime,
    timings: Sequence[Timing],
    refused: Mapping[str, int] | None = None,
) -> RunReport:
    """Throughput, percentiles and failures of one run; `timings` are the accepted generations,
    `refused` counts the submissions the API did not accept, by kind."""
    kinds: Counter[str] = Counter(refused or {})
    done = [t for t in timings if t.status == "succeeded"]
    kinds.update(failure_kind(t) for t in timings if t.status != "succeeded")
    missing = submitted - len(timings) - sum((refused or {}).values())
    if missing > 0:  # accepted, yet not listed: never expected, still not a success
        kinds["not listed"] += missing
    queue_waits = sorted(w for t in done if (w := t.queue_wait_ms) is not None)
    renders = sorted(r for t in done if (r := t.render_ms) is not None)
    last = max((t.finished_at for t in done if t.finished_at is not None), default=None)
    return RunReport(
        workers=workers,
        submitted=submitted,
        succeeded=len(done),
        failures=sum(kinds.values()),
        seconds=None if last is None else (last - first_submit_at).total_seconds(),
        queue_wait_p50_ms=percentile(queue_waits, 50),
        queue_wait_p99_ms=percentile(queue_waits, 99),
        render_p50_ms=percentile(renders, 50),
        render_p99_ms=percentile(renders, 99),
        failure_kinds=dict(sorted(kinds.items())),
    )


def speedup(one: RunReport, more: RunReport) -> float | None:
    """How many times the throughput of `one` the run `more` reached; None without both."""
    if one.per_second is None or more.per_second is None:
        return None
    return more.per_second / one.per_second


@dataclass(frozen=True)
class BenchReport:
    size: str
    clients: int
    render_steps: str
    render_workers: str
    runs: tuple[RunReport, ...]

    def speedups(self) -> dict[str, float | None]:
        """Each run after the first against the first (two workers over one)."""
        if not self.runs:
            return {}
        first = self.runs[0]
        return {
            f"{run.workers}_workers/{first.workers}_worker{'s' if first.workers > 1 else ''}": speedup(
                first, run
            )
            for run in self.runs[1:]
        }

    def to_text(self) -> str:
        header = (
            f"size {self.size}, n=1, built-in renderer (steps {self.render_steps},"
            f" render processes per worker {self.render_workers}), {self.clients} clients"
        )
        lines = [header, format_table(self.runs)]
        for name, value in self.speedups().items():
            lines.append(f"speed-up {name}: " + ("n/a" if value is None else f"{value:.2f}x"))
        for run in self.runs:
            if run.failure_kinds:
                shown = ", ".join(f"{kind} {count}" for kind, count in run.failure_kinds.items())
                lines.append(f"failures with {run.workers} worker(s): {shown}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "n": 1,
            "clients": self.clients,
            "render_steps": self.render_steps,
            "render_workers": self.render_workers,
            "runs": [{**asdict(run), "per_second": run.per_second} for run in self.runs],
            "speedups": self.speedups(),
        }


def _cell(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_table(runs: Sequence[RunReport]) -> str:
    rows = [
        (
            "workers",
            "generations",
            "seconds",
            "gen/s",
            "queue p50 ms",
            "queue p99 ms",
            "render p50 ms",
            "render p99 ms",
            "failures",
        )
    ]
    rows += [
        (
            str(run.workers),
            str(run.submitted),
            _cell(run.seconds, 2),
            _cell(run.per_second, 1),
            _cell(run.queue_wait_p50_ms, 1),
            _cell(run.queue_wait_p99_ms, 1),
            _cell(run.render_p50_ms, 1),
            _cell(run.render_p99_ms, 1),
            str(run.failures),
        )
        for run in runs
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(cell.rjust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows
    )


# ------------------------------------------------------------------------------- the API


class ApiClient:
    """One keep-alive connection to Pictor with an API key; one request at a time."""

    def __init__(self, port: int, key: str, timeout: float = 30.0) -> None:
        self._connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
        self._headers = {"Authorization": f"Bearer {key}"}

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        headers = dict(self._headers)
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        try:
            self._connection.request(method, path, body=payload, headers=headers)
            response = self._connection.getresponse()
            data = response.read()
        except (OSError, http.client.HTTPException):
            self._connection.close()  # reconnects on the next request
            raise
        return response.status, json.loads(data) if data else None

    def close(self) -> None:
        self._connection.close()

    def submit(self, number: int, size: str) -> tuple[str | None, str | None]:
        """(the generation's id, None) when accepted, else (None, why)."""
        body = {
            "prompt": f"benchmark lighthouse at dusk, study {number}",
            "size": size,
            "n": 1,
            "seed": number,
        }
        try:
            status, data = self.request("POST", "/v1/generations", body)
        except (OSError, http.client.HTTPException) as error:
            return None, type(error).__name__
        if status != 202:
            code = data.get("code") if isinstance(data, dict) else None
            return None, f"HTTP {status}" + (f" {code}" if code else "")
        return str(data["id"]), None

    def has(self, status: str) -> bool:
        code, data = self.request("GET", "/v1/generations?" + urlencode({"status": status, "limit": 1}))
        if code != 200:
            raise HarnessError(f"listing {status} generations answered {code}: {data}")
        return bool(data["data"])

    def all_generations(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            query = {"limit": PAGE_LIMIT, **({"cursor": cursor} if cursor else {})}
            code, data = self.request("GET", "/v1/generations?" + urlencode(query))
            if code != 200:
                raise HarnessError(f"listing generations answered {code}: {data}")
            found += data["data"]
            cursor = data.get("next_cursor")
            if not cursor:
                return found


def submit_all(
    port: int, key: str, numbers: Sequence[int], size: str, clients: int
) -> tuple[list[str], Counter[str]]:
    """Submit one generation per number from `clients` threads; accepted ids and refusals by kind."""
    accepted: list[str] = []
    refused: Counter[str] = Counter()
    lock = threading.Lock()

    def client(share: Sequence[int]) -> None:
        api = ApiClient(port, key)
        try:
            for number in share:
                generation_id, why = api.submit(number, size)
                with lock:
                    if generation_id is not None:
                        accepted.append(generation_id)
                    else:
                        refused[why or "?"] += 1
        finally:
            api.close()

    shares = [numbers[i::clients] for i in range(clients)]
    with ThreadPoolExecutor(max_workers=clients) as pool:
        for future in [pool.submit(client, share) for share in shares if share]:
            future.result()
    return accepted, refused


def await_generations(port: int, key: str, ids: Sequence[str], timeout: float, poll: float) -> list[Timing]:
    """Timings of `ids` once none is pending (or at the deadline, unfinished ones included)."""
    wanted = set(ids)
    api = ApiClient(port, key)
    try:
        deadline = time.monotonic() + timeout
        while True:
            # queued first: a generation leaves `queued` for `running`, so two empty answers in this
            # order mean nothing was pending (a retry back to `queued` is caught by the check below).
            pending = api.has("queued") or api.has("running")
            if not pending or time.monotonic() > deadline:
                timings = [timing_from(g) for g in api.all_generations() if g["id"] in wanted]
                if all(t.status in FINISHED for t in timings) or time.monotonic() > deadline:
                    return timings
            time.sleep(poll)
    finally:
        api.close()


# ------------------------------------------------------------------------------ processes


def worker_process(name: str, env: dict[str, str]) -> Server:
    """`pictor worker` (all queues) in its own process group; Server stops it like a server."""
    server = Server(name, "{bin}/pictor worker {port}", env, port=0)
    server.argv = server.argv[:-1]  # Server's templates need {port}; a worker listens on none
    return server


def wait_for_worker(worker: Server, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while WORKER_READY_LINE not in worker.output(limit=1_000_000):
        worker.ensure_running()
        if time.monotonic() > deadline:
            raise HarnessError(
                f"{worker.name} did not log {WORKER_READY_LINE!r} within {timeout:g} s:\n{worker.output()}"
            )
        time.sleep(0.1)


def helper_processes(leader_pid: int) -> int | None:
    """Processes in the group of `leader_pid` besides the leader (a worker's render pool: the
    forkserver and its workers); None where /proc cannot tell (not Linux)."""
    proc = Path("/proc")
    if not (proc / "self" / "stat").exists():
        return None
    count = 0
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            # the fields after the parenthesised command: state, ppid, pgrp, ...
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == leader_pid and int(stat.parent.name) != leader_pid:
                count += 1
    return count


def render_pools_started(workers: Sequence[Server]) -> bool | None:
    """Whether every worker has started its renderer's processes; None when unknowable."""
    counts = [helper_processes(w.pid) if w.pid is not None else None for w in workers]
    if any(count is None for count in counts):
        return None
    return all(count is not None and count >= 2 for count in counts)


def warm_up(port: int, key: str, workers: Sequence[Server], options: Options) -> None:
    """Render warm-up generations until every worker's render pool runs (it starts lazily, and
    which worker takes a job is up to the queue), at most WARMUP_BATCHES batches."""
    if options.warmup == 0:
        return
    batch = options.warmup * len(workers)
    for number in range(WARMUP_BATCHES):
        first = WARMUP_SEEDS + number * batch
        ids, refused = submit_all(port, key, range(first, first + batch), options.size, options.clients)
        if refused:
            raise HarnessError(f"warm-up submissions refused: {dict(refused)}")
        await_generations(port, key, ids, options.timeout, options.poll)
        if render_pools_started(workers) is not False:
            print(f"  warmed up in {number + 1} batch(es) of {batch}", file=sys.stderr, flush=True)
            return
    print(
        f"warning: a worker's render pool did not start in {WARMUP_BATCHES} warm-up batches", file=sys.stderr
    )


@dataclass(frozen=True)
class Options:
    generations: int
    clients: int
    size: str
    warmup: int  # per worker
    workers: tuple[int, ...]
    timeout: float
    poll: float
    startup_timeout: float


def measure(port: int, env: dict[str, str], workers: int, options: Options) -> RunReport:
    """Start `workers` worker processes, warm them up, run the submissions and wait for them."""
    with contextlib.ExitStack() as stack:
        processes = [
            stack.enter_context(worker_process(f"worker{n + 1}", {**env, "PICTOR_LOG_LEVEL": "info"}))
            for n in range(workers)
        ]
        for process in processes:
            wait_for_worker(process, options.startup_timeout)
        key = make_api_key(port)
        warm_up(port, key, processes, options)
        print(f"{workers} worker(s): submitting {options.generations} ...", file=sys.stderr, flush=True)
        first_submit_at = datetime.now(UTC)
        ids, refused = submit_all(port, key, range(options.generations), options.size, options.clients)
        timings = await_generations(port, key, ids, options.timeout, options.poll)
        for process in processes:
            process.ensure_running()
    report = build_run_report(
        workers,
        submitted=options.generations,
        first_submit_at=first_submit_at,
        timings=timings,
        refused=refused,
    )
    print(
        f"  {_cell(report.per_second, 1)} generations/s, failures {report.failures}",
        file=sys.stderr,
        flush=True,
    )
    return report


@contextlib.contextmanager
def pictor_api() -> Iterator[tuple[int, dict[str, str]]]:
    """`pictor serve` on a fresh schema with the queue on Valkey; yields its port and the env
    the workers must share with it."""
    with contextlib.ExitStack() as stack:
        database_url = stack.enter_context(fresh_schema())
        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pictor-generation-load-"))
        plans = Path(data_dir) / "plans.toml"
        plans.write_text(UNBOUND_PLANS)
        env = {
            **os.environ,
            "PICTOR_DATABASE_URL": database_url,
            "PICTOR_VALKEY_URL": VALKEY_URL,
            "PICTOR_QUEUE_URL": VALKEY_URL,
            "PICTOR_STORAGE_URL": (Path(data_dir) / "blobs").as_uri(),
            "PICTOR_NAMESPACE": f"bench{secrets.token_hex(3)}",
            "PICTOR_PLANS_FILE": str(plans),
            "PICTOR_DATA_DIR": data_dir,
            "PICTOR_EMBEDDED_WORKER": "false",
            "PICTOR_SECRET_URL_SIGNING_KEY": secrets.token_urlsafe(32),  # one key for the API and workers
            "PICTOR_LOG_LEVEL": "warning",
        }
        migrate = expand_command("{bin}/pictor migrate {port}", 0)[:-1]
        done = subprocess.run(migrate, cwd=ROOT, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise HarnessError(f"pictor migrate failed: {done.stdout}{done.stderr}")
        api = stack.enter_context(Server("pictor", PICTOR_CMD, env))
        api.wait_ready("/health/ready", (), 60)
        yield api.port, env
        api.ensure_running()


def _setting(name: str) -> str:
    from entrypoints.settings import Settings

    return os.environ.get(f"PICTOR_{name.upper()}", str(getattr(Settings(), name)))


def run(options: Options) -> BenchReport:
    reports = []
    with pictor_api() as (port, env):
        for workers in options.workers:
            reports.append(measure(port, env, workers, options))
    return BenchReport(
        size=options.size,
        clients=options.clients,
        render_steps=_setting("render_steps"),
        render_workers=_setting("render_workers"),
        runs=tuple(reports),
    )


def parser() -> argparse.ArgumentParser:
    result = argparse.ArgumentParser(prog="generation_load.py", description=__doc__.split("\n\n")[0])
    result.add_argument("--generations", type=positive_int, default=200, help="per run (default 200)")
    result.add_argument("--clients", type=positive_int, default=4, help="concurrent submitters (default 4)")
    result.add_argument("--size", default="256x256")
    result.add_argument("--warmup", type=int, default=4, help="warm-up generations per worker (default 4)")
    result.add_argument(
        "--workers",
        type=positive_int,
        nargs="+",
        default=[1, 2],
        help="worker processes per run (default 1 2)",
    )
    result.add_argument("--timeout", type=float, default=600.0, help="seconds a run may take to finish")
    result.add_argument("--poll", type=float, default=0.05, help="seconds between checks for pending ones")
    result.add_argument("--startup-timeout", type=float, default=60.0)
    result.add_argument("--json", action="store_true")
    return result


def options_from(arguments: argparse.Namespace) -> Options:
    return Options(
        generations=arguments.generations,
        clients=arguments.clients,
        size=arguments.size,
        warmup=max(arguments.warmup, 0),
        workers=tuple(arguments.workers),
        timeout=arguments.timeout,
        poll=arguments.poll,
        startup_timeout=arguments.startup_timeout,
    )


def main(argv: Sequence[str] | None = None) -> int:
    arguments = parser().parse_args(argv)
    try:
        report = run(options_from(arguments))
    except HarnessError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; servers stopped", file=sys.stderr)
        return 130
    print(json.dumps(report.to_json(), indent=2) if arguments.json else report.to_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
