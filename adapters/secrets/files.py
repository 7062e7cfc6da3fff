"""Secrets from a directory of files, as Docker and Kubernetes mount them.

Two layouts, per secret name:
- `<dir>/<name>`: a file holding one version (its version id is derived from its content);
- `<dir>/<name>/<version>`: a folder of versions; the greatest name (numbers compared as numbers)
  is current, and every file present is still accepted for verification. Rotating means adding a
  file; retiring a version means removing it.

Reads are cached for `ttl_seconds`, so a rotated file is picked up without a restart.
"""

from __future__ import annotations

import asyncio
import os
import re
import time
from collections.abc import Callable
from pathlib import Path

from adapters.secrets.env import version_of
from core.errors import DomainError, ErrorCode
from core.secrets import SecretVersion

_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,127}")


def _natural_key(name: str) -> tuple[tuple[int, int | str], ...]:
    return tuple((0, int(p)) if p.isdigit() else (1, p) for p in re.split(r"(\d+)", name) if p)


class FileSecrets:
    """Implements `core.ports.Secrets` over a directory."""

    def __init__(
        self,
        directory: Path,
        *,
        ttl_seconds: float = 5.0,
        monotonic: Callable[[], float] = time.monotonic,
        required: bool = False,
    ) -> None:
        self._directory = directory
        self._required = required  # an explicitly configured directory must exist (a failed mount)
        self._ttl = ttl_seconds
        self._monotonic = monotonic
        self._cache: dict[str, tuple[float, list[SecretVersion]]] = {}

    @property
    def directory(self) -> Path:
        return self._directory

    def _read(self, name: str) -> list[SecretVersion]:
        if not _NAME.fullmatch(name):
            raise DomainError(ErrorCode.SECRET_MISSING, f"Invalid secret name {name!r}")
        path = self._directory / name
        if path.is_file():
            value = path.read_text().strip()
            return [SecretVersion(name=name, version=version_of(value), value=value)] if value else []
        if path.is_dir():
            files = sorted(
                (p for p in path.iterdir() if p.is_file() and not p.name.startswith(".")),
                key=lambda p: _natural_key(p.name),
                reverse=True,
            )
            versions = [(p.name, p.read_text().strip()) for p in files]
            return [SecretVersion(name=name, version=v, value=value) for v, value in versions if value]
        return []

    async def current(self, name: str) -> SecretVersion:
        versions = await self.versions(name)
        if not versions:
            raise DomainError(ErrorCode.SECRET_MISSING, f"Secret {name!r} is not configured")
        return versions[0]

    async def versions(self, name: str) -> list[SecretVersion]:
        now = self._monotonic()
        hit = self._cache.get(name)
        if hit is None or now - hit[0] >= self._ttl:
            hit = (now, await asyncio.to_thread(self._read, name))
            self._cache[name] = hit
        return list(hit[1])

    def add_version(self, name: str, value: str, *, version: str | None = None) -> SecretVersion:
        """Write a new current version (`<dir>/<name>/<version>`, owner-only permissions)."""
        if not _NAME.fullmatch(name):
            raise DomainError(ErrorCode.BAD_REQUEST, f"Invalid secret name {name!r}")
        folder = self._directory / name
        if folder.is_file():  # convert the single-file layout, keeping the old value accepted
            old = folder.read_text().strip()
            folder.unlink()
            folder.mkdir(parents=True, mode=0o700)
            self._write(folder / "1", old)
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        existing = [p.name for p in folder.iterdir() if p.is_file()]
        numbers = [int(n) for n in existing if n.isdigit()]
        version = version or str(max(numbers, default=0) + 1)
        self._write(folder / version, value)
        self._cache.pop(name, None)
        return SecretVersion(name=name, version=version, value=value)

    @staticmethod
    def _write(path: Path, value: str) -> None:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(value + "\n")

    async def ping(self) -> None:
        """A missing optional directory just holds no secrets; one that exists must be readable."""
        exists = await asyncio.to_thread(self._directory.is_dir)
        if not exists and self._required:
            raise FileNotFoundError(f"secrets directory {self._directory} does not exist")
        if exists and not await asyncio.to_thread(os.access, self._directory, os.R_OK | os.X_OK):
            raise PermissionError(f"secrets directory {self._directory} is not readable")
