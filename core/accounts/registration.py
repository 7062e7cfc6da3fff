"""Signing up, verifying the email address, changing and resetting the password, the profile."""

from __future__ import annotations

from collections.abc import Container
from datetime import datetime

import msgspec

from core.accounts import audit_trail
from core.accounts.api_keys import hash_secret
from core.accounts.audit import AuditAction
from core.accounts.context import AccountPolicy, Caller
from core.accounts.emails import password_reset_email, verification_email
from core.accounts.passwords import check_password, normalize_password
from core.accounts.principal import CredentialKind, Principal
from core.accounts.tokens import TOKEN_LIFETIMES, OneTimeToken, TokenPurpose
from core.accounts.users import Role, User, UserStatus, clean_display_name, normalize_email
from core.billing.subscriptions import start_subscription
from core.errors import DomainError, ErrorCode, FieldError
from core.jobs import EMAIL, JobSpec
from core.ports import Clock, Database, Ids, JobQueue, Mailer, PasswordHasher, SessionStore, UnitOfWork

# Job functions (the worker maps these names to `EmailJobs` methods).
SEND_VERIFICATION_EMAIL = "send_verification_email"
SEND_PASSWORD_RESET_EMAIL = "send_password_reset_email"


class ProfileChanges(msgspec.Struct, frozen=True, kw_only=True):
    display_name: str | None = None
    password: str | None = None
    current_password: str | None = None


class Registration:
    def __init__(
        self,
        *,
        database: Database,
        sessions: SessionStore,
        hasher: PasswordHasher,
        blocklist: Container[str],
        jobs: JobQueue,
        ids: Ids,
        clock: Clock,
        policy: AccountPolicy,
        default_plan: str = "free",
    ) -> None:
        self._database = database
        self._sessions = sessions
        self._hasher = hasher
        self._blocklist = blocklist
        self._jobs = jobs
        self._ids = ids
        self._clock = clock
        self._policy = policy
        self._default_plan = default_plan  # the plan catalog's default: every new user starts there

    async def register(
        self,
        *,
        email: str,
        password: str,
        display_name: str | None,
        caller: Caller,
        role: Role = Role.USER,
        email_verified: bool = False,
    ) -> User:
        """A new active user with a subscription to the default (free) plan, in one transaction; a
        verification email follows (unless verified)."""
        email_normalized = normalize_email(email)
        name = clean_display_name(display_name)
        accepted = check_password(
            password,
            email=email_normalized,
            blocklist=self._blocklist,
            min_length=self._policy.password_min_length,
        )
        now = self._clock.now()
        user = User(
            id=self._ids.new_id(),
            email=email.strip(),
            email_normalized=email_normalized,
            display_name=name,
            role=role,
            status=UserStatus.ACTIVE,
            email_verified=email_verified,
            password_hash=await self._hasher.hash(accepted),
            plan=self._default_plan,
            created_at=now,
            updated_at=now,
        )
        async with self._database.unit_of_work() as uow:
            await uow.users.add(user)  # email_taken when the address is registered already
            await uow.subscriptions.add(start_subscription(user.id, user.plan, now))
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                AuditAction.REGISTERED,
                actor_id=user.id,
                target_type="user",
                target_id=user.id,
                role=role.value,
            )
            await uow.commit()
        if not email_verified:
            await self._jobs.enqueue(
                JobSpec(
                    queue=EMAIL,
                    function=SEND_VERIFICATION_EMAIL,
                    kwargs={"user_id": user.id},
                    key=f"verify-email:{user.id}",
                    attempts=5,
                    retry_delay_seconds=5.0,
                    correlation_id=caller.correlation_id,
                )
            )
        return user

    async def verify_email(self, *, token: str, caller: Caller) -> None:
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            used = await uow.tokens.consume(hash_secret(token), TokenPurpose.VERIFY_EMAIL, now)
            user = await uow.users.get_for_update(used.user_id) if used is not None else None
            if used is None or user is None:
                raise DomainError(ErrorCode.INVALID_STATE, "The verification link is invalid or has expired")
            if not user.email_verified:
                await uow.users.update(msgspec.structs.replace(user, email_verified=True, updated_at=now))
                await audit_trail.record(
                    uow,
                    self._ids,
                    self._clock,
                    caller,
                    AuditAction.EMAIL_VERIFIED,
                    actor_id=user.id,
                    target_type="user",
                    target_id=user.id,
                )
            await uow.commit()

    async def request_password_reset(self, *, email: str, caller: Caller) -> None:
        """Queue a reset email. The same work happens whether or not the account exists (the job
        looks the address up), so neither the answer nor its timing reveals accounts."""
        try:
            email_normalized = normalize_email(email)
        except DomainError:
            return  # not an address: nothing to send, same answer
        await self._jobs.enqueue(
            JobSpec(
                queue=EMAIL,
                function=SEND_PASSWORD_RESET_EMAIL,
                kwargs={"email": email_normalized},
                key=f"reset-password:{hash_secret(email_normalized)[:32]}",
                attempts=5,
                retry_delay_seconds=5.0,
                correlation_id=caller.correlation_id,
            )
        )

    async def reset_password(self, *, token: str, password: str, caller: Caller) -> None:
        """Set a new password from a reset link; every session of the user ends."""
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            used = await uow.tokens.consume(hash_secret(token), TokenPurpose.RESET_PASSWORD, now)
            user = await uow.users.get_for_update(used.user_id) if used is not None else None
            if used is None or user is None:
                raise DomainError(ErrorCode.INVALID_STATE, "The reset link is invalid or has expired")
            accepted = check_password(
                password,
                email=user.email_normalized,
                blocklist=self._blocklist,
                min_length=self._policy.password_min_length,
            )
            changed = msgspec.structs.replace(
                user, password_hash=await self._hasher.hash(accepted), email_verified=True, updated_at=now
            )  # the link reached the mailbox: the address is proven too
            await uow.users.update(changed)
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                AuditAction.PASSWORD_RESET,
                actor_id=user.id,
                target_type="user",
                target_id=user.id,
            )
            await uow.commit()
        await self._sessions.delete_all_for_user(user.id)

    async def get_profile(self, principal: Principal) -> User:
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get(principal.user_id)
        if user is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No such user")
        return user

    async def update_profile(self, principal: Principal, changes: ProfileChanges, caller: Caller) -> User:
        """Display name; password only with the current one, and then the user's other sessions end."""
        principal.require_session()  # the account is changed by its owner in person, not by a key
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get_for_update(principal.user_id)
            if user is None:
                raise DomainError(ErrorCode.NOT_FOUND, "No such user")
            updated = user
            if changes.display_name is not None:
                updated = msgspec.structs.replace(
                    updated, display_name=clean_display_name(changes.display_name)
                )
            if changes.password is not None:
                updated = await self._new_password(uow, user, changes, caller)
            if updated is user:
                return user
            updated = msgspec.structs.replace(updated, updated_at=now)
            await uow.users.update(updated)
            if changes.display_name is not None:
                await audit_trail.record(
                    uow,
                    self._ids,
                    self._clock,
                    caller,
                    AuditAction.PROFILE_UPDATED,
                    actor_id=user.id,
                    target_type="user",
                    target_id=user.id,
                )
            await uow.commit()
        if changes.password is not None:
            await self._sessions.delete_all_for_user(user.id, except_session_id=_session_id(principal))
        return updated

    async def _new_password(
        self, uow: UnitOfWork, user: User, changes: ProfileChanges, caller: Caller
    ) -> User:
        if changes.current_password is None or not await self._hasher.verify(
            user.password_hash, normalize_password(changes.current_password)
        ):
            raise DomainError(  # 422, not 401: the session is fine, the field is not
                ErrorCode.VALIDATION_FAILED,
                "The current password is required to change it, and must be right",
                errors=[FieldError("current_password", "Wrong or missing current password", "invalid")],
            )
        assert changes.password is not None
        accepted = check_password(
            changes.password,
            email=user.email_normalized,
            blocklist=self._blocklist,
            min_length=self._policy.password_min_length,
        )
        await audit_trail.record(
            uow,
            self._ids,
            self._clock,
            caller,
            AuditAction.PASSWORD_CHANGED,
            actor_id=user.id,
            target_type="user",
            target_id=user.id,
        )
        return msgspec.structs.replace(user, password_hash=await self._hasher.hash(accepted))


