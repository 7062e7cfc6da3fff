"""Writing audit records from use cases: one helper, so every record has the same facts."""

from __future__ import annotations

from typing import Any

from core.accounts.audit import AuditAction, AuditRecord
from core.accounts.context import Caller
from core.ports import Clock, Ids, UnitOfWork


async def record(
    uow: UnitOfWork,
    ids: Ids,
    clock: Clock,
    caller: Caller,
    action: AuditAction,
    *,
    actor_id: str | None,
    target_type: str | None = None,
    target_id: str | None = None,
    **details: Any,
) -> None:
    await uow.audit.add(
        AuditRecord(
            id=ids.new_id(),
            occurred_at=clock.now(),
            action=action,
            actor_id=actor_id,
            target_type=target_type,
            target_id=target_id,
            ip=caller.ip,
            correlation_id=caller.correlation_id,
            details=details,
        )
    )
