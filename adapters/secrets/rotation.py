"""Rotating secrets kept in a directory of version files (the layout `files.py` reads).

Two rules make a rotation safe while many processes sign and verify:
- A new version is *staged* before it signs. For `activation_seconds` after its file appears (the
  readers' cache TTL plus a margin) it is accepted for verification while the previous version still
  signs, so by the time any process signs with it, every process has read it. Without this, a
  process that picked the new version up first would hand out links that another process, its cache
  not yet refreshed, refuses.
- Previous versions stay until an operator retires them, so what they signed keeps verifying.

`StagedFileSecrets` is the reader with the first rule; `SecretsDirectory` is what `pictor secrets`
uses to list, rotate and retire. Neither ever shows a secret's value.
"""

from __future__ import annotations

import errno
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from adapters.secrets.env import ENV_PREFIX
from adapters.secrets.files import FileSecrets, _natural_key
from core.ports import Secrets
from core.secrets import SecretVersion

ACTIVATION_MARGIN_SECONDS = 2.0
"""Beyond the cache TTL: file times and the readers' clocks need not agree to the millisecond."""

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")
_NOT_WRITABLE = (errno.EROFS, errno.EACCES, errno.EPERM)


def current_first(
    versions: Sequence[SecretVersion], visible_for: Mapping[str, float], activation_seconds: float
) -> list[SecretVersion]:
    """`versions` (newest first) reordered so the one to sign with comes first.

    That is the newest version visible for at least `activation_seconds`; when none is (a secret
    just created, or versions written moments apart), the oldest, which every reader knew first.
    The others keep their order: all of them still verify.
    """
    if len(versions) < 2:
        return list(versions)
    active = [v for v in versions if visible_for.get(v.version, 0.0) >= activation_seconds]
    current = active[0] if active else versions[-1]
    return [current, *(v for v in versions if v is not current)]


class StagedFileSecrets(FileSecrets):
    """`FileSecrets` whose newest version signs only once every reader has had time to see it.

    `wall` gives epoch seconds, compared with the version files' modification times.
    """

    def __init__(
        self,
        directory: Path,
        *,
        ttl_seconds: float = 5.0,
        activation_seconds: float | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
        required: bool = False,
    ) -> None:
        super().__init__(directory, ttl_seconds=ttl_seconds, monotonic=monotonic, required=required)
        self._activation = (
            ttl_seconds + ACTIVATION_MARGIN_SECONDS if activation_seconds is None else activation_seconds
        )
        self._wall = wall

    @property
    def activation_seconds(self) -> float:
        return self._activation

    def _read(self, name: str) -> list[SecretVersion]:
        versions = super()._read(name)
        folder = self.directory / name
        if len(versions) < 2 or not folder.is_dir():
            return versions
        return current_first(versions, self.visible_for(name, versions), self._activation)

    def visible_for(self, name: str, versions: Iterable[SecretVersion]) -> dict[str, float]:
        """Seconds since each version's file appeared (a file gone meanwhile counts as new)."""
        now = self._wall()
        seen: dict[str, float] = {}
        for version in versions:
            try:
                seen[version.version] = now - (self.directory / name / version.version).stat().st_mtime
            except FileNotFoundError:
                seen[version.version] = 0.0
        return seen


class SecretsOperationRefused(Exception):
    """A rotation or retirement that must not happen here; the message says why and what to do."""


VersionState = Literal["current", "staged", "accepted"]


@dataclass(frozen=True, slots=True)
class VersionStatus:
    version: str
    state: VersionState  # current signs; staged will sign once every reader has it; accepted verifies
    created_at: datetime | None  # when its file appeared; None for the environment's
    signs_in_seconds: float | None = None  # for a staged version: when it becomes current


@dataclass(frozen=True, slots=True)
class SecretStatus:
    name: str
    source: Literal["environment", "directory", "missing"]
    location: str  # the variables or the path it comes from
    versions: list[VersionStatus]


