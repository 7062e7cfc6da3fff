"""Several secret sources in order of precedence: the first that knows a name serves it."""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import DomainError, ErrorCode
from core.ports import Secrets
from core.secrets import SecretVersion


class ChainedSecrets:
    """Implements `core.ports.Secrets`; e.g. environment first, then a directory of files."""

    def __init__(self, sources: Sequence[Secrets]) -> None:
        self._sources = list(sources)

    async def versions(self, name: str) -> list[SecretVersion]:
        for source in self._sources:
            versions = await source.versions(name)
            if versions:
                return versions
        return []

    async def current(self, name: str) -> SecretVersion:
        versions = await self.versions(name)
        if not versions:
            raise DomainError(ErrorCode.SECRET_MISSING, f"Secret {name!r} is not configured")
        return versions[0]

    async def ping(self) -> None:
        for source in self._sources:
            await source.ping()
