"""What administrators do with accounts, and the audit log."""

from __future__ import annotations

import msgspec

from core.accounts import audit_trail
from core.accounts.audit import AuditAction, AuditRecord
from core.accounts.context import Caller
from core.accounts.principal import Principal
from core.accounts.users import Role, User, UserStatus, has_control_characters
from core.billing.subscription_management import Subscriptions
from core.errors import DomainError, ErrorCode
from core.identifiers import is_id
from core.pagination import clamp_limit, decode_cursor
from core.ports import Clock, Database, Ids, SessionStore


class UserChanges(msgspec.Struct, frozen=True, kw_only=True):
    role: Role | None = None
    status: UserStatus | None = None
    plan: str | None = None  # a plan code of the catalog: applied at once, without a charge


class Administration:
    def __init__(
        self,
        *,
        database: Database,
        sessions: SessionStore,
        ids: Ids,
        clock: Clock,
        subscriptions: Subscriptions | None = None,
    ) -> None:
        self._database = database
        self._sessions = sessions
        self._ids = ids
        self._clock = clock
        self._subscriptions = subscriptions  # needed only to change plans

    async def list_users(
        self,
        admin: Principal,
        *,
        email: str | None = None,
        status: UserStatus | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[User], str | None]:
        _require_admin_session(admin)
        size = clamp_limit(limit)
        if email is not None and has_control_characters(email):
            raise DomainError(ErrorCode.VALIDATION_FAILED, "The email filter has control characters")
        async with self._database.unit_of_work() as uow:
            users = await uow.users.list(
                email=email.strip().lower() if email else None,
                status=status,
                after=decode_cursor(cursor),
                limit=size + 1,
            )
        return users[:size], users[size - 1].id if len(users) > size else None

    async def get_user(self, admin: Principal, user_id: str) -> User:
        _require_admin_session(admin)
        if not is_id(user_id):
            raise DomainError(ErrorCode.NOT_FOUND, "No such user")
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get(user_id)
        if user is None:
            raise DomainError(ErrorCode.NOT_FOUND, "No such user")
        return user

    async def change_user(self, admin: Principal, user_id: str, changes: UserChanges, caller: Caller) -> User:
        """Role, status and plan, together or not at all. Suspension ends the user's sessions and
        stops their keys at once (keys are checked against the user's status on every request); a
        role change ends the sessions too, so privileges never outlive the session that had them.
        A plan applies at once, without a charge (`Subscriptions.set_plan_within`)."""
        _require_admin_session(admin)
        if not is_id(user_id):
            raise DomainError(ErrorCode.NOT_FOUND, "No such user")
        plan_changed = False
        async with self._database.unit_of_work() as uow:
            if changes.plan is not None:
                if self._subscriptions is None:
                    raise RuntimeError("Administration needs Subscriptions to change plans")
                # The subscription's lock comes before the user's, as in every billing use case.
                change = await self._subscriptions.set_plan_within(
                    uow, user_id, changes.plan, caller, actor_id=admin.user_id
                )
                plan_changed = change.changed
            user = await uow.users.get_for_update(user_id)
            if user is None:
                raise DomainError(ErrorCode.NOT_FOUND, "No such user")
            demotes = changes.role is Role.USER or changes.status is UserStatus.SUSPENDED
            if user.id == admin.user_id and demotes:
                raise DomainError(
                    ErrorCode.INVALID_STATE, "Administrators cannot demote or suspend themselves"
                )
            updated = user
            for field, action in (("role", AuditAction.ROLE_CHANGED), ("status", AuditAction.STATUS_CHANGED)):
                before, after = getattr(user, field), getattr(changes, field)
                if after is None or after is before:
                    continue
                updated = msgspec.structs.replace(updated, **{field: after})
                await audit_trail.record(
                    uow,
                    self._ids,
                    self._clock,
                    caller,
                    action,
                    actor_id=admin.user_id,
                    target_type="user",
                    target_id=user.id,
                    before=before.value,
                    after=after.value,
                )
            if updated is user and not plan_changed:
                return user
            if updated is not user:
                updated = msgspec.structs.replace(updated, updated_at=self._clock.now())
                await uow.users.update(updated)
            await uow.commit()
        if plan_changed and self._subscriptions is not None:
            await self._subscriptions.invalidate(user_id)
        if updated is not user:
            await self._sessions.delete_all_for_user(user.id)
        return updated

    async def audit_log(
        self,
        admin: Principal,
        *,
        action: str | None = None,
        actor_id: str | None = None,
        target_id: str | None = None,
        cursor: str | None = None,
        limit: int | None = None,
    ) -> tuple[list[AuditRecord], str | None]:
        _require_admin_session(admin)
        size = clamp_limit(limit)
        if action is not None and action not in set(AuditAction):
            raise DomainError(
                ErrorCode.VALIDATION_FAILED,
                f"Unknown action; one of {', '.join(a.value for a in AuditAction)}",
            )
        for value in (actor_id, target_id):
            if value is not None and (has_control_characters(value) or len(value) > 100):
                raise DomainError(ErrorCode.VALIDATION_FAILED, "Filters are ids: no control characters")
        async with self._database.unit_of_work() as uow:
            records = await uow.audit.list(
                action=action,
                actor_id=actor_id,
                target_id=target_id,
                after=decode_cursor(cursor),
                limit=size + 1,
            )
        return records[:size], records[size - 1].id if len(records) > size else None


def _require_admin_session(admin: Principal) -> None:
    """Administration is for administrators in person: an admin's API key, whatever its scopes,
    cannot use it."""
    admin.require_session()
    admin.require_admin()
