"""Administration (role `admin`): users and the audit log."""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Controller, Request, get, patch
from litestar.params import FromPath, FromQuery, JSONBody

from core.accounts.administration import Administration, UserChanges
from core.accounts.users import Role, UserStatus
from core.errors import ErrorCode
from core.pagination import encode_cursor
from core.ports import Clock, Database, Ids, SessionStore
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal, caller_of
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.schemas import AuditListOut, AuditRecordOut, PageLimit, UserListOut, UserOut
from entrypoints.http.svcs_plugin import SvcsContainer
from entrypoints.use_cases import subscriptions_from

_ADMIN_PROBLEMS = (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN)


class AdminUserPatch(msgspec.Struct, kw_only=True):
    role: Role | None = None
    status: UserStatus | None = None
    plan: str | None = None  # a plan code (GET /v1/plans): applied at once, without a charge


async def administration_from(svcs_container: SvcsContainer) -> Administration:
    database, sessions, ids, clock = await svcs_container.aget(Database, SessionStore, Ids, Clock)
    return Administration(
        database=database,
        sessions=sessions,
        ids=ids,
        clock=clock,
        subscriptions=await subscriptions_from(svcs_container),
    )


def _next(last_id: str | None) -> str | None:
    return encode_cursor(last_id) if last_id is not None else None


class AdminController(Controller):
    path = "/admin"
    tags = ["administration"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @get("/users", responses=problem_responses(*_ADMIN_PROBLEMS, ErrorCode.INVALID_CURSOR))
    async def list_users(
        self,
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
        email: FromQuery[str | None] = None,
        status: FromQuery[UserStatus | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = None,
    ) -> UserListOut:
        """Newest first; `email` matches part of the address."""
        admin = await administration_from(svcs_container)
        users, last_id = await admin.list_users(
            principal, email=email, status=status, cursor=cursor, limit=limit
        )
        return UserListOut(data=[UserOut.of(u) for u in users], next_cursor=_next(last_id))

    @get("/users/{user_id:str}", responses=problem_responses(*_ADMIN_PROBLEMS, ErrorCode.NOT_FOUND))
    async def get_user(
        self, user_id: FromPath[str], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> UserOut:
        admin = await administration_from(svcs_container)
        return UserOut.of(await admin.get_user(principal, user_id))

    @patch(
        "/users/{user_id:str}",
        responses=problem_responses(
            *_ADMIN_PROBLEMS, ErrorCode.NOT_FOUND, ErrorCode.INVALID_STATE, ErrorCode.UNKNOWN_PLAN
        ),
    )
    async def patch_user(
        self,
        request: Request[Any, Any, Any],
        user_id: FromPath[str],
        data: JSONBody[AdminUserPatch],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> UserOut:
        """`role`, `status` and `plan`, all or nothing. Suspending ends the user's sessions and stops
        their keys at once; a plan applies at once, without a charge."""
        admin = await administration_from(svcs_container)
        changes = UserChanges(role=data.role, status=data.status, plan=data.plan)
        return UserOut.of(await admin.change_user(principal, user_id, changes, caller_of(request)))

    @get("/audit", responses=problem_responses(*_ADMIN_PROBLEMS, ErrorCode.INVALID_CURSOR))
    async def audit(
        self,
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
        action: FromQuery[str | None] = None,
        actor_id: FromQuery[str | None] = None,
        target_id: FromQuery[str | None] = None,
        cursor: FromQuery[str | None] = None,
        limit: PageLimit = None,
    ) -> AuditListOut:
        """Security events, newest first."""
        admin = await administration_from(svcs_container)
        records, last_id = await admin.audit_log(
            principal, action=action, actor_id=actor_id, target_id=target_id, cursor=cursor, limit=limit
        )
        return AuditListOut(data=[AuditRecordOut.of(r) for r in records], next_cursor=_next(last_id))
