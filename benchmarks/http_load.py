"""HTTP load harness: Pictor's throughput and latency next to a bare Litestar endpoint.

Run from the repository root:

    uv run python benchmarks/http_load.py [--duration 10] [--rounds 3] [--path /health/live] [--json]

It starts two servers on free 127.0.0.1 ports: the bare app of `benchmarks/bare_app.py`
under granian (one worker, the default event loop) and Pictor (`pictor serve`, every back
end `memory://`, a temporary `PICTOR_DATA_DIR`). It waits until each answers 200 on its
path, then drives them in turn (bare, pictor, bare, pictor ... `--rounds` times) with
`--connections` keep-alive connections for `--duration` seconds after a `--warmup`, and
prints requests/s, p50 and p99 latency and errors for each (medians over the rounds),
then the ratio `pictor/bare`. The servers share the cores with the load generator, so
the ratio is the result; absolute numbers depend on the machine. No test asserts them.

The load generator is `wrk -t1 -cN --latency` when `wrk` is on PATH, else a built-in
asyncio client run in a separate process (raw sockets, HTTP/1.1 keep-alive, one request
in flight per connection); `--generator wrk|builtin` chooses. On a 2-core machine the
built-in client got the same req/s out of the bare app as wrk (the server was the
bottleneck) with a somewhat higher p99; it is Python, so against a faster server it can
become the bottleneck and pull the ratio towards 1: use wrk (`apt-get install wrk`) then.

`--header` goes to both servers, so both parse the same request; every `--path` must
answer 200 to a plain GET with those headers before the measurement starts.

More uses:

    # calibrate the harness: the bare app against itself, the ratio should be about 1
    uv run python benchmarks/http_load.py --target-cmd bare
    # another route, with a header; --target-cmd takes another command ({python}, {bin},
    # {port} and {root} are substituted; the default is "{bin}/pictor serve --host 127.0.0.1 --port {port}")
    uv run python benchmarks/http_load.py --path /v1/me --header "Authorization: Bearer pk_live_..."
    # drive a server already listening on 127.0.0.1:8000 with the built-in client (prints JSON)
    uv run python benchmarks/http_load.py generate --port 8000 --path /health/live --duration 5

Counting, the same for both generators: req/s is responses with a status below 400 per
second of measurement; errors are responses with a status of 400 or more plus connection
errors; the latency percentiles cover every completed response. Traffic only goes to
127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http.client
import json
import math
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

HOST = "127.0.0.1"
ROOT = Path(__file__).resolve().parent.parent
BARE_NAME = "bare"
BARE_PATH = "/health/live"
# No --loop: granian's default ("auto") takes uvloop when it is installed, asyncio otherwise.
BARE_CMD = (
    "{python} -m granian --interface asgi --host 127.0.0.1 --port {port} --workers 1"
    " --no-access-log --working-dir {root} benchmarks.bare_app:app"
)
# The console script beside this interpreter (.venv/bin/pictor), as operators start it.
PICTOR_CMD = "{bin}/pictor serve --host 127.0.0.1 --port {port}"
# Every back end in memory: the harness measures the HTTP stack, not PostgreSQL or Valkey.
PICTOR_ENV = {
    "PICTOR_DATABASE_URL": "memory://",
    "PICTOR_VALKEY_URL": "memory://",
    "PICTOR_STORAGE_URL": "memory://",
    "PICTOR_QUEUE_URL": "memory://",
    "PICTOR_LOG_LEVEL": "warning",
}
STOP_GRACE_S = 5.0
MAX_HEAD_BYTES = 64 * 1024
READ_BUFFER_BYTES = 64 * 1024


# ---------------------------------------------------------------------------- results


@dataclass(frozen=True)
class LoadResult:
    """What one generator run against one endpoint measured."""

    requests: int  # completed responses with a status below 400, inside the measured window
    errors: int  # responses with a status of 400 or more, plus connection errors
    seconds: float  # length of the measured window
    p50_ms: float | None  # None when nothing completed
    p99_ms: float | None
    error_kinds: dict[str, int] = field(default_factory=dict)

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds > 0 else 0.0

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LoadResult:
        return cls(
            requests=int(data["requests"]),
            errors=int(data["errors"]),
            seconds=float(data["seconds"]),
            p50_ms=None if data["p50_ms"] is None else float(data["p50_ms"]),
            p99_ms=None if data["p99_ms"] is None else float(data["p99_ms"]),
            error_kinds={str(k): int(v) for k, v in data.get("error_kinds", {}).items()},
        )


@dataclass(frozen=True)
class Summary:
    """The runs of one target and path, reduced to medians (errors are summed)."""

    target: str
    path: str
    rps: float
    p50_ms: float | None
    p99_ms: float | None
    errors: int
    runs: tuple[LoadResult, ...]


def percentile(sorted_values: Sequence[float], pct: float) -> float | None:
    """The nearest-rank percentile of already sorted values (what wrk reports), None if empty."""
    if not 0 < pct <= 100:
        raise ValueError(f"percentile must be in (0, 100], got {pct}")
    if not sorted_values:
        return None
    rank = math.ceil(pct * len(sorted_values) / 100)  # pct * n first: 0.99 * n is inexact
    return sorted_values[max(rank, 1) - 1]


def median_or_none(values: Iterable[float | None]) -> float | None:
    present = [value for value in values if value is not None]
    return statistics.median(present) if present else None


def ratio(target_rps: float, bare_rps: float) -> float | None:
    """Target throughput as a fraction of the bare endpoint's; None when bare served nothing."""
    return target_rps / bare_rps if bare_rps > 0 else None


