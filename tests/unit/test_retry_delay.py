import pytest
from hypothesis import given
from hypothesis import strategies as st

from core.jobs import retry_delay

attempts = st.integers(min_value=1, max_value=200)
jitters = st.floats(min_value=0.0, max_value=1.0, exclude_max=True)
bases = st.floats(min_value=0.001, max_value=60.0)


@given(attempts, jitters, bases)
def test_delay_is_between_half_and_all_of_the_exponential_step(attempt, jitter, base):
    step = min(3600.0, base * 2 ** min(attempt - 1, 62))
    delay = retry_delay(attempt, base_seconds=base, backoff=True, jitter=jitter)
    assert step / 2 <= delay <= step


@given(attempts, bases)
def test_without_jitter_delays_never_shrink(attempt, base):
    first = retry_delay(attempt, base_seconds=base, backoff=True, jitter=0.0)
    second = retry_delay(attempt + 1, base_seconds=base, backoff=True, jitter=0.0)
    assert second >= first


@given(attempts, jitters, bases)
def test_constant_delay_without_backoff(attempt, jitter, base):
    assert retry_delay(attempt, base_seconds=base, backoff=False, jitter=jitter) == base


def test_the_cap_holds():
    assert retry_delay(100, base_seconds=5, backoff=True, jitter=0.999, cap_seconds=60) <= 60


@pytest.mark.parametrize(("attempt", "jitter"), [(0, 0.5), (1, 1.0), (1, -0.1)])
def test_bad_inputs_are_refused(attempt, jitter):
    with pytest.raises(ValueError):
        retry_delay(attempt, base_seconds=1, backoff=True, jitter=jitter)
