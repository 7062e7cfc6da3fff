"""The feature flag use cases: evaluating flags for a user, and administering them.

Reads go through the FeatureFlagCache (a snapshot of every flag in this process), so evaluating
flags costs no round trip; every change is committed with its audit record and then invalidates
the snapshot in every process.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import msgspec

from core.accounts import audit_trail
from core.accounts.audit import AuditAction
from core.accounts.context import Caller
from core.accounts.principal import Principal
from core.accounts.users import normalize_email
from core.errors import DomainError, ErrorCode
from core.flags.evaluation import Evaluation, EvaluationContext, EvaluationError, Reason, evaluate
from core.flags.model import Flag, FlagDefinition, FlagKind, FlagValue, define_flag, is_flag_key
from core.ports import Clock, Database, FeatureFlagCache, Ids


def context_of(principal: Principal) -> EvaluationContext:
    """The evaluation context of the caller: who they are, their plan, role and email."""
    return EvaluationContext(
        user_id=principal.user_id, plan=principal.plan, role=principal.role.value, email=principal.email
    )


class FeatureFlags:
    """Evaluating flags (API.md "Feature flags"), for the caller or for code that gates on them."""

    def __init__(self, *, database: Database, cache: FeatureFlagCache, clock: Clock) -> None:
        self._database = database
        self._cache = cache
        self._clock = clock

    async def flags(self) -> Mapping[str, Flag]:
        """Every flag by key, from this process's snapshot."""
        return await self._cache.get_or_load(self._load)

    async def evaluate_all(self, context: EvaluationContext) -> dict[str, Evaluation]:
        """Every flag's evaluation for the user, by key."""
        flags, now = await self.flags(), self._clock.now()
        return {key: evaluate(flag, context, now) for key, flag in sorted(flags.items())}

    async def evaluate(self, key: str, context: EvaluationContext, default: FlagValue) -> Evaluation:
        """One flag for the user. A flag that does not exist, or whose values are not of the type
        of `default`, resolves to `default` with reason ERROR, as an OpenFeature client would."""
        flag = (await self.flags()).get(key)
        if flag is None:
            return Evaluation(value=default, reason=Reason.ERROR, error_code=EvaluationError.FLAG_NOT_FOUND)
        if (flag.kind is FlagKind.BOOLEAN) != isinstance(default, bool):
            return Evaluation(value=default, reason=Reason.ERROR, error_code=EvaluationError.TYPE_MISMATCH)
        return evaluate(flag, context, self._clock.now())

    async def is_enabled(self, key: str, context: EvaluationContext, *, default: bool = False) -> bool:
        """A boolean flag's value for the user (`default` when there is no such boolean flag)."""
        return (await self.evaluate(key, context, default)).value is True

    async def _load(self) -> list[Flag]:
        async with self._database.unit_of_work() as uow:
            return await uow.feature_flags.list()


class FlagAdministration:
    """What administrators do with flags: list, read, create or replace, delete, each change
    audited. `admin` None is an operator at the command line (trusted as the database is)."""

    def __init__(self, *, database: Database, cache: FeatureFlagCache, ids: Ids, clock: Clock) -> None:
        self._database = database
        self._cache = cache
        self._ids = ids
        self._clock = clock

    async def list(self, admin: Principal | None) -> list[Flag]:
        """Every flag, by key, as stored (not from the snapshot: an administrator sees the truth)."""
        _require_admin(admin)
        async with self._database.unit_of_work() as uow:
            return await uow.feature_flags.list()

    async def get(self, admin: Principal | None, key: str) -> Flag:
        _require_admin(admin)
        if not is_flag_key(key):
            raise _not_found(key)
        async with self._database.unit_of_work() as uow:
            flag = await uow.feature_flags.get(key)
        if flag is None:
            raise _not_found(key)
        return flag

    async def put(
        self, admin: Principal | None, key: str, definition: FlagDefinition, caller: Caller
    ) -> tuple[Flag, bool]:
        """Create the flag or replace it whole; returns it and whether it was created.
        `validation_failed` lists every invalid field; nothing is stored then."""
        _require_admin(admin)
        now = self._clock.now()
        async with self._database.unit_of_work() as uow:
            before = await uow.feature_flags.get_for_update(key) if is_flag_key(key) else None
            flag = define_flag(key, definition, created_at=before.created_at if before else now, now=now)
            if before is not None and before.definition() == flag.definition():
                return before, False  # nothing changes: no write, no audit record, no invalidation
            created = await uow.feature_flags.put(flag)
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                AuditAction.FLAG_CREATED if created else AuditAction.FLAG_UPDATED,
                actor_id=None if admin is None else admin.user_id,
                target_type="feature_flag",
                target_id=key,
                **_changes(before, flag),
            )
            await uow.commit()
        await self._cache.invalidate()
        return flag, created

    async def evaluate_for(self, admin: Principal | None, key: str, email: str) -> Evaluation:
        """The stored flag evaluated now for the user with that address, as they would get it (for
        an administrator checking a rollout or a rule)."""
        _require_admin(admin)
        address = normalize_email(email)
        flag = await self.get(admin, key)
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get_by_email(address)
        if user is None:
            raise DomainError(ErrorCode.NOT_FOUND, f"No user with the address {email.strip()}")
        context = EvaluationContext(user_id=user.id, plan=user.plan, role=user.role.value, email=user.email)
        return evaluate(flag, context, self._clock.now())

    async def delete(self, admin: Principal | None, key: str, caller: Caller) -> None:
        """Remove the flag: from then on, code that asks for it gets its own default."""
        _require_admin(admin)
        if not is_flag_key(key):
            raise _not_found(key)
        async with self._database.unit_of_work() as uow:
            before = await uow.feature_flags.get_for_update(key)
            if before is None or not await uow.feature_flags.delete(key):
                raise _not_found(key)
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                AuditAction.FLAG_DELETED,
                actor_id=None if admin is None else admin.user_id,
                target_type="feature_flag",
                target_id=key,
                enabled=before.enabled,
            )
            await uow.commit()
        await self._cache.invalidate()


def _changes(before: Flag | None, after: Flag) -> dict[str, Any]:
    """What an audit record says about a change: each field that changed, before and after. Rules
    may hold long lists of values, so they are told by their count."""
    old: dict[str, Any] = {} if before is None else msgspec.to_builtins(before.definition())
    new: dict[str, Any] = msgspec.to_builtins(after.definition())
    changes: dict[str, Any] = {}
    for field, value in new.items():
        if old.get(field) != value:
            if field == "rules":
                changes[field] = {"before": len(old.get(field) or ()), "after": len(value)}
            else:
                changes[field] = {"before": old.get(field), "after": value}
    return {"changes": changes}


def _require_admin(admin: Principal | None) -> None:
    """Administration is for administrators in person (an admin's API key cannot), or for an
    operator at the command line (`admin` None)."""
    if admin is not None:
        admin.require_session()
        admin.require_admin()


def _not_found(key: str) -> DomainError:
    return DomainError(ErrorCode.NOT_FOUND, "No such feature flag", key=key)