def summarize(target: str, path: str, runs: Sequence[LoadResult]) -> Summary:
    if not runs:
        raise ValueError("no runs to summarize")
    return Summary(
        target=target,
        path=path,
        rps=statistics.median(run.rps for run in runs),
        p50_ms=median_or_none(run.p50_ms for run in runs),
        p99_ms=median_or_none(run.p99_ms for run in runs),
        errors=sum(run.errors for run in runs),
        runs=tuple(runs),
    )


def _format_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_table(summaries: Sequence[Summary]) -> str:
    rows = [("target", "path", "req/s", "p50 ms", "p99 ms", "errors")]
    rows += [
        (s.target, s.path, f"{s.rps:.0f}", _format_ms(s.p50_ms), _format_ms(s.p99_ms), str(s.errors))
        for s in summaries
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def format_ratio(target: str, path: str | None, value: float | None) -> str:
    where = f" {path}" if path is not None else ""
    shown = "n/a (bare served nothing)" if value is None else f"{value:.2f}"
    return f"ratio {target}/{BARE_NAME}{where}: {shown}"


# ------------------------------------------------------------------------- wrk output

_WRK_TIME_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}  # to milliseconds
_WRK_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.0+)?%\s+([\d.]+)(us|ms|s|m|h)\s*$", re.MULTILINE)
_WRK_TOTAL = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)\b", re.MULTILINE)
_WRK_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses: (\d+)")