def _session_id(principal: Principal) -> str | None:
    return principal.credential_id if principal.credential is CredentialKind.SESSION else None


class EmailJobs:
    """The jobs behind account emails: they make the single-use token and send the message.

    The token is created here, inside the job, so it never travels through the queue.
    """

    def __init__(self, *, database: Database, mailer: Mailer, ids: Ids, clock: Clock, app_url: str) -> None:
        self._database = database
        self._mailer = mailer
        self._ids = ids
        self._clock = clock
        self._app_url = app_url.rstrip("/")

    async def send_verification_email(self, user_id: str) -> bool:
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get(user_id)
            if user is None or user.email_verified:
                return False
            token = await self._new_token(uow, user.id, TokenPurpose.VERIFY_EMAIL)
            await uow.commit()
        link = f"{self._app_url}/verify-email?token={token}"
        await self._mailer.send(verification_email(user.email, user.display_name, link))
        return True

    async def send_password_reset_email(self, email: str) -> bool:
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get_by_email(email)
            if user is None or not user.is_active:
                return False
            token = await self._new_token(uow, user.id, TokenPurpose.RESET_PASSWORD)
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                Caller(),
                AuditAction.PASSWORD_RESET_REQUESTED,
                actor_id=None,
                target_type="user",
                target_id=user.id,
            )
            await uow.commit()
        lifetime = TOKEN_LIFETIMES[TokenPurpose.RESET_PASSWORD]
        link = f"{self._app_url}/reset-password?token={token}"
        message = password_reset_email(
            user.email, user.display_name, link, int(lifetime.total_seconds() // 60)
        )
        await self._mailer.send(message)
        return True

    async def _new_token(self, uow: UnitOfWork, user_id: str, purpose: TokenPurpose) -> str:
        now: datetime = self._clock.now()
        await uow.tokens.revoke_for_user(user_id, purpose, now)  # only the newest link works
        token = self._ids.token(32)
        await uow.tokens.add(
            OneTimeToken(
                token_hash=hash_secret(token),
                purpose=purpose,
                user_id=user_id,
                created_at=now,
                expires_at=now + TOKEN_LIFETIMES[purpose],
            )
        )
        return token
