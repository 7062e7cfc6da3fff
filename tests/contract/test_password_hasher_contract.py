"""The PasswordHasher port: argon2id and the fast test fake make the same promises."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from adapters.memory.password_hasher import FastPasswordHasher
from adapters.passwords.argon2_hasher import OWASP_MEMORY_COST_KIB, Argon2PasswordHasher
from core.ports import PasswordHasher

PASSWORD = "correct horse battery staple"


@dataclass(frozen=True)
class HasherCase:
    make: Callable[[], PasswordHasher]
    # The same kind of hasher with other cost parameters, as after an operator raises them.
    make_changed: Callable[[], PasswordHasher]


CASES = {
    "argon2": HasherCase(
        make=lambda: Argon2PasswordHasher(),
        make_changed=lambda: Argon2PasswordHasher(time_cost=3),
    ),
    "fast": HasherCase(
        make=lambda: FastPasswordHasher(),
        make_changed=lambda: FastPasswordHasher(iterations=2),
    ),
}


@pytest.fixture(params=list(CASES), ids=list(CASES))
def case(request: pytest.FixtureRequest) -> HasherCase:
    return CASES[request.param]


@pytest.fixture
def hasher(case: HasherCase) -> PasswordHasher:
    return case.make()


async def test_a_hash_does_not_contain_the_password(hasher: PasswordHasher):
    password_hash = await hasher.hash(PASSWORD)
    assert password_hash != PASSWORD
    assert PASSWORD not in password_hash
    assert "horse" not in password_hash


async def test_the_same_password_hashes_differently_each_time(hasher: PasswordHasher):
    first, second = await hasher.hash(PASSWORD), await hasher.hash(PASSWORD)
    assert first != second
    assert await hasher.verify(first, PASSWORD)
    assert await hasher.verify(second, PASSWORD)


@pytest.mark.parametrize(
    "password",
    [PASSWORD, "我的密码是一匹正确的马", "🐴🔋📎 staple", "x" * 128],
    ids=["ascii", "cjk", "emoji", "max"],
)
async def test_verify_accepts_the_right_password(hasher: PasswordHasher, password: str):
    assert await hasher.verify(await hasher.hash(password), password) is True


@pytest.mark.parametrize(
    "wrong",
    ["correct horse battery stapl", "Correct horse battery staple", PASSWORD + " ", "", "\x00"],
    ids=["shorter", "case", "longer", "empty", "nul"],
)
async def test_verify_rejects_a_wrong_password(hasher: PasswordHasher, wrong: str):
    assert await hasher.verify(await hasher.hash(PASSWORD), wrong) is False


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "$argon2id$",
        "$argon2id$v=19$m=19456,t=2,p=1$bm90LWEtc2FsdA$bm90LWEtZGlnZXN0",
        "fake$1$$",
        "fake$x$AAAA$AAAA",
        "fake$1$AAAA$!!!!",
        "hash-ü-not-ascii",
    ],
)
async def test_verify_answers_false_for_a_hash_it_cannot_read(hasher: PasswordHasher, garbage: str):
    assert await hasher.verify(garbage, PASSWORD) is False


async def test_verify_answers_false_for_a_truncated_hash(hasher: PasswordHasher):
    password_hash = await hasher.hash(PASSWORD)
    assert await hasher.verify(password_hash[:-4], PASSWORD) is False


async def test_verify_answers_false_for_the_other_adapters_hashes(case: HasherCase):
    hasher = case.make()
    for other in CASES.values():
        other_hasher = other.make()
        if type(other_hasher) is type(hasher):
            continue
        assert await hasher.verify(await other_hasher.hash(PASSWORD), PASSWORD) is False


async def test_a_fresh_hash_needs_no_rehash(hasher: PasswordHasher):
    assert hasher.needs_rehash(await hasher.hash(PASSWORD)) is False


async def test_a_hash_made_with_other_parameters_needs_rehash(case: HasherCase):
    old, current = case.make(), case.make_changed()
    old_hash = await old.hash(PASSWORD)
    assert current.needs_rehash(old_hash) is True
    assert await current.verify(old_hash, PASSWORD) is True  # the login that re-hashes still works
    assert current.needs_rehash(await current.hash(PASSWORD)) is False


async def test_an_unreadable_hash_needs_rehash(hasher: PasswordHasher):
    assert hasher.needs_rehash("garbage") is True


async def test_concurrent_hashes_all_verify(hasher: PasswordHasher):
    passwords = [f"{PASSWORD} {n}" for n in range(6)]
    hashes = await asyncio.gather(*(hasher.hash(p) for p in passwords))
    results = await asyncio.gather(*(hasher.verify(h, p) for h, p in zip(hashes, passwords, strict=True)))
    assert results == [True] * 6


# --- promises of the individual adapters ---------------------------------------------------------


async def test_argon2_uses_argon2id_with_owasp_minimum_parameters():
    password_hash = await Argon2PasswordHasher().hash(PASSWORD)
    assert password_hash.startswith(f"$argon2id$v=19$m={OWASP_MEMORY_COST_KIB},t=2,p=1$")


async def test_argon2_needs_rehash_when_memory_cost_changes():
    old_hash = await Argon2PasswordHasher().hash(PASSWORD)
    assert Argon2PasswordHasher(memory_cost_kib=2 * OWASP_MEMORY_COST_KIB).needs_rehash(old_hash) is True


class _GatedArgon2:
    """Stands in for argon2-cffi's hasher: records how many calls run at once, in which threads."""

    def __init__(self, meet: int) -> None:
        self.in_flight = 0
        self.most_in_flight = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()
        # `meet` calls must be inside at the same time to pass: proves they run in parallel.
        self._barrier = threading.Barrier(meet, timeout=5)
        self.loop_ran = threading.Event()

    def hash(self, password: str) -> str:
        with self._lock:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
            self.threads.add(threading.get_ident())
        try:
            self._barrier.wait()
            # The event loop sets this while we block: it would never run if we were on it.
            if not self.loop_ran.wait(timeout=5):
                raise AssertionError("the event loop was blocked while hashing")
            return "$argon2id$stand-in"
        finally:
            with self._lock:
                self.in_flight -= 1