def parse_wrk_output(text: str) -> LoadResult:
    """Read `wrk --latency` output; wrk's "non-2xx or 3xx" are statuses of 400 or more."""
    total = _WRK_TOTAL.search(text)
    if total is None:
        raise ValueError(f"no 'N requests in T' line in wrk output:\n{text}")
    completed = int(total.group(1))
    seconds = float(total.group(2)) * _WRK_TIME_UNITS[total.group(3)] / 1000
    percentiles = {
        int(match.group(1)): float(match.group(2)) * _WRK_TIME_UNITS[match.group(3)]
        for match in _WRK_PERCENTILE.finditer(text)
    }
    kinds: dict[str, int] = {}
    socket_errors = _WRK_SOCKET_ERRORS.search(text)
    if socket_errors is not None:
        for name, count in zip(("connect", "read", "write", "timeout"), socket_errors.groups(), strict=True):
            if int(count):
                kinds[f"socket {name}"] = int(count)
    non_2xx = _WRK_NON_2XX.search(text)
    failed_responses = int(non_2xx.group(1)) if non_2xx is not None else 0
    if failed_responses:
        kinds["HTTP >= 400"] = failed_responses
    return LoadResult(
        requests=completed - failed_responses,
        errors=sum(kinds.values()),
        seconds=seconds,
        p50_ms=percentiles.get(50),
        p99_ms=percentiles.get(99),
        error_kinds=kinds,
    )


# ------------------------------------------------------------------ built-in generator


class ProtocolError(Exception):
    """The server sent something this minimal client cannot frame."""


def parse_header(text: str) -> tuple[str, str]:
    """`"Name: value"` as given to --header."""
    name, colon, value = text.partition(":")
    name, value = name.strip(), value.strip()
    if not colon or not name or any(c in text for c in "\r\n") or any(c.isspace() for c in name):
        raise ValueError(f"a header is 'Name: value', got {text!r}")
    return name, value


def build_request(path: str, port: int, headers: Sequence[tuple[str, str]] = ()) -> bytes:
    """One HTTP/1.1 keep-alive GET, sent as is for every request on a connection."""
    if not path.startswith("/") or any(c.isspace() for c in path):
        raise ValueError(f"the path must start with '/' and hold no whitespace, got {path!r}")
    lines = [f"GET {path} HTTP/1.1"]
    if not any(name.lower() == "host" for name, _ in headers):
        lines.append(f"Host: {HOST}:{port}")
    lines.append("User-Agent: pictor-http-load")
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def parse_head(head: bytes) -> tuple[int, int, bool]:
    """Status, body length and whether the server closes, from a response head (lower-cased)."""
    if not head.startswith(b"http/1."):
        raise ProtocolError(f"not an HTTP/1.x response: {head[:40]!r}")
    try:
        status = int(head[9:12])
    except ValueError:
        raise ProtocolError(f"no status code in {head[:40]!r}") from None
    start = head.find(b"\r\ncontent-length:")
    if start >= 0:
        start += len(b"\r\ncontent-length:")
        end = head.find(b"\r\n", start)
        try:
            length = int(head[start : end if end >= 0 else len(head)])
        except ValueError:
            raise ProtocolError("unreadable Content-Length") from None
    elif status in (204, 304):
        length = 0
    else:
        raise ProtocolError(f"HTTP {status} without Content-Length (chunked bodies are not supported)")
    closes = b"\r\nconnection: close" in head
    return status, length, closes


class ResponseReader:
    """Cuts a stream of HTTP/1.1 responses into their statuses; sans-IO, Content-Length only."""

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._status = 0
        self._remaining = -1  # body bytes still to come; -1 while reading a head
        self.closes = False  # the server said `Connection: close`

    def feed(self, data: bytes | bytearray | memoryview) -> list[int]:
        """Take bytes from the socket; return the statuses of the responses they completed."""
        self._buffer += data
        statuses: list[int] = []
        while True:
            if self._remaining < 0:
                end = self._buffer.find(b"\r\n\r\n")
                if end < 0:
                    if len(self._buffer) > MAX_HEAD_BYTES:
                        raise ProtocolError("response head too large")
                    return statuses
                self._status, self._remaining, closes = parse_head(bytes(self._buffer[:end]).lower())
                self.closes = self.closes or closes
                del self._buffer[: end + 4]
            if len(self._buffer) < self._remaining:
                return statuses
            del self._buffer[: self._remaining]
            self._remaining = -1
            statuses.append(self._status)


