import os
from pathlib import Path

import pytest

from adapters.memory.secrets import MemorySecrets
from adapters.secrets import ChainedSecrets, EnvSecrets, FileSecrets
from core.errors import DomainError, ErrorCode


async def test_env_secrets_serve_current_then_previous():
    secrets = EnvSecrets(
        {"PICTOR_SECRET_SIGNING": "new", "PICTOR_SECRET_SIGNING_PREVIOUS": "old", "HOME": "/"}
    )
    assert (await secrets.current("signing")).value == "new"
    assert [v.value for v in await secrets.versions("signing")] == ["new", "old"]
    assert await secrets.versions("other") == []


async def test_dedicated_settings_become_secrets():
    secrets = EnvSecrets({}, extra={"metrics_token": "t", "unset": None})
    assert (await secrets.current("metrics_token")).value == "t"
    assert await secrets.versions("unset") == []


async def test_missing_secret_is_a_domain_error():
    with pytest.raises(DomainError) as caught:
        await EnvSecrets({}).current("nothing")
    assert caught.value.code is ErrorCode.SECRET_MISSING


async def test_file_secrets_single_file_layout(tmp_path: Path):
    (tmp_path / "api_token").write_text("abc\n")
    secrets = FileSecrets(tmp_path)
    version = await secrets.current("api_token")
    assert version.value == "abc"
    assert "abc" not in repr(version)


async def test_file_secrets_rotation_keeps_old_versions_until_removed(tmp_path: Path):
    now = [0.0]
    secrets = FileSecrets(tmp_path, ttl_seconds=5, monotonic=lambda: now[0])
    first = secrets.add_version("signing", "one")
    assert (await secrets.current("signing")).value == "one"
    secrets.add_version("signing", "two")  # add_version clears the cache itself
    assert [v.value for v in await secrets.versions("signing")] == ["two", "one"]
    (tmp_path / "signing" / first.version).unlink()  # an operator retires the old key
    assert [v.value for v in await secrets.versions("signing")] == ["two", "one"]  # cached for the TTL
    now[0] = 6.0
    assert [v.value for v in await secrets.versions("signing")] == ["two"]


async def test_file_versions_sort_numerically(tmp_path: Path):
    folder = tmp_path / "k"
    folder.mkdir()
    for name in ("2", "10", "9"):
        (folder / name).write_text(f"v{name}")
    assert (await FileSecrets(tmp_path).current("k")).value == "v10"


async def test_new_versions_are_owner_only(tmp_path: Path):
    FileSecrets(tmp_path).add_version("k", "v")
    assert os.stat(tmp_path / "k" / "1").st_mode & 0o077 == 0


async def test_single_file_is_converted_when_rotated(tmp_path: Path):
    (tmp_path / "k").write_text("old")
    secrets = FileSecrets(tmp_path, ttl_seconds=0)
    secrets.add_version("k", "new")
    assert [v.value for v in await secrets.versions("k")] == ["new", "old"]


async def test_invalid_names_never_touch_the_filesystem(tmp_path: Path):
    with pytest.raises(DomainError):
        await FileSecrets(tmp_path).current("../etc/passwd")


async def test_ping_fails_without_a_required_directory(tmp_path: Path):
    await FileSecrets(tmp_path / "absent").ping()  # optional: simply no secrets from files
    with pytest.raises(FileNotFoundError):
        await FileSecrets(tmp_path / "absent", required=True).ping()


async def test_chain_prefers_the_first_source_that_knows_a_name(tmp_path: Path):
    (tmp_path / "a").write_text("from-file")
    (tmp_path / "b").write_text("file-b")
    chain = ChainedSecrets([EnvSecrets({"PICTOR_SECRET_A": "from-env"}), FileSecrets(tmp_path)])
    assert (await chain.current("a")).value == "from-env"
    assert (await chain.current("b")).value == "file-b"


async def test_memory_secrets_rotate_and_retire():
    secrets = MemorySecrets({"k": ["new", "old"]})
    assert (await secrets.current("k")).value == "new"
    old = (await secrets.versions("k"))[1]
    secrets.retire("k", old.version)
    assert [v.value for v in await secrets.versions("k")] == ["new"]