async def test_argon2_hashes_off_the_event_loop_at_most_max_concurrent_at_once(
    monkeypatch: pytest.MonkeyPatch,
):
    hasher = Argon2PasswordHasher(max_concurrent=2)
    gated = _GatedArgon2(meet=2)
    monkeypatch.setattr(hasher, "_hasher", gated)

    burst = asyncio.gather(*(hasher.hash(f"{PASSWORD} {n}") for n in range(6)))
    await asyncio.sleep(0)
    gated.loop_ran.set()
    assert await burst == ["$argon2id$stand-in"] * 6
    assert gated.most_in_flight == 2
    assert threading.get_ident() not in gated.threads


def test_argon2_refuses_a_concurrency_below_one():
    with pytest.raises(ValueError):
        Argon2PasswordHasher(max_concurrent=0)


def test_argon2_defaults_to_one_slot_per_cpu():
    import os

    assert Argon2PasswordHasher().max_concurrent == (os.cpu_count() or 1)


async def test_argon2_hasher_serves_successive_event_loops():
    # With one slot, two concurrent calls make the second wait, which ties an asyncio semaphore
    # to the loop it waits on; the hasher must still work when used from another loop.
    hasher = Argon2PasswordHasher(max_concurrent=1)
    hashes = await asyncio.gather(hasher.hash(PASSWORD), hasher.hash(PASSWORD))

    async def verify_both() -> list[bool]:
        return await asyncio.gather(*(hasher.verify(h, PASSWORD) for h in hashes))

    assert await asyncio.to_thread(asyncio.run, verify_both()) == [True, True]
    assert await verify_both() == [True, True]


async def test_fast_hasher_parameters_can_be_changed_in_place():
    hasher = FastPasswordHasher(iterations=1)
    old_hash = await hasher.hash(PASSWORD)
    hasher.iterations = 3
    assert hasher.needs_rehash(old_hash) is True
    assert await hasher.verify(old_hash, PASSWORD) is True
    assert hasher.needs_rehash(await hasher.hash(PASSWORD)) is False