class _Load:
    """The shared state of one generator run: counters, latencies and the connections."""

    def __init__(self, port: int, request: bytes, measure_from_ns: int, stop_at_ns: int) -> None:
        self.port = port
        self.request = request
        self.measure_from_ns = measure_from_ns
        self.stop_at_ns = stop_at_ns
        self.stopped = False
        self.ok = 0
        self.latencies_ns: list[int] = []
        self.error_kinds: dict[str, int] = {}
        self.connections: set[_LoadConnection] = set()
        self._connecting: set[asyncio.Task[None]] = set()

    def _measuring(self, now_ns: int) -> bool:
        return self.measure_from_ns <= now_ns <= self.stop_at_ns

    def record(self, status: int, latency_ns: int, now_ns: int) -> None:
        if not self._measuring(now_ns):
            return
        self.latencies_ns.append(latency_ns)
        if status < 400:
            self.ok += 1
        else:
            self.fail(f"HTTP {status}")

    def fail(self, kind: str) -> None:
        if not self.stopped and self._measuring(time.perf_counter_ns()):
            self.error_kinds[kind] = self.error_kinds.get(kind, 0) + 1

    def connect_soon(self) -> None:
        if not self.stopped:
            task = asyncio.get_running_loop().create_task(self._connect())
            self._connecting.add(task)
            task.add_done_callback(self._connecting.discard)

    async def _connect(self) -> None:
        loop = asyncio.get_running_loop()
        while not self.stopped:
            try:
                await loop.create_connection(lambda: _LoadConnection(self), HOST, self.port)
            except OSError as error:
                self.fail(type(error).__name__)
                await asyncio.sleep(0.05)  # the server is down or full: do not spin
            else:
                return

    def stop(self) -> None:
        self.stopped = True
        for task in self._connecting:
            task.cancel()
        for connection in list(self.connections):
            connection.close()

    def result(self) -> LoadResult:
        latencies = sorted(self.latencies_ns)
        p50, p99 = percentile(latencies, 50), percentile(latencies, 99)
        return LoadResult(
            requests=self.ok,
            errors=sum(self.error_kinds.values()),
            seconds=(self.stop_at_ns - self.measure_from_ns) / 1e9,
            p50_ms=None if p50 is None else p50 / 1e6,
            p99_ms=None if p99 is None else p99 / 1e6,
            error_kinds=dict(self.error_kinds),
        )


class _LoadConnection(asyncio.BufferedProtocol):
    """One keep-alive connection: send, read the whole response, record, send again.

    A buffered protocol: the loop reads into our buffer, where a plain Protocol would get a
    fresh 256 KiB bytes object per read (an mmap and munmap each, half the client's cost).
    """

    def __init__(self, load: _Load) -> None:
        self._load = load
        self._reader = ResponseReader()
        self._buffer = memoryview(bytearray(READ_BUFFER_BYTES))
        self._transport: asyncio.Transport | None = None
        self._sent_at_ns = 0
        self._in_flight = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._load.connections.add(self)
        self._send()

    def _send(self) -> None:
        assert self._transport is not None
        if self._load.stopped:
            self._transport.close()
            return
        self._in_flight = True
        self._sent_at_ns = time.perf_counter_ns()
        self._transport.write(self._load.request)

    def get_buffer(self, sizehint: int) -> memoryview:
        return self._buffer

    def buffer_updated(self, nbytes: int) -> None:
        assert self._transport is not None
        try:
            statuses = self._reader.feed(self._buffer[:nbytes])
        except ProtocolError as error:
            self._in_flight = False
            self._load.fail(f"protocol: {error}")
            self._transport.close()
            return
        if not statuses:
            return
        now_ns = time.perf_counter_ns()
        for status in statuses:
            self._load.record(status, now_ns - self._sent_at_ns, now_ns)
        self._in_flight = False
        if self._reader.closes:
            self._transport.close()  # connection_lost opens the next connection
        else:
            self._send()

    def connection_lost(self, exc: Exception | None) -> None:
        self._load.connections.discard(self)
        if self._in_flight:
            self._load.fail("connection lost" if exc is None else type(exc).__name__)
        self._load.connect_soon()

    def close(self) -> None:
        self._in_flight = False
        if self._transport is not None:
            self._transport.close()