class SecretsDirectory:
    """The operator's view of the secrets directory: list, rotate, retire. Never reveals a value.

    `environment` is the source that takes precedence over the directory (a secret it serves
    cannot be rotated here); `extra_variables` names variables other than PICTOR_SECRET_<NAME>
    that feed it (e.g. PICTOR_METRICS_TOKEN).
    """

    def __init__(
        self,
        directory: Path,
        *,
        environment: Secrets,
        extra_variables: Mapping[str, str] | None = None,
        activation_seconds: float,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._directory = directory
        self._environment = environment
        self._extra_variables = dict(extra_variables or {})
        self._wall = wall
        self._files = StagedFileSecrets(
            directory, ttl_seconds=0, activation_seconds=activation_seconds, wall=wall
        )

    @property
    def directory(self) -> Path:
        return self._directory

    def names_in_directory(self) -> list[str]:
        if not self._directory.is_dir():
            return []
        return sorted(p.name for p in self._directory.iterdir() if _NAME.fullmatch(p.name))

    def variables_for(self, name: str) -> list[str]:
        base = ENV_PREFIX + name.upper()
        return [
            base,
            f"{base}_PREVIOUS",
            *([self._extra_variables[name]] if name in self._extra_variables else []),
        ]

    async def status(self, name: str) -> SecretStatus:
        self._check_name(name)
        from_environment = await self._environment.versions(name)
        if from_environment:
            return SecretStatus(
                name=name,
                source="environment",
                location=" / ".join(self.variables_for(name)),
                versions=[
                    VersionStatus(
                        version=v.version, state="current" if i == 0 else "accepted", created_at=None
                    )
                    for i, v in enumerate(from_environment)
                ],
            )
        versions = await self._files.versions(name)
        if not versions:
            return SecretStatus(
                name=name, source="missing", location=str(self._directory / name), versions=[]
            )
        visible = self._files.visible_for(name, versions)
        now = self._wall()
        statuses = []
        for index, version in enumerate(versions):
            age = visible[version.version]
            newer_than_current = index > 0 and _newer(version.version, versions[0].version)
            staged = newer_than_current and age < self._files.activation_seconds
            statuses.append(
                VersionStatus(
                    version=version.version,
                    state="current" if index == 0 else "staged" if staged else "accepted",
                    created_at=datetime.fromtimestamp(now - age, UTC),
                    signs_in_seconds=self._files.activation_seconds - age if staged else None,
                )
            )
        return SecretStatus(
            name=name, source="directory", location=str(self._directory / name), versions=statuses
        )

    async def rotate(self, name: str, value: str) -> VersionStatus:
        """Add `value` as the next version of `name`; it signs once every reader has seen it."""
        await self._check_rotatable(name)
        if not value or value != value.strip() or "\n" in value:
            raise SecretsOperationRefused("A secret's value must be one line without surrounding spaces")
        folder = self._directory / name
        self._check_writable(folder)
        existing = [v.version for v in await self._files.versions(name)]
        version = str(max((int(v) for v in existing if v.isdigit()), default=0) + 1)
        if any(_newer(v, version) for v in existing):
            raise SecretsOperationRefused(
                f"The versions of {name} ({', '.join(existing)}) are not plain numbers, so Pictor cannot "
                f"name the next one: add it yourself as a file in {folder} whose name sorts last"
            )
        try:
            added = self._files.add_version(name, value, version=version)
        except FileExistsError:
            raise SecretsOperationRefused(
                f"Version {version} of {name} appeared meanwhile (another rotation?); look again"
            ) from None
        except OSError as error:
            if error.errno in _NOT_WRITABLE:
                raise SecretsOperationRefused(self._read_only_message(folder)) from None
            raise
        return VersionStatus(
            version=added.version,
            state="staged",
            created_at=datetime.fromtimestamp(self._wall(), UTC),
            signs_in_seconds=self._files.activation_seconds,
        )

    async def retire(self, name: str, version: str, *, force: bool = False) -> SecretStatus:
        """Remove a version: what it signed stops verifying. The current version only with `force`
        (a leaked key), and never the last one."""
        status = await self.status(name)
        if status.source == "environment":
            raise SecretsOperationRefused(self._environment_message(name, "retire a version of"))
        found = next((v for v in status.versions if v.version == version), None)
        if found is None:
            known = ", ".join(v.version for v in status.versions) or "none"
            raise SecretsOperationRefused(f"{name} has no version {version!r} (versions: {known})")
        if len(status.versions) == 1:
            raise SecretsOperationRefused(f"{version} is the only version of {name}: rotate first")
        if found.state == "current" and not force:
            raise SecretsOperationRefused(
                f"{version} is the version of {name} that signs now; rotate first and retire it once "
                "what it signed has expired (--force retires it at once, e.g. for a leaked key)"
            )
        path = self._directory / name / version
        self._check_writable(path.parent)
        try:
            path.unlink()
        except OSError as error:
            if error.errno in _NOT_WRITABLE:
                raise SecretsOperationRefused(self._read_only_message(path.parent)) from None
            raise
        return await self.status(name)

    async def _check_rotatable(self, name: str) -> None:
        self._check_name(name)
        if await self._environment.versions(name):
            raise SecretsOperationRefused(self._environment_message(name, "rotate"))
        single = self._directory / name
        if single.is_file():
            raise SecretsOperationRefused(
                f"{name} is a single file ({single}), provided from outside Pictor: replace it where it "
                f"comes from, or turn it into a folder of versions ({single}/<version>) to rotate it here"
            )
        if not await self._files.versions(name):
            raise SecretsOperationRefused(f"There is no secret {name!r} in {self._directory} to rotate")

    def _check_writable(self, folder: Path) -> None:
        target = folder if folder.exists() else self._directory
        if not os.access(target, os.W_OK):
            raise SecretsOperationRefused(self._read_only_message(target))

    def _environment_message(self, name: str, act: str) -> str:
        variables = self.variables_for(name)
        return (
            f"{name} comes from the environment ({', '.join(variables)}), which takes precedence over "
            f"{self._directory}; {act} it there: set {variables[1]} to the current value and "
            f"{variables[0]} to the new one, restart, and drop {variables[1]} once what the old one "
            "signed has expired"
        )

    @staticmethod
    def _read_only_message(path: Path) -> str:
        return (
            f"{path} is read-only (a mounted secret?): add the new version where it comes from, as a "
            "new file in the secret's folder; Pictor picks it up without a restart"
        )

    @staticmethod
    def _check_name(name: str) -> None:
        if not _NAME.fullmatch(name):
            raise SecretsOperationRefused(f"Invalid secret name {name!r}: a-z, 0-9, '_', '.', '-'")


def _newer(version: str, than: str) -> bool:
    """Whether `version` sorts after `than` as the folder layout orders versions."""
    return _natural_key(version) > _natural_key(than)
