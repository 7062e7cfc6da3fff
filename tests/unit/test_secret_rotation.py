"""Staged rotation over a secrets directory: a new version verifies at once and signs only once
every reader has had time to see it; the operator's list, rotate and retire, which never show a
value and refuse what is managed elsewhere."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.memory.secrets import MemorySecrets
from adapters.secrets import ChainedSecrets, EnvSecrets
from adapters.secrets.rotation import (
    SecretsDirectory,
    SecretsOperationRefused,
    StagedFileSecrets,
    current_first,
)
from core.secrets import SecretVersion

ACTIVATION = 7.0
T0 = 1_700_000_000.0


class Wall:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def write_version(folder: Path, version: str, value: str, at: float) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / version
    path.write_text(value + "\n")
    os.utime(path, (at, at))


@given(
    ages=st.lists(st.floats(min_value=0, max_value=100), min_size=1, max_size=8),
)
def test_current_first_picks_the_newest_visible_long_enough_else_the_oldest(ages: list[float]) -> None:
    versions = [SecretVersion(name="k", version=str(len(ages) - i), value=f"v{i}") for i in range(len(ages))]
    visible = {v.version: age for v, age in zip(versions, ages, strict=True)}
    ordered = current_first(versions, visible, ACTIVATION)

    assert sorted(v.version for v in ordered) == sorted(v.version for v in versions)
    active = [v for v in versions if visible[v.version] >= ACTIVATION]
    assert ordered[0] == (active[0] if active else versions[-1])
    assert ordered[1:] == [v for v in versions if v is not ordered[0]]


async def test_a_new_version_verifies_at_once_and_signs_after_the_activation_delay(tmp_path: Path) -> None:
    wall = Wall(T0)
    folder = tmp_path / "url_signing_key"
    write_version(folder, "1", "old-value", at=T0 - 3600)
    secrets = StagedFileSecrets(tmp_path, ttl_seconds=0, activation_seconds=ACTIVATION, wall=wall)
    assert (await secrets.current("url_signing_key")).version == "1"

    write_version(folder, "2", "new-value", at=T0)
    assert [v.version for v in await secrets.versions("url_signing_key")] == ["1", "2"]
    assert (await secrets.current("url_signing_key")).version == "1"  # staged: verifies, does not sign

    wall.now = T0 + ACTIVATION - 0.1
    assert (await secrets.current("url_signing_key")).version == "1"
    wall.now = T0 + ACTIVATION
    assert [v.version for v in await secrets.versions("url_signing_key")] == ["2", "1"]
    assert (await secrets.current("url_signing_key")).value == "new-value"


async def test_a_first_version_signs_at_once(tmp_path: Path) -> None:
    wall = Wall(T0)
    write_version(tmp_path / "metrics_token", "1", "fresh", at=T0)
    write_version(tmp_path / "webhook_secret_key", "1", "fresh-1", at=T0)
    write_version(tmp_path / "webhook_secret_key", "2", "fresh-2", at=T0)
    secrets = StagedFileSecrets(tmp_path, ttl_seconds=0, activation_seconds=ACTIVATION, wall=wall)
    assert (await secrets.current("metrics_token")).version == "1"
    # Two versions written moments apart: the older one signs until the newer one is due.
    assert (await secrets.current("webhook_secret_key")).version == "1"


def operator_view(tmp_path: Path, wall: Wall, environ: dict[str, str] | None = None) -> SecretsDirectory:
    return SecretsDirectory(
        tmp_path,
        environment=EnvSecrets(environ or {}, extra={"metrics_token": None}),
        extra_variables={"metrics_token": "PICTOR_METRICS_TOKEN"},
        activation_seconds=ACTIVATION,
        wall=wall,
    )


async def test_rotate_stages_the_next_version_and_keeps_the_old_ones(tmp_path: Path) -> None:
    wall = Wall(os.path.getmtime(tmp_path))  # file times come from the real clock
    write_version(tmp_path / "url_signing_key", "1", "old-value", at=wall.now - 3600)
    directory = operator_view(tmp_path, wall)

    added = await directory.rotate("url_signing_key", "new-value")
    assert (added.version, added.state, added.signs_in_seconds) == ("2", "staged", ACTIVATION)
    assert (tmp_path / "url_signing_key" / "2").read_text().strip() == "new-value"
    assert (tmp_path / "url_signing_key" / "2").stat().st_mode & 0o077 == 0  # owner only
    status = await directory.status("url_signing_key")
    assert (status.source, [(v.version, v.state) for v in status.versions]) == (
        "directory",
        [("1", "current"), ("2", "staged")],
    )
    assert "value" not in repr(status) and "new-value" not in repr(status)

    wall.now += 3600
    status = await directory.status("url_signing_key")
    assert [(v.version, v.state) for v in status.versions] == [("2", "current"), ("1", "accepted")]
    again = await directory.rotate("url_signing_key", "newer-value")
    assert again.version == "3"


async def test_retire_removes_an_old_version_but_not_the_one_that_signs(tmp_path: Path) -> None:
    wall = Wall(T0)
    folder = tmp_path / "webhook_secret_key"
    write_version(folder, "1", "one", at=T0 - 3600)
    write_version(folder, "2", "two", at=T0 - 1800)
    directory = operator_view(tmp_path, wall)

    with pytest.raises(SecretsOperationRefused, match="signs now"):
        await directory.retire("webhook_secret_key", "2")
    with pytest.raises(SecretsOperationRefused, match="no version '9'"):
        await directory.retire("webhook_secret_key", "9")
    status = await directory.retire("webhook_secret_key", "1")
    assert [(v.version, v.state) for v in status.versions] == [("2", "current")]
    assert not (folder / "1").exists()
    with pytest.raises(SecretsOperationRefused, match="only version"):
        await directory.retire("webhook_secret_key", "2", force=True)

    write_version(folder, "3", "three", at=T0 - 60)
    status = await directory.retire("webhook_secret_key", "3", force=True)  # a leaked key goes at once
    assert [v.version for v in status.versions] == ["2"]


async def test_what_is_managed_elsewhere_is_refused_with_what_to_do(tmp_path: Path) -> None:
    wall = Wall(T0)
    environ = {"PICTOR_SECRET_URL_SIGNING_KEY": "from-env"}
    directory = operator_view(tmp_path, wall, environ)
    write_version(tmp_path / "url_signing_key", "1", "shadowed", at=T0 - 3600)

    with pytest.raises(
        SecretsOperationRefused, match="PICTOR_SECRET_URL_SIGNING_KEY_PREVIOUS"
    ) as env_refusal:
        await directory.rotate("url_signing_key", "new")
    assert "from-env" not in str(env_refusal.value)
    status = await directory.status("url_signing_key")
    assert status.source == "environment" and [v.state for v in status.versions] == ["current"]

    metrics = SecretsDirectory(
        tmp_path,
        environment=EnvSecrets({}, extra={"metrics_token": "token-from-setting"}),
        extra_variables={"metrics_token": "PICTOR_METRICS_TOKEN"},
        activation_seconds=ACTIVATION,
    )
    with pytest.raises(SecretsOperationRefused, match="PICTOR_METRICS_TOKEN"):
        await metrics.rotate("metrics_token", "new")

    (tmp_path / "renderer_api_key").write_text("mounted\n")
    with pytest.raises(SecretsOperationRefused, match="single file"):
        await directory.rotate("renderer_api_key", "new")
    assert (tmp_path / "renderer_api_key").read_text() == "mounted\n"

    with pytest.raises(SecretsOperationRefused, match="no secret 'nothing'"):
        await directory.rotate("nothing", "new")
    with pytest.raises(SecretsOperationRefused, match="Invalid secret name"):
        await directory.rotate("../etc", "new")
    write_version(tmp_path / "webhook_secret_key", "1", "one", at=T0 - 3600)
    with pytest.raises(SecretsOperationRefused, match="one line"):
        await directory.rotate("webhook_secret_key", "two\nlines")
    write_version(tmp_path / "webhook_secret_key", "v7", "named", at=T0 - 3600)
    with pytest.raises(SecretsOperationRefused, match="not plain numbers"):
        await directory.rotate("webhook_secret_key", "new")


async def test_the_services_see_a_rotation_through_the_chain(tmp_path: Path) -> None:
    """What `wiring.build_secrets` builds: the environment first, then the staged directory."""
    wall = Wall(T0)
    write_version(tmp_path / "url_signing_key", "1", "one", at=T0 - 3600)
    write_version(tmp_path / "url_signing_key", "2", "two", at=T0 - 1)
    files = StagedFileSecrets(tmp_path, ttl_seconds=0, activation_seconds=ACTIVATION, wall=wall)
    chain = ChainedSecrets([MemorySecrets(), files])
    assert (await chain.current("url_signing_key")).version == "1"
    assert {v.version for v in await chain.versions("url_signing_key")} == {"1", "2"}


async def test_no_reader_signs_with_a_version_another_reader_does_not_accept_yet(tmp_path: Path) -> None:
    """Two processes whose caches refresh at different moments, around a rotation: whatever one
    signs with, the other verifies, at every moment."""
    t = 0.0
    ttl = 5.0
    readers = [
        StagedFileSecrets(
            tmp_path,
            ttl_seconds=ttl,
            activation_seconds=ttl + 2,
            monotonic=lambda: t,
            wall=lambda: T0 + t,
        )
        for _ in range(2)
    ]
    write_version(tmp_path / "url_signing_key", "1", "one", at=T0 - 3600)
    await readers[1].versions("url_signing_key")  # cached just before the rotation
    write_version(tmp_path / "url_signing_key", "2", "two", at=T0 + 0.1)
    signed_with = set()
    for step in range(2, 100):
        t = step * 0.25
        for signer, verifier in (readers, reversed(readers)):
            current = await signer.current("url_signing_key")
            accepted = {v.version for v in await verifier.versions("url_signing_key")}
            assert current.version in accepted, (t, current.version, accepted)
            signed_with.add(current.version)
    assert signed_with == {"1", "2"}  # the rotation did happen
