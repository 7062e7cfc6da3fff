"""Feature flags: the caller's evaluated flags (API.md "Feature flags") and their administration
(role `admin`, API.md "Administration")."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, Response, delete, get, put
from litestar.params import FromPath, JSONBody

from core.errors import ErrorCode
from core.flags.model import Flag, FlagDefinition, FlagValue, Rule, Variant
from core.flags.service import context_of
from core.ports import Clock
from entrypoints.feature_flags import feature_flags_from, flag_administration_from
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal, caller_of
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.svcs_plugin import SvcsContainer

_ADMIN_PROBLEMS = (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN)


class FlagValuesOut(msgspec.Struct, kw_only=True):
    data: dict[str, FlagValue]  # by key: true/false, or the name of the caller's variant


class FlagOut(msgspec.Struct, kw_only=True):
    key: str
    description: str
    kind: str  # boolean or variant
    enabled: bool
    default: FlagValue
    rules: list[Rule]
    rollout: int
    variants: list[Variant]
    expires_at: datetime | None
    stale: bool  # past `expires_at`: it serves its default to everyone; remove it from the code
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, flag: Flag, now: datetime) -> FlagOut:
        return cls(
            key=flag.key,
            description=flag.description,
            kind=flag.kind.value,
            enabled=flag.enabled,
            default=flag.default,
            rules=list(flag.rules),
            rollout=flag.rollout,
            variants=list(flag.variants),
            expires_at=flag.expires_at,
            stale=flag.is_stale(now),
            created_at=flag.created_at,
            updated_at=flag.updated_at,
        )


class FlagListOut(msgspec.Struct, kw_only=True):
    data: list[FlagOut]


@get(
    "/v1/flags",
    tags=["feature flags"],
    dependencies=PRINCIPAL_DEPENDENCY,
    security=BEARER_SECURITY,
    responses=problem_responses(ErrorCode.UNAUTHENTICATED),
)
async def get_flags(principal: CurrentPrincipal, svcs_container: SvcsContainer) -> FlagValuesOut:
    """Every flag evaluated for the caller: `true`/`false`, or the name of the caller's variant."""
    flags = await feature_flags_from(svcs_container)
    evaluations = await flags.evaluate_all(context_of(principal))
    return FlagValuesOut(data={key: evaluation.value for key, evaluation in evaluations.items()})


class AdminFlagsController(Controller):
    path = "/admin/flags"
    tags = ["administration"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @get("/", responses=problem_responses(*_ADMIN_PROBLEMS))
    async def list_flags(self, principal: CurrentPrincipal, svcs_container: SvcsContainer) -> FlagListOut:
        """Every flag by key, as stored; `stale` marks those past their expiry."""
        admin = await flag_administration_from(svcs_container)
        flags = await admin.list(principal)
        now = (await svcs_container.aget(Clock)).now()
        return FlagListOut(data=[FlagOut.of(flag, now) for flag in flags])

    @get("/{key:str}", responses=problem_responses(*_ADMIN_PROBLEMS, ErrorCode.NOT_FOUND))
    async def get_flag(
        self, key: FromPath[str], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> FlagOut:
        admin = await flag_administration_from(svcs_container)
        flag = await admin.get(principal, key)
        return FlagOut.of(flag, (await svcs_container.aget(Clock)).now())

    @put("/{key:str}", responses=problem_responses(*_ADMIN_PROBLEMS))
    async def put_flag(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        data: JSONBody[FlagDefinition],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> Response[FlagOut]:
        """Create the flag (201) or replace it whole (200); audited. Every process serves the
        change within about a second."""
        admin = await flag_administration_from(svcs_container)
        flag, created = await admin.put(principal, key, data, caller_of(request))
        now = (await svcs_container.aget(Clock)).now()
        return Response(FlagOut.of(flag, now), status_code=201 if created else 200)

    @delete("/{key:str}", status_code=204, responses=problem_responses(*_ADMIN_PROBLEMS, ErrorCode.NOT_FOUND))
    async def delete_flag(
        self,
        request: Request[Any, Any, Any],
        key: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> None:
        """Remove the flag (audited): code that asks for it gets its own default."""
        admin = await flag_administration_from(svcs_container)
        await admin.delete(principal, key, caller_of(request))
