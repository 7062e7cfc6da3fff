"""Secrets held in memory, for tests and for the embedded default's generated keys."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from core.errors import DomainError, ErrorCode
from core.secrets import SecretVersion


class MemorySecrets:
    """Implements `core.ports.Secrets`; `values[name]` lists the versions' values, newest first."""

    def __init__(self, values: Mapping[str, Sequence[str]] | None = None) -> None:
        self._versions: dict[str, list[SecretVersion]] = {}
        for name, versions in (values or {}).items():
            for value in reversed(versions):
                self.rotate(name, value)

    def rotate(self, name: str, value: str) -> SecretVersion:
        """Make `value` the current version; older ones stay accepted."""
        existing = self._versions.setdefault(name, [])
        version = SecretVersion(name=name, version=str(len(existing) + 1), value=value)
        existing.insert(0, version)
        return version

    def retire(self, name: str, version: str) -> None:
        """Stop accepting an old version."""
        self._versions[name] = [v for v in self._versions.get(name, []) if v.version != version]

    async def current(self, name: str) -> SecretVersion:
        versions = self._versions.get(name)
        if not versions:
            raise DomainError(ErrorCode.SECRET_MISSING, f"Secret {name!r} is not configured")
        return versions[0]

    async def versions(self, name: str) -> list[SecretVersion]:
        return list(self._versions.get(name, []))

    async def ping(self) -> None:
        return None
