import pytest

from core.correlation import accept_request_id
from core.health import CheckResult, HealthStatus, overall_status


def check(status: HealthStatus, required: bool = True) -> CheckResult:
    return CheckResult(name="x", status=status, required=required)


def test_all_passing_is_pass():
    assert overall_status([check(HealthStatus.PASS), check(HealthStatus.PASS, False)]) is HealthStatus.PASS


def test_a_required_failure_fails():
    assert overall_status([check(HealthStatus.PASS), check(HealthStatus.FAIL)]) is HealthStatus.FAIL


def test_an_optional_problem_only_warns():
    assert overall_status([check(HealthStatus.WARN, False), check(HealthStatus.PASS)]) is HealthStatus.WARN


def test_shutting_down_fails_even_when_everything_passes():
    assert overall_status([check(HealthStatus.PASS)], shutting_down=True) is HealthStatus.FAIL


@pytest.mark.parametrize("value", ["abc", "0192f0c2-8f2a-7c1e-9a51-5b1c2d3e4f50", "req:1.2_3-x", "a" * 128])
def test_safe_request_ids_are_kept(value):
    assert accept_request_id(value) == value


@pytest.mark.parametrize("value", [None, "", "a" * 129, "has space", "new\nline", "<script>", "é"])
def test_unsafe_request_ids_are_dropped(value):
    assert accept_request_id(value) is None