async def generate_load(
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]] = (),
    *,
    connections: int = 32,
    duration: float = 10.0,
    warmup: float = 1.0,
) -> LoadResult:
    """Drive GET `path` on 127.0.0.1:`port` from `connections` keep-alive connections.

    Runs `warmup + duration` seconds; only responses completed in the last `duration`
    seconds count. Run it in its own process so it does not share an event loop.
    """
    if connections < 1 or duration <= 0 or warmup < 0:
        raise ValueError("connections >= 1, duration > 0 and warmup >= 0 are required")
    start_ns = time.perf_counter_ns()
    measure_from_ns = start_ns + int(warmup * 1e9)
    load = _Load(
        port, build_request(path, port, headers), measure_from_ns, measure_from_ns + int(duration * 1e9)
    )
    for _ in range(connections):
        load.connect_soon()
    try:
        await asyncio.sleep((load.stop_at_ns - time.perf_counter_ns()) / 1e9)
    finally:
        load.stop()
    await asyncio.sleep(0)  # let the closing transports run their callbacks
    return load.result()


# --------------------------------------------------------------------- running loads


class HarnessError(Exception):
    """A server or the load generator failed; the message says which and shows its output."""


def run_builtin(
    port: int, path: str, headers: Sequence[tuple[str, str]], connections: int, duration: float, warmup: float
) -> LoadResult:
    """The built-in generator in a child process (this file's `generate` command)."""
    argv = [sys.executable, str(Path(__file__).resolve()), "generate", "--port", str(port), "--path", path]
    argv += ["--connections", str(connections), "--duration", str(duration), "--warmup", str(warmup)]
    for name, value in headers:
        argv += ["--header", f"{name}: {value}"]
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, check=False, timeout=duration + warmup + 60
        )
    except subprocess.TimeoutExpired as error:
        raise HarnessError(f"the load generator did not finish: {error}") from None
    if done.returncode != 0:
        raise HarnessError(f"the load generator failed (exit {done.returncode}):\n{done.stderr}")
    return LoadResult.from_dict(json.loads(done.stdout))


def run_wrk(
    port: int, path: str, headers: Sequence[tuple[str, str]], connections: int, duration: float, warmup: float
) -> LoadResult:
    """wrk with one thread; it takes whole seconds, so the durations are rounded up."""
    argv = ["wrk", "-t1", f"-c{connections}", "--latency"]
    for name, value in headers:
        argv += ["-H", f"{name}: {value}"]
    url = f"http://{HOST}:{port}{path}"
    runs = [(math.ceil(warmup), False)] if warmup > 0 else []
    runs.append((math.ceil(duration), True))
    for seconds, measured in runs:
        try:
            done = subprocess.run(
                [*argv, f"-d{seconds}s", url],
                capture_output=True,
                text=True,
                check=False,
                timeout=seconds + 60,
            )
        except subprocess.TimeoutExpired as error:
            raise HarnessError(f"wrk did not finish: {error}") from None
        if done.returncode != 0:
            raise HarnessError(f"wrk failed (exit {done.returncode}):\n{done.stdout}{done.stderr}")
        if measured:
            return parse_wrk_output(done.stdout)
    raise AssertionError("unreachable: the last run is the measured one")


def choose_generator(requested: str) -> str:
    if requested == "auto":
        return "wrk" if shutil.which("wrk") else "builtin"
    if requested == "wrk" and not shutil.which("wrk"):
        raise HarnessError("--generator wrk: wrk is not on PATH")
    return requested


