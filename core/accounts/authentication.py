"""Logging in and out, and the sessions a person has open (credentials are resolved in credentials.py)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from weakref import WeakKeyDictionary

import msgspec

from core.accounts import audit_trail
from core.accounts.api_keys import hash_secret
from core.accounts.audit import AuditAction
from core.accounts.context import AccountPolicy, Caller
from core.accounts.passwords import normalize_password
from core.accounts.principal import CredentialKind, Principal
from core.accounts.sessions import Session, new_session
from core.accounts.users import User, normalize_email
from core.errors import DomainError, ErrorCode
from core.identifiers import is_id
from core.ports import Clock, Database, Ids, PasswordHasher, RateLimiter, SessionStore
from core.rate_limit import RateLimitDecision

API_KEY_TOUCH_INTERVAL = timedelta(minutes=1)
MAX_LOGIN_PASSWORD_LENGTH = 1024  # longer is never a valid password: refused without hashing
_DUMMY_HASHES: WeakKeyDictionary[PasswordHasher, str] = WeakKeyDictionary()


class LoginResult(msgspec.Struct, frozen=True, kw_only=True):
    token: str  # shown once; only its hash is stored
    session: Session
    user: User


def _too_many_attempts(decision: RateLimitDecision) -> DomainError:
    retry_after = max(1, int(decision.retry_after_seconds + 0.999))
    return DomainError(
        ErrorCode.TOO_MANY_ATTEMPTS,
        "Too many failed logins; try again later",
        headers={"Retry-After": str(retry_after)},
        retry_after_seconds=retry_after,
    )


class Authentication:
    def __init__(
        self,
        *,
        database: Database,
        sessions: SessionStore,
        hasher: PasswordHasher,
        limiter: RateLimiter,
        ids: Ids,
        clock: Clock,
        policy: AccountPolicy,
    ) -> None:
        self._database = database
        self._sessions = sessions
        self._hasher = hasher
        self._limiter = limiter
        self._ids = ids
        self._clock = clock
        self._policy = policy

    # --- logging in ------------------------------------------------------------------------

    async def login(self, *, email: str, password: str, caller: Caller) -> LoginResult:
        """Check the password, then open a new session (a new token: sessions rotate on login).

        Failures are counted per account and per client address; past the limits the answer is
        `too_many_attempts` whatever the password, and a `suspicious_activity` record is written.
        """
        try:
            email_normalized = normalize_email(email)
        except DomainError:
            raise DomainError(ErrorCode.INVALID_CREDENTIALS, "Wrong email or password") from None
        account_key = f"login:account:{hash_secret(email_normalized)[:32]}"
        ip_key = f"login:ip:{caller.ip or 'unknown'}"
        # Every attempt is counted before the password is checked, so parallel guesses cannot
        # outrun the limit; a successful login gives the account its budget back.
        account = await self._limiter.hit(account_key, self._policy.login_failures_per_account)
        by_ip = await self._limiter.hit(ip_key, self._policy.login_failures_per_ip)
        for decision in (account, by_ip):
            if not decision.allowed:
                raise _too_many_attempts(decision)

        async with self._database.unit_of_work() as uow:
            user = await uow.users.get_by_email(email_normalized)
        normalized = normalize_password(password) if len(password) <= MAX_LOGIN_PASSWORD_LENGTH else None
        if user is None or normalized is None:
            await self._hasher.verify(await self._dummy(), normalized or "")  # the same work either way
            verified = False
        else:
            verified = await self._hasher.verify(user.password_hash, normalized)

        if not verified or user is None or normalized is None or not user.is_active:
            # A suspended account answers like a wrong password: nothing about it is revealed.
            await self._login_failed(user, account, by_ip, caller, suspended=verified)
            raise DomainError(ErrorCode.INVALID_CREDENTIALS, "Wrong email or password")

        await self._limiter.reset(account_key)
        now = self._clock.now()
        needs_rehash = self._hasher.needs_rehash(user.password_hash)
        new_hash = await self._hasher.hash(normalized) if needs_rehash else None
        token = self._ids.token(32)
        session = new_session(
            session_id=self._ids.new_id(),
            user_id=user.id,
            token_hash=hash_secret(token),
            now=now,
            idle_timeout=self._policy.session_idle_timeout,
            absolute_lifetime=self._policy.session_absolute_lifetime,
            ip=caller.ip,
            user_agent=caller.user_agent,
        )
        await self._sessions.create(session)
        async with self._database.unit_of_work() as uow:
            if new_hash is not None:  # re-hashed with the current parameters, unless it changed since
                current = await uow.users.get_for_update(user.id)
                if current is not None and current.password_hash == user.password_hash:
                    user = msgspec.structs.replace(current, password_hash=new_hash, updated_at=now)
                    await uow.users.update(user)
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                AuditAction.LOGIN_SUCCEEDED,
                actor_id=user.id,
                target_type="session",
                target_id=session.id,
            )
            await uow.commit()
        return LoginResult(token=token, session=session, user=user)

    async def _login_failed(
        self,
        user: User | None,
        account: RateLimitDecision,
        by_ip: RateLimitDecision,
        caller: Caller,
        *,
        suspended: bool,
    ) -> None:
        async with self._database.unit_of_work() as uow:
            target: dict[str, Any] = {"target_type": "user", "target_id": user.id} if user else {}
            if suspended:
                target["reason"] = "account suspended"
            await audit_trail.record(
                uow, self._ids, self._clock, caller, AuditAction.LOGIN_FAILED, actor_id=None, **target
            )
            account_exhausted = not account.allowed or account.remaining == 0
            if account_exhausted or not by_ip.allowed or by_ip.remaining == 0:
                reason = "for this account" if account_exhausted else "from this address"
                await audit_trail.record(
                    uow,
                    self._ids,
                    self._clock,
                    caller,
                    AuditAction.SUSPICIOUS_ACTIVITY,
                    actor_id=None,
                    reason=f"repeated failed logins {reason}",
                    **target,
                )
            await uow.commit()

    async def _dummy(self) -> str:
        """A hash to verify against when there is no account, so both cost the same. Made once per
        hasher (use cases are built per request; a fresh hash each time would cost extra work
        exactly when the account does not exist)."""
        found = _DUMMY_HASHES.get(self._hasher)
        if found is None:
            found = await self._hasher.hash(self._ids.token(16))
            _DUMMY_HASHES[self._hasher] = found
        return found

    # --- sessions --------------------------------------------------------------------------

    async def logout(self, principal: Principal, caller: Caller) -> None:
        if principal.credential is not CredentialKind.SESSION:
            raise DomainError(ErrorCode.BAD_REQUEST, "Only a session can log out; revoke an API key instead")
        await self._sessions.delete(principal.user_id, principal.credential_id)
        await self._audit(principal, caller, AuditAction.LOGGED_OUT, principal.credential_id)

    async def logout_all(self, principal: Principal, caller: Caller) -> int:
        principal.require_session()
        ended = await self._sessions.delete_all_for_user(principal.user_id)
        await self._audit(principal, caller, AuditAction.ALL_SESSIONS_ENDED, None, ended=ended)
        return ended

    async def list_sessions(self, principal: Principal) -> list[Session]:
        principal.require_session()
        now = self._clock.now()
        return [s for s in await self._sessions.list_for_user(principal.user_id) if s.is_valid_at(now)]

    async def end_session(self, principal: Principal, session_id: str, caller: Caller) -> None:
        principal.require_session()
        if not is_id(session_id) or not await self._sessions.delete(principal.user_id, session_id):
            raise DomainError(ErrorCode.NOT_FOUND, "No such session")
        await self._audit(principal, caller, AuditAction.SESSION_ENDED, session_id)

    async def _audit(
        self,
        principal: Principal,
        caller: Caller,
        action: AuditAction,
        session_id: str | None,
        **details: object,
    ) -> None:
        async with self._database.unit_of_work() as uow:
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                action,
                actor_id=principal.user_id,
                target_type="session",
                target_id=session_id,
                **details,
            )
            await uow.commit()
