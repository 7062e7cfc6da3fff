"""Secrets from environment variables: `PICTOR_SECRET_<NAME>` and `PICTOR_SECRET_<NAME>_PREVIOUS`."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

from core.errors import DomainError, ErrorCode
from core.secrets import SecretVersion

ENV_PREFIX = "PICTOR_SECRET_"


def version_of(value: str) -> str:
    """A version id derived from the value: stable across processes, changes when the value does."""
    return hashlib.sha256(value.encode()).hexdigest()[:12]


class EnvSecrets:
    """Implements `core.ports.Secrets` over a snapshot of the environment taken by the wiring.

    `extra` carries secrets that have their own setting (e.g. PICTOR_METRICS_TOKEN) by name.
    """

    def __init__(self, environ: Mapping[str, str], extra: Mapping[str, str | None] | None = None) -> None:
        self._versions: dict[str, list[SecretVersion]] = {}
        for name, value in (extra or {}).items():
            if value:
                self._add(name, value)
        for variable, value in environ.items():
            if not variable.startswith(ENV_PREFIX) or not value or variable.endswith("_PREVIOUS"):
                continue
            name = variable[len(ENV_PREFIX) :].lower()
            self._add(name, value)
            previous = environ.get(f"{variable}_PREVIOUS")
            if previous:
                self._add(name, previous)

    def _add(self, name: str, value: str) -> None:
        self._versions.setdefault(name, []).append(
            SecretVersion(name=name, version=version_of(value), value=value)
        )

    async def current(self, name: str) -> SecretVersion:
        versions = self._versions.get(name)
        if not versions:
            raise DomainError(ErrorCode.SECRET_MISSING, f"Secret {name!r} is not configured")
        return versions[0]

    async def versions(self, name: str) -> list[SecretVersion]:
        return list(self._versions.get(name, []))

    async def ping(self) -> None:
        return None
