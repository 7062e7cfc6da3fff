"""Creating, listing and revoking a user's API keys."""

from __future__ import annotations

import ipaddress
from datetime import datetime

import msgspec

from core.accounts import audit_trail
from core.accounts.api_keys import (
    ALL_SCOPES,
    DISPLAY_PREFIX_LENGTH,
    ApiKey,
    format_api_key,
    hash_secret,
    random_part_from,
)
from core.accounts.audit import AuditAction
from core.accounts.context import Caller
from core.accounts.principal import Principal
from core.accounts.users import has_control_characters
from core.errors import DomainError, ErrorCode, FieldError
from core.identifiers import is_id
from core.ports import Clock, Database, Ids

MAX_KEYS_PER_USER = 100
MAX_ALLOWED_IPS = 50


class NewApiKey(msgspec.Struct, frozen=True, kw_only=True):
    name: str
    scopes: list[str] | None = None  # None: every scope
    allowed_ips: list[str] | None = None
    expires_at: datetime | None = None


class CreatedApiKey(msgspec.Struct, frozen=True, kw_only=True):
    key: ApiKey
    secret: str  # the full key, shown once


def _invalid(field: str, message: str) -> DomainError:
    return DomainError(
        ErrorCode.VALIDATION_FAILED, "The request is invalid; see errors", errors=[FieldError(field, message)]
    )


def validate_new_key(request: NewApiKey, now: datetime) -> tuple[str, list[str], list[str]]:
    """Name, scopes and CIDR blocks as they will be stored; `validation_failed` naming the field."""
    name = request.name.strip()
    if not 1 <= len(name) <= 100:
        raise _invalid("name", "Between 1 and 100 characters")
    if has_control_characters(name):
        raise _invalid("name", "No control characters")
    known = {str(s) for s in ALL_SCOPES}
    scopes = sorted(set(request.scopes)) if request.scopes is not None else sorted(known)
    unknown = [s for s in scopes if s not in known]
    if unknown or not scopes:
        raise _invalid("scopes", f"Choose from {', '.join(sorted(known))}")
    blocks: list[str] = []
    for raw in request.allowed_ips or []:
        try:
            blocks.append(str(ipaddress.ip_network(raw.strip(), strict=False)))
        except ValueError:
            raise _invalid("allowed_ips", f"{raw!r} is not an IPv4 or IPv6 address or CIDR block") from None
    if len(blocks) > MAX_ALLOWED_IPS:
        raise _invalid("allowed_ips", f"At most {MAX_ALLOWED_IPS} entries")
    if request.expires_at is not None:
        if request.expires_at.tzinfo is None:
            raise _invalid("expires_at", "Give a time zone (RFC 3339)")
        if request.expires_at <= now:
            raise _invalid("expires_at", "Must be in the future")
    return name, scopes, blocks


class KeyManagement:
    def __init__(self, *, database: Database, ids: Ids, clock: Clock) -> None:
        self._database = database
        self._ids = ids
        self._clock = clock

    async def create(self, principal: Principal, request: NewApiKey, caller: Caller) -> CreatedApiKey:
        principal.require_session()  # keys are minted by people, never by other keys
        now = self._clock.now()
        name, scopes, blocks = validate_new_key(request, now)
        secret = format_api_key(random_part_from(self._ids.random_bytes(24)))
        key = ApiKey(
            id=self._ids.new_id(),
            user_id=principal.user_id,
            name=name,
            prefix=secret[:DISPLAY_PREFIX_LENGTH],
            key_hash=hash_secret(secret),
            scopes=scopes,
            allowed_ips=blocks,
            created_at=now,
            expires_at=request.expires_at,
        )
        async with self._database.unit_of_work() as uow:
            if len(await uow.api_keys.list_for_user(principal.user_id)) >= MAX_KEYS_PER_USER:
                raise DomainError(
                    ErrorCode.CONFLICT, f"At most {MAX_KEYS_PER_USER} live keys; revoke one first"
                )
            await uow.api_keys.add(key)
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                AuditAction.API_KEY_CREATED,
                actor_id=principal.user_id,
                target_type="api_key",
                target_id=key.id,
                name=name,
                scopes=scopes,
            )
            await uow.commit()
        return CreatedApiKey(key=key, secret=secret)

    async def list(self, principal: Principal) -> list[ApiKey]:
        principal.require_session()
        async with self._database.unit_of_work() as uow:
            return await uow.api_keys.list_for_user(principal.user_id)

    async def revoke(self, principal: Principal, key_id: str, caller: Caller) -> None:
        """Revoked keys fail from the next request on, in every process (they are looked up each time)."""
        principal.require_session()
        if not is_id(key_id):
            raise DomainError(ErrorCode.NOT_FOUND, "No such API key")
        async with self._database.unit_of_work() as uow:
            if not await uow.api_keys.revoke(principal.user_id, key_id, self._clock.now()):
                raise DomainError(ErrorCode.NOT_FOUND, "No such API key")
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                AuditAction.API_KEY_REVOKED,
                actor_id=principal.user_id,
                target_type="api_key",
                target_id=key_id,
            )
            await uow.commit()
