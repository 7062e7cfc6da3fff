"""Webhook signing secrets over the ports: make, reveal, rotate (the rules are in signing_secrets)."""

from __future__ import annotations

from collections.abc import Sequence

from core.errors import DomainError, ErrorCode
from core.ports import Clock, Database, Ids, Secrets, UnitOfWork
from core.secrets import WEBHOOK_SECRET_KEY
from core.webhooks.signing_secrets import (
    SALT_BYTES,
    SecretOwner,
    WebhookSecretVersion,
    derive_secret,
    new_version,
    retire,
)


class WebhookSecretKeeper:
    """Derives secrets from the master key in the Secrets port, so the database never holds one."""

    def __init__(self, *, secrets: Secrets, ids: Ids, clock: Clock) -> None:
        self._secrets = secrets
        self._ids = ids
        self._clock = clock

    async def new_version(self, owner: SecretOwner, owner_id: str, user_id: str) -> WebhookSecretVersion:
        master = await self._secrets.current(WEBHOOK_SECRET_KEY)
        return new_version(
            id=self._ids.new_id(),
            owner=owner,
            owner_id=owner_id,
            user_id=user_id,
            key_version=master.version,
            salt=self._ids.random_bytes(SALT_BYTES),
            now=self._clock.now(),
        )

    async def reveal(self, version: WebhookSecretVersion) -> str:
        """The `whsec_…` secret of `version`; secret_missing when its master key version is gone."""
        for master in await self._secrets.versions(WEBHOOK_SECRET_KEY):
            if master.version == version.key_version:
                return derive_secret(master.value, version)
        raise DomainError(
            ErrorCode.SECRET_MISSING,
            f"The {WEBHOOK_SECRET_KEY} version a webhook secret was made with is no longer configured",
        )

    async def signing_secrets(self, versions: Sequence[WebhookSecretVersion]) -> list[str]:
        """The secrets of the live `versions` (the caller read them in its unit of work), newest
        first: two during a rotation's overlap. A version whose master key is gone is left out
        while another can sign; with none, secret_missing."""
        secrets: list[str] = []
        missing: DomainError | None = None
        for version in versions:
            try:
                secrets.append(await self.reveal(version))
            except DomainError as error:
                missing = error
        if not secrets:
            raise missing or DomainError(ErrorCode.SECRET_MISSING, "No webhook signing secret is live")
        return secrets

    async def rotate(
        self, uow: UnitOfWork, owner: SecretOwner, owner_id: str, user_id: str
    ) -> WebhookSecretVersion:
        """A new current version; the previous one keeps signing for the overlap. Runs in the
        caller's unit of work, which locks the current version so rotations take turns."""
        current = await uow.webhook_secrets.current_for_update(owner, owner_id)
        if current is not None:
            await uow.webhook_secrets.update(retire(current, self._clock.now()))
        fresh = await self.new_version(owner, owner_id, user_id)
        if not await uow.webhook_secrets.add(fresh):
            raise DomainError(ErrorCode.CONFLICT, "The secret was rotated at the same time; try again")
        return fresh

    async def account_secret(self, database: Database, user_id: str) -> WebhookSecretVersion:
        """The account's current secret for per-request webhooks, made on first use. Of two first
        uses at once, one version is stored and both return it."""
        async with database.unit_of_work() as uow:
            current = await self._current_account_secret(uow, user_id)
            if current is not None:
                return current
            fresh = await self.new_version(SecretOwner.ACCOUNT, user_id, user_id)
            stored = await uow.webhook_secrets.add(fresh)
            await uow.commit()
        if stored:
            return fresh
        async with database.unit_of_work() as uow:
            winner = await self._current_account_secret(uow, user_id)
        if winner is None:  # rotated away in between: rare enough to let the caller retry
            raise DomainError(ErrorCode.CONFLICT, "The account's webhook secret changed; try again")
        return winner

    async def _current_account_secret(self, uow: UnitOfWork, user_id: str) -> WebhookSecretVersion | None:
        versions = await uow.webhook_secrets.live(SecretOwner.ACCOUNT, user_id, self._clock.now())
        return next((v for v in versions if v.expires_at is None), None)