def run_load(
    generator: str,
    port: int,
    path: str,
    headers: Sequence[tuple[str, str]],
    *,
    connections: int,
    duration: float,
    warmup: float,
) -> LoadResult:
    runner = run_wrk if generator == "wrk" else run_builtin
    return runner(port, path, headers, connections, duration, warmup)


# -------------------------------------------------------------------------- servers


def free_port() -> int:
    """A port nothing listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def expand_command(template: str, port: int) -> list[str]:
    """The argv of a command template; {python}, {bin}, {port} and {root} are substituted."""
    if "{port}" not in template:
        raise ValueError(f"the command must contain {{port}}: {template!r}")
    substitutions = {
        "{python}": sys.executable,
        "{bin}": str(Path(sys.executable).parent),
        "{port}": str(port),
        "{root}": str(ROOT),
    }
    argv = []
    for token in shlex.split(template):
        for placeholder, value in substitutions.items():
            token = token.replace(placeholder, value)
        argv.append(token)
    return argv


class Server:
    """A server process on a free loopback port, in its own process group, output to a file."""

    def __init__(self, name: str, command: str, env: dict[str, str], port: int | None = None) -> None:
        self.name = name
        self.port = free_port() if port is None else port
        self.argv = expand_command(command, self.port)
        self._env = env
        self._log: IO[bytes] | None = None
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        self._log = tempfile.TemporaryFile()
        try:
            self._process = subprocess.Popen(
                self.argv,
                cwd=ROOT,
                env=self._env,
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its workers share its process group: stop them together
            )
        except OSError as error:
            self._log.close()
            raise HarnessError(f"{self.name}: cannot start {self.argv}: {error}") from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int | None:
        """The leader's pid, which is also the process group id; None once stopped."""
        return None if self._process is None else self._process.pid

    def output(self, limit: int = 6000) -> str:
        """The end of what the server wrote to stdout and stderr."""
        if self._log is None or self._log.closed:
            return ""
        self._log.flush()
        self._log.seek(0)
        return self._log.read()[-limit:].decode("utf-8", "replace")

    def ensure_running(self) -> None:
        assert self._process is not None
        if _has_exited(self._process):
            raise HarnessError(f"{self.name} exited; its output:\n{self.output()}")

    def wait_ready(self, path: str, headers: Sequence[tuple[str, str]], timeout: float) -> None:
        """Poll GET `path` until it answers 200; fail with the server's output otherwise."""
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            self.ensure_running()
            connection = http.client.HTTPConnection(HOST, self.port, timeout=2)
            try:
                connection.request("GET", path, headers=dict(headers))
                response = connection.getresponse()
                response.read()
            except (OSError, http.client.HTTPException) as error:
                last = f"{type(error).__name__}: {error}"
            else:
                if response.status == 200:
                    return
                last = f"HTTP {response.status}"
            finally:
                connection.close()
            time.sleep(0.1)
        raise HarnessError(
            f"{self.name} did not answer 200 on {path} within {timeout:g} s (last: {last});"
            f" command: {shlex.join(self.argv)}\nits output:\n{self.output()}"
        )

    def stop(self) -> None:
        """SIGTERM to the process group, SIGKILL after a grace period or to workers left behind."""
        process, self._process = self._process, None
        if process is not None:
            if not _has_exited(process):
                _signal_group(process, signal.SIGTERM)
                deadline = time.monotonic() + STOP_GRACE_S
                while not _has_exited(process) and time.monotonic() < deadline:
                    time.sleep(0.05)
            if process.returncode is None:
                # The leader is at most a zombie, not yet reaped: its pid still names our group
                # and no other process can have taken it, so this reaches only our servers.
                _signal_group(process, signal.SIGKILL)
            process.wait()
        if self._log is not None:
            self._log.close()


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the process has exited, without reaping it (so its process group id stays ours)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _signal_group(process: subprocess.Popen[bytes], signum: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signum)


# ------------------------------------------------------------------------ comparison


