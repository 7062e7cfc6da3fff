"""The HTTP load harness (benchmarks/http_load.py): its pure parts, and one short smoke run."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmarks import http_load
from benchmarks.http_load import (
    LoadResult,
    Options,
    ProtocolError,
    Report,
    ResponseReader,
    build_request,
    expand_command,
    format_table,
    parse_head,
    parse_header,
    parse_wrk_output,
    percentile,
    ratio,
    summarize,
)

# Captured from wrk 4.1.0 against benchmarks/bare_app.py on this machine.
WRK_CLEAN = """\
Running 5s test @ http://127.0.0.1:18765/health/live
  1 threads and 32 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.47ms  410.63us   5.41ms   80.13%
    Req/Sec    21.91k     3.17k   29.21k    78.00%
  Latency Distribution
     50%    1.39ms
     75%    1.57ms
     90%    1.92ms
     99%    2.97ms
  109014 requests in 5.00s, 14.76MB read
Requests/sec:  21796.08
Transfer/sec:      2.95MB
"""

WRK_WITH_ERRORS = """\
Running 1m test @ http://127.0.0.1:8000/v1/me
  1 threads and 32 connections
  Latency Distribution
     50%  850.00us
     75%    1.00ms
     90%    1.20ms
     99%    1.02s
  1200 requests in 1.00m, 1.00MB read
  Socket errors: connect 0, read 3, write 0, timeout 2
  Non-2xx or 3xx responses: 200
