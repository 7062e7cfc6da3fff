import json
import logging
from pathlib import Path

from entrypoints.correlation import correlation_id_var
from entrypoints.logging_setup import ConsoleFormatter, JsonFormatter


def _record(**extra):
    record = logging.LogRecord("pictor.test", logging.WARNING, __file__, 1, "hello %s", ("world",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_the_correlation_id_and_extras():
    token = correlation_id_var.set("req-1")
    try:
        line = JsonFormatter().format(_record(route="/x", status=200))
    finally:
        correlation_id_var.reset(token)
    entry = json.loads(line)
    assert entry["message"] == "hello world"
    assert entry["level"] == "warning"
    assert entry["correlation_id"] == "req-1"
    assert entry["route"] == "/x"
    assert entry["status"] == 200


def test_values_json_cannot_encode_are_written_as_text_not_dropped():
    entry = json.loads(JsonFormatter().format(_record(path=Path("/tmp/x"), error=ValueError("bad"))))
    assert entry["path"] == "/tmp/x"
    assert entry["error"] == "bad"


def test_console_lines_are_readable():
    line = ConsoleFormatter().format(_record(route="/x"))
    assert "WARNING" in line
    assert "hello world" in line
    assert "route=/x" in line