@dataclass(frozen=True)
class Options:
    target_name: str
    target_cmd: str
    paths: tuple[str, ...]
    headers: tuple[tuple[str, str], ...]
    env: tuple[tuple[str, str], ...]
    generator: str
    connections: int
    duration: float
    warmup: float
    rounds: int
    startup_timeout: float


@dataclass(frozen=True)
class Report:
    generator: str
    options: Options
    summaries: tuple[Summary, ...]

    def ratios(self) -> list[tuple[str, float | None]]:
        bare = next(s for s in self.summaries if s.target == BARE_NAME)
        return [(s.path, ratio(s.rps, bare.rps)) for s in self.summaries if s.target != BARE_NAME]

    def to_json(self) -> dict[str, Any]:
        return {
            "generator": self.generator,
            "connections": self.options.connections,
            "duration_s": self.options.duration,
            "warmup_s": self.options.warmup,
            "rounds": self.options.rounds,
            "results": [
                {**{k: v for k, v in asdict(s).items() if k != "runs"}, "runs": [asdict(r) for r in s.runs]}
                for s in self.summaries
            ],
            "ratios": [
                {"target": self.options.target_name, "baseline": BARE_NAME, "path": path, "ratio": value}
                for path, value in self.ratios()
            ],
        }

    def to_text(self) -> str:
        o = self.options
        lines = [
            f"generator {self.generator}, {o.connections} connections, {o.duration:g} s per run after"
            f" {o.warmup:g} s warm-up, {o.rounds} round(s); medians",
            format_table(self.summaries),
        ]
        ratios = self.ratios()
        for path, value in ratios:
            lines.append(format_ratio(o.target_name, path if len(ratios) > 1 else None, value))
        return "\n".join(lines)


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def compare(options: Options) -> Report:
    """Start both servers, drive them alternately for the rounds, stop them whatever happens."""
    generator = choose_generator(options.generator)
    runs: dict[tuple[str, str], list[LoadResult]] = {}
    with contextlib.ExitStack() as stack:
        data_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="pictor-load-"))
        port = free_port()
        target_env = {
            **os.environ,
            **PICTOR_ENV,
            "PICTOR_DATA_DIR": data_dir,
            "PICTOR_HOST": HOST,
            "PICTOR_PORT": str(port),
            **dict(options.env),
        }
        bare = stack.enter_context(Server(BARE_NAME, BARE_CMD, dict(os.environ)))
        target = stack.enter_context(Server(options.target_name, options.target_cmd, target_env, port))
        bare.wait_ready(BARE_PATH, options.headers, options.startup_timeout)
        for path in options.paths:
            target.wait_ready(path, options.headers, options.startup_timeout)
        plan = [(bare, BARE_PATH)] + [(target, path) for path in options.paths]
        for round_number in range(1, options.rounds + 1):
            for server, path in plan:
                _progress(f"round {round_number}/{options.rounds}: {server.name} {path} ...")
                result = run_load(
                    generator,
                    server.port,
                    path,
                    options.headers,
                    connections=options.connections,
                    duration=options.duration,
                    warmup=options.warmup,
                )
                server.ensure_running()
                _progress(
                    f"  {result.rps:.0f} req/s, p50 {_format_ms(result.p50_ms)} ms,"
                    f" p99 {_format_ms(result.p99_ms)} ms, errors {result.errors}"
                    + (f" {result.error_kinds}" if result.error_kinds else "")
                )
                runs.setdefault((server.name, path), []).append(result)
    summaries = tuple(summarize(name, path, results) for (name, path), results in runs.items())
    return Report(generator=generator, options=options, summaries=summaries)


# ------------------------------------------------------------------------------- CLI


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
    return value


def _non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def positive_int(text: str) -> int:
    """An argparse type for counts: an integer of at least 1 (the other load scripts use it too)."""
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {text}")
    return value