Requests/sec:     20.00
Transfer/sec:     17.07KB
"""


def run(requests: int, seconds: float = 1.0, p50: float | None = 1.0, errors: int = 0) -> LoadResult:
    return LoadResult(requests=requests, errors=errors, seconds=seconds, p50_ms=p50, p99_ms=p50)


class TestWrkOutput:
    def test_reads_throughput_and_percentiles(self) -> None:
        result = parse_wrk_output(WRK_CLEAN)

        assert result == LoadResult(requests=109014, errors=0, seconds=5.0, p50_ms=1.39, p99_ms=2.97)
        assert result.rps == pytest.approx(21802.8)

    def test_counts_failed_responses_and_socket_errors_and_converts_units(self) -> None:
        result = parse_wrk_output(WRK_WITH_ERRORS)

        assert result.requests == 1000  # 1200 completed, 200 of them with a status >= 400
        assert result.errors == 205
        assert result.error_kinds == {"socket read": 3, "socket timeout": 2, "HTTP >= 400": 200}
        assert result.seconds == pytest.approx(60.0)
        assert result.p50_ms == pytest.approx(0.85)
        assert result.p99_ms == pytest.approx(1020.0)

    def test_rejects_output_without_a_total(self) -> None:
        with pytest.raises(ValueError, match="requests in"):
            parse_wrk_output("unable to connect to 127.0.0.1:1 Connection refused\n")


class TestPercentile:
    def test_nearest_rank(self) -> None:
        values = list(range(1, 101))

        assert percentile(values, 50) == 50
        assert percentile(values, 99) == 99
        assert percentile(values, 100) == 100
        assert percentile(list(range(1, 1001)), 99) == 990
        assert percentile([7], 1) == 7

    def test_nothing_measured_is_none(self) -> None:
        assert percentile([], 50) is None

    @pytest.mark.parametrize("pct", [0, -1, 100.5])
    def test_rejects_out_of_range(self, pct: float) -> None:
        with pytest.raises(ValueError, match="percentile"):
            percentile([1.0], pct)

    @given(st.lists(st.integers(0, 10_000), min_size=1), st.floats(0.01, 100))
    def test_at_least_pct_of_values_are_at_or_below_it_and_fewer_below(
        self, values: list[int], pct: float
    ) -> None:
        values.sort()
        result = percentile(values, pct)

        assert result in values
        assert sum(v <= result for v in values) >= pct * len(values) / 100
        assert sum(v < result for v in values) < pct * len(values) / 100


class TestRatioAndSummaries:
    def test_ratio_is_target_over_bare(self) -> None:
        assert ratio(30_000.0, 40_000.0) == pytest.approx(0.75)

    def test_ratio_without_a_baseline_is_none(self) -> None:
        assert ratio(100.0, 0.0) is None

    def test_summary_takes_medians_and_sums_errors(self) -> None:
        summary = summarize(
            "pictor", "/health/live", [run(100, p50=3.0), run(300, p50=1.0, errors=2), run(200)]
        )

        assert summary.rps == 200
        assert summary.p50_ms == 1.0
        assert summary.errors == 2
        assert len(summary.runs) == 3

    def test_summary_ignores_runs_that_completed_nothing_for_latency(self) -> None:
        summary = summarize("pictor", "/", [run(0, p50=None, errors=5), run(10, p50=2.0)])

        assert summary.p50_ms == 2.0
        assert summary.rps == 5

    def test_report_ends_with_the_ratio_and_lists_every_target(self) -> None:
        options = Options(
            target_name="pictor",
            target_cmd=http_load.PICTOR_CMD,
            paths=("/health/live",),
            headers=(),
            env=(),
            generator="builtin",
            connections=32,
            duration=10.0,
            warmup=1.0,
            rounds=1,
            startup_timeout=30.0,
        )
        summaries = (
            summarize("bare", "/health/live", [run(40_000)]),
            summarize("pictor", "/health/live", [run(33_200)]),
        )
        report = Report(generator="builtin", options=options, summaries=summaries)

        lines = report.to_text().splitlines()
        assert lines[-1] == "ratio pictor/bare: 0.83"
        assert lines[1].split() == ["target", "path", "req/s", "p50", "ms", "p99", "ms", "errors"]
        assert lines[3].split() == ["pictor", "/health/live", "33200", "1.00", "1.00", "0"]
        assert report.to_json()["ratios"][0]["ratio"] == pytest.approx(0.83)

    def test_table_shows_a_dash_for_missing_latency(self) -> None:
        table = format_table([summarize("pictor", "/x", [run(0, p50=None, errors=3)])])

        assert table.splitlines()[1].split() == ["pictor", "/x", "0", "-", "-", "3"]


class TestResponseReader:
    RESPONSE = (
        b'HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 17\r\n\r\n{"status":"pass"}'
    )

    def test_frames_a_response_fed_byte_by_byte(self) -> None:
        reader = ResponseReader()

        statuses = [
            status for i in range(len(self.RESPONSE)) for status in reader.feed(self.RESPONSE[i : i + 1])
        ]

        assert statuses == [200]

    def test_frames_several_responses_in_one_read(self) -> None:
        other = b"HTTP/1.1 429 Too Many Requests\r\nContent-Length: 2\r\n\r\n{}"

        assert ResponseReader().feed(self.RESPONSE + other + self.RESPONSE[:20]) == [200, 429]

    def test_no_content_without_length(self) -> None:
        reader = ResponseReader()

        assert reader.feed(b"HTTP/1.1 204 No Content\r\nServer: x\r\n\r\n") == [204]
        assert not reader.closes

    def test_notices_connection_close(self) -> None:
        reader = ResponseReader()

        reader.feed(b"HTTP/1.1 503 Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n")

        assert reader.closes

    @pytest.mark.parametrize(
        "head",
        [
            b"http/1.1 200 ok\r\ntransfer-encoding: chunked",
            b"ssh-2.0-openssh",
            b"http/1.1 abc ok\r\ncontent-length: 1",
            b"http/1.1 200 ok\r\ncontent-length: many",
        ],
    )
    def test_rejects_what_it_cannot_frame(self, head: bytes) -> None:
        with pytest.raises(ProtocolError):
            parse_head(head)


class TestRequestsAndCommands:
    def test_request_is_a_keep_alive_get_with_the_extra_headers(self) -> None:
        request = build_request("/v1/me?x=1", 8123, [("Authorization", "Bearer k")])

        assert request == (
            b"GET /v1/me?x=1 HTTP/1.1\r\nHost: 127.0.0.1:8123\r\nUser-Agent: pictor-http-load\r\n"
            b"Authorization: Bearer k\r\n\r\n"
        )

    @pytest.mark.parametrize("path", ["health", "/a b", "/a\r\nX: y"])
    def test_request_rejects_bad_paths(self, path: str) -> None:
        with pytest.raises(ValueError, match="path"):
            build_request(path, 1)

    def test_header_argument(self) -> None:
        assert parse_header("Authorization: Bearer a:b") == ("Authorization", "Bearer a:b")

    @pytest.mark.parametrize("text", ["no colon", ": empty name", "Bad Name: x"])
    def test_header_argument_rejects_malformed(self, text: str) -> None:
        with pytest.raises(ValueError, match="header"):
            parse_header(text)

    def test_command_substitutes_python_bin_port_and_root(self) -> None:
        argv = expand_command("{python} {bin}/x --port {port} --dir '{root}/a b'", 9000)

        assert argv == [
            sys.executable,
            f"{Path(sys.executable).parent}/x",
            "--port",
            "9000",
            "--dir",
            f"{http_load.ROOT}/a b",
        ]

    def test_command_must_take_the_port(self) -> None:
        with pytest.raises(ValueError, match="port"):
            expand_command("pictor serve", 9000)


@pytest.mark.timeout(60)
def test_builtin_generator_drives_the_bare_app_served_by_granian() -> None:
    """Smoke run: about one second of load, then the server's whole process group is gone."""
    with http_load.Server("bare", http_load.BARE_CMD, dict(os.environ)) as server:
        group = server.pid
        assert group is not None
        server.wait_ready(http_load.BARE_PATH, (), timeout=30)

        result = http_load.run_builtin(
            server.port, http_load.BARE_PATH, (), connections=4, duration=1.0, warmup=0.2
        )

    assert result.requests > 0
    assert result.errors == 0, result.error_kinds
    assert result.p50_ms is not None
    assert result.p99_ms is not None
    assert result.p50_ms <= result.p99_ms
    with pytest.raises(ProcessLookupError):
        os.killpg(group, 0)


async def test_generator_counts_refused_connections_as_errors() -> None:
    """Nothing listens on the port: every connection attempt is an error, nothing is measured."""
    port = http_load.free_port()

    result = await http_load.generate_load(port, "/", connections=2, duration=0.2, warmup=0)

    assert result.requests == 0
    assert result.error_kinds.keys() == {"ConnectionRefusedError"}
    assert result.errors > 0
    assert result.p50_ms is None
