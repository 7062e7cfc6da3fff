"""Turning a bearer credential into a Principal, on every authenticated request.

This is the hot path. An API key's resolution (key and user) is cached per process under the
key's hash (PrincipalCache; read-through, one PostgreSQL round trip on a miss, none on a hit) and
tagged with the key's and the user's tags, so revoking the key or changing the user (role, status,
plan, profile) takes effect at once in every process. The checks that depend on time and on the
caller (revoked, expired, suspended, allowed addresses) run on every request against the cached
snapshot. Sessions live in the SessionStore (checked on every request: they expire and are ended
by logout); their user comes from the same cache.
"""

from __future__ import annotations

import ipaddress
from datetime import datetime, timedelta
from typing import Final

import msgspec

from core.accounts.api_keys import KEY_LENGTH, KEY_PREFIX, ApiKey, hash_secret, looks_like_api_key
from core.accounts.principal import SESSION_SCOPES, CredentialKind, Principal
from core.accounts.sessions import Session
from core.accounts.users import User
from core.cache_tags import api_key_tag, user_tag
from core.errors import DomainError, ErrorCode
from core.ports import Clock, Database, PrincipalCache, SessionStore

API_KEY_TOUCH_INTERVAL: Final = timedelta(minutes=1)
_MAX_TOUCH_RECORDS: Final = 100_000


def unauthenticated(detail: str = "A valid session token or API key is required") -> DomainError:
    return DomainError(ErrorCode.UNAUTHENTICATED, detail, headers={"WWW-Authenticate": "Bearer"})


class ApiKeyGrant(msgspec.Struct, frozen=True, kw_only=True):
    """What an existing API key's hash resolves to: the key (revoked or not) and its user."""

    key: ApiKey
    user: User


class CredentialResolver:
    """Built once per process; safe to share between requests."""

    def __init__(
        self,
        *,
        database: Database,
        sessions: SessionStore,
        principals: PrincipalCache,
        clock: Clock,
        ttl_seconds: float = 30.0,
    ) -> None:
        self._database = database
        self._sessions = sessions
        self._principals = principals
        self._clock = clock
        self._ttl = ttl_seconds
        self._touched: dict[str, datetime] = {}  # key id → when this process last recorded a use

    async def resolve_api_key(self, token: str, *, client_ip: str | None) -> Principal:
        if len(token) != KEY_LENGTH or not token.startswith(KEY_PREFIX):
            raise unauthenticated("The API key is malformed")
        key_hash = hash_secret(token)
        grant = await self._principals.get_or_load(
            f"api-key:{key_hash}", lambda: self._load_grant(token, key_hash), ttl_seconds=self._ttl
        )
        key, user = grant.key, grant.user
        now = self._clock.now()
        if key.revoked_at is not None:
            raise unauthenticated("The API key is not valid")
        if key.expires_at is not None and key.expires_at <= now:
            raise unauthenticated("The API key has expired")
        if not user.is_active:
            raise unauthenticated("The API key's account is suspended")
        if not ip_allowed(key, client_ip):
            raise unauthenticated("The API key may not be used from this address")
        await self._record_use(key, now)
        return Principal(
            user=user, scopes=frozenset(key.scopes), credential=CredentialKind.API_KEY, credential_id=key.id
        )

    async def resolve_session(self, token: str) -> tuple[Principal, Session]:
        now = self._clock.now()
        session = await self._sessions.get(hash_secret(token))
        if session is None or not session.is_valid_at(now):
            raise unauthenticated("The session has ended; log in again")
        user = await self._principals.get_or_load(
            f"user:{session.user_id}", lambda: self._load_user(session.user_id), ttl_seconds=self._ttl
        )
        if user is None or not user.is_active:
            raise unauthenticated("The session has ended; log in again")
        if session.needs_touch(now):
            await self._sessions.touch(session.token_hash, now)
        principal = Principal(
            user=user, scopes=SESSION_SCOPES, credential=CredentialKind.SESSION, credential_id=session.id
        )
        return principal, session

    async def _load_grant(self, token: str, key_hash: str) -> tuple[ApiKeyGrant, list[str]]:
        # The checksum is checked on a miss only: a hit means this very token passed it before.
        if not looks_like_api_key(token):  # no lookup for garbage (and nothing cached for it)
            raise unauthenticated("The API key is malformed")
        async with self._database.unit_of_work() as uow:
            key = await uow.api_keys.get_by_hash(key_hash)
            user = await uow.users.get(key.user_id) if key is not None else None
        if key is None or user is None:
            # Not cached: random keys with a valid checksum must not push real entries out.
            raise unauthenticated("The API key is not valid")
        return ApiKeyGrant(key=key, user=user), [api_key_tag(key.id), user_tag(key.user_id)]

    async def _load_user(self, user_id: str) -> tuple[User | None, list[str]]:
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get(user_id)
        return user, [user_tag(user_id)]

    async def _record_use(self, key: ApiKey, now: datetime) -> None:
        """`last_used_at`, to the minute: at most one write per key and minute per process, judged
        by what this process last wrote (the cached key's own field goes stale by design)."""
        last = self._touched.get(key.id, key.last_used_at)
        if last is not None and now - last < API_KEY_TOUCH_INTERVAL:
            return
        if len(self._touched) >= _MAX_TOUCH_RECORDS:
            self._touched.clear()
        self._touched[key.id] = now
        async with self._database.unit_of_work() as uow:
            await uow.api_keys.touch(key.id, now)
            await uow.commit()


def ip_allowed(key: ApiKey, client_ip: str | None) -> bool:
    if not key.allowed_ips:
        return True
    if client_ip is None:
        return False
    try:
        address = ipaddress.ip_address(client_ip)
    except ValueError:
        return False
    return any(address in ipaddress.ip_network(block, strict=False) for block in key.allowed_ips)
