"""The Secrets port, on every source: environment, files, memory, and a chain of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from adapters.memory.secrets import MemorySecrets
from adapters.secrets import ChainedSecrets, EnvSecrets, FileSecrets
from core.errors import DomainError, ErrorCode
from core.ports import Secrets

# Each factory serves secret `signing` with versions ["new", "old"] (current first) and nothing else.
Factory = Callable[[Path], Secrets]


def _env(_: Path) -> Secrets:
    return EnvSecrets({"PICTOR_SECRET_SIGNING": "new", "PICTOR_SECRET_SIGNING_PREVIOUS": "old"})


def _files(directory: Path) -> Secrets:
    secrets = FileSecrets(directory, ttl_seconds=0)
    secrets.add_version("signing", "old")
    secrets.add_version("signing", "new")
    return secrets


def _memory(_: Path) -> Secrets:
    return MemorySecrets({"signing": ["new", "old"]})


def _chain(directory: Path) -> Secrets:
    return ChainedSecrets([EnvSecrets({}), _files(directory)])


@pytest.fixture(params=[_env, _files, _memory, _chain], ids=["env", "files", "memory", "chain"])
def secrets(request: pytest.FixtureRequest, tmp_path: Path) -> Secrets:
    factory: Factory = request.param
    return factory(tmp_path)


async def test_current_is_the_newest_version(secrets: Secrets):
    current = await secrets.current("signing")
    assert current.name == "signing"
    assert current.value == "new"


async def test_versions_list_every_accepted_value_newest_first(secrets: Secrets):
    versions = await secrets.versions("signing")
    assert [v.value for v in versions] == ["new", "old"]
    assert len({v.version for v in versions}) == 2  # versions are told apart, e.g. by signed links


async def test_unknown_secrets_are_missing_not_empty(secrets: Secrets):
    assert await secrets.versions("unknown") == []
    with pytest.raises(DomainError) as caught:
        await secrets.current("unknown")
    assert caught.value.code is ErrorCode.SECRET_MISSING


async def test_values_never_show_in_reprs(secrets: Secrets):
    current = await secrets.current("signing")
    assert "new" not in repr(current)
    assert "new" not in str(current)


async def test_ping_answers(secrets: Secrets):
    await secrets.ping()
