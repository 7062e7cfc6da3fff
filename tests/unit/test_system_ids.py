import uuid

from adapters.memory.ids import SequentialIds
from adapters.system import SystemClock, SystemIds


def test_ids_are_uuid7_and_sort_by_creation():
    ids = SystemIds()
    made = [ids.new_id() for _ in range(5000)]
    assert made == sorted(made)
    assert len(set(made)) == len(made)
    parsed = uuid.UUID(made[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_tokens_carry_the_requested_entropy():
    ids = SystemIds()
    token = ids.token()
    assert len(token) >= 43  # 32 bytes in URL-safe base64
    assert ids.token() != token
    assert 0.0 <= ids.random() < 1.0


def test_clock_is_utc():
    assert SystemClock().now().utcoffset().total_seconds() == 0


def test_sequential_ids_are_deterministic_and_valid():
    first, second = SequentialIds(), SequentialIds()
    a = [first.new_id() for _ in range(3)]
    assert a == [second.new_id() for _ in range(3)]
    assert a == sorted(a)
    assert uuid.UUID(a[0]).version == 7
