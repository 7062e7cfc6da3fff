"""Encoding an RFC 9457 problem body: msgspec (what Litestar uses) beside the stdlib's json.

Both benchmarks are in one group, so the ratio between them is measured in the same run.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from core.errors import ErrorCode, FieldError

VALIDATION_ERRORS = [FieldError(f"field_{n}", "Expected `int`, got `str`", "invalid") for n in range(5)]


def problem_body() -> dict[str, Any]:
    code = ErrorCode.VALIDATION_FAILED
    return {
        "type": f"/problems/{code.value}",
        "title": code.spec.title,
        "status": code.status,
        "detail": "The request is invalid; see errors",
        "instance": "/v1/generations",
        "code": code.value,
        "correlation_id": "0192f0c28f2a7c1e9a515b1c2d3e4f50",
        "errors": [{"field": e.field, "message": e.message, "code": e.code} for e in VALIDATION_ERRORS],
    }


@pytest.mark.benchmark(group="problem-body")
def test_msgspec_encodes_a_problem_body(benchmark: Any) -> None:
    body = problem_body()
    encoder = msgspec.json.Encoder()
    encoded = benchmark(encoder.encode, body)
    assert msgspec.json.decode(encoded) == body


@pytest.mark.benchmark(group="problem-body")
def test_baseline_stdlib_json_encodes_a_problem_body(benchmark: Any) -> None:
    body = problem_body()
    encoded = benchmark(lambda: json.dumps(body, separators=(",", ":")).encode())
    assert json.loads(encoded) == body