def _header(text: str) -> tuple[str, str]:
    try:
        return parse_header(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _env_pair(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"--env takes NAME=VALUE, got {text!r}")
    return name, value


def _load_arguments(parser: argparse.ArgumentParser, *, default_duration: float) -> None:
    parser.add_argument("--connections", type=positive_int, default=32, help="concurrent connections (32)")
    parser.add_argument(
        "--duration", type=_positive_float, default=default_duration, help="measured seconds per run"
    )
    parser.add_argument(
        "--warmup", type=_non_negative_float, default=1.0, help="unmeasured seconds first (1)"
    )
    parser.add_argument(
        "--header", type=_header, action="append", default=[], help="'Name: value' sent with every request"
    )


def compare_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="http_load.py",
        description="Pictor's req/s and p50/p99 latency next to a bare Litestar endpoint, and their ratio."
        " 'http_load.py generate --help' drives a running server instead.",
    )
    parser.add_argument("--target-name", default="pictor", help="label of the measured server (pictor)")
    parser.add_argument(
        "--target-cmd",
        default=PICTOR_CMD,
        help="command serving the target on 127.0.0.1:{port}; {python}, {bin}, {port} and {root} are"
        " substituted; 'bare' serves the bare app again, to calibrate (default: %(default)s)",
    )
    parser.add_argument(
        "--path", action="append", default=[], help=f"target path to drive, repeatable ({BARE_PATH})"
    )
    parser.add_argument(
        "--env", type=_env_pair, action="append", default=[], help="NAME=VALUE for the target's environment"
    )
    parser.add_argument("--generator", choices=("auto", "wrk", "builtin"), default="auto")
    parser.add_argument("--rounds", type=positive_int, default=1, help="bare/target alternations (1)")
    parser.add_argument("--startup-timeout", type=_positive_float, default=30.0, help="seconds (30)")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    _load_arguments(parser, default_duration=10.0)
    return parser


def generate_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="http_load.py generate",
        description="Drive GET PATH on 127.0.0.1:PORT with the built-in client; print the result as JSON.",
    )
    parser.add_argument("--port", type=positive_int, required=True)
    parser.add_argument("--path", default=BARE_PATH)
    _load_arguments(parser, default_duration=10.0)
    return parser


def options_from(arguments: argparse.Namespace) -> Options:
    target_cmd = BARE_CMD if arguments.target_cmd == "bare" else arguments.target_cmd
    target_name = arguments.target_name
    if arguments.target_cmd == "bare" and target_name == "pictor":
        target_name = "bare2"
    if target_name == BARE_NAME:
        raise HarnessError(f"--target-name cannot be {BARE_NAME!r}: that is the baseline's name")
    try:
        expand_command(target_cmd, 0)
        for path in arguments.path:
            build_request(path, 0)
    except ValueError as error:
        raise HarnessError(str(error)) from None
    return Options(
        target_name=target_name,
        target_cmd=target_cmd,
        paths=tuple(dict.fromkeys(arguments.path)) or (BARE_PATH,),
        headers=tuple(arguments.header),
        env=tuple(arguments.env),
        generator=arguments.generator,
        connections=arguments.connections,
        duration=arguments.duration,
        warmup=arguments.warmup,
        rounds=arguments.rounds,
        startup_timeout=arguments.startup_timeout,
    )


def _stop_on_sigterm() -> None:
    """SIGTERM unwinds like Ctrl-C, so the servers are stopped on the way out."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["generate"]:
        generate = generate_parser().parse_args(args[1:])
        try:
            result = asyncio.run(
                generate_load(
                    generate.port,
                    generate.path,
                    generate.header,
                    connections=generate.connections,
                    duration=generate.duration,
                    warmup=generate.warmup,
                )
            )
        except ValueError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        print(json.dumps(asdict(result)))
        return 0
    arguments = compare_parser().parse_args(args)
    _stop_on_sigterm()
    try:
        report = compare(options_from(arguments))
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
