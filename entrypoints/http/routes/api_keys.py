"""API keys (API.md): create (shown once), list, revoke."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, delete, get, post
from litestar.params import FromPath, JSONBody

from core.accounts.key_management import KeyManagement, NewApiKey
from core.errors import ErrorCode
from core.ports import Clock, Database, Ids
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal, caller_of
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.schemas import ApiKeyListOut, ApiKeyOut, CreateApiKeyBody, CreatedApiKeyOut
from entrypoints.http.svcs_plugin import SvcsContainer


async def key_management_from(svcs_container: SvcsContainer) -> KeyManagement:
    database, ids, clock = await svcs_container.aget(Database, Ids, Clock)
    return KeyManagement(database=database, ids=ids, clock=clock)


class ApiKeysController(Controller):
    path = "/v1/api-keys"
    tags = ["api keys"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @post("/", status_code=201, responses=problem_responses(ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN))
    async def create_key(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[CreateApiKeyBody],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> CreatedApiKeyOut:
        """A new key with every scope unless told otherwise. `key` is shown only in this answer."""
        principal.require_session()
        keys = await key_management_from(svcs_container)
        created = await keys.create(
            principal,
            NewApiKey(
                name=data.name, scopes=data.scopes, allowed_ips=data.allowed_ips, expires_at=data.expires_at
            ),
            caller_of(request),
        )
        key = created.key
        return CreatedApiKeyOut(
            id=key.id,
            name=key.name,
            key=created.secret,
            prefix=key.prefix,
            scopes=key.scopes,
            allowed_ips=key.allowed_ips,
            created_at=key.created_at,
            expires_at=key.expires_at,
        )

    @get("/", responses=problem_responses(ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN))
    async def list_keys(self, principal: CurrentPrincipal, svcs_container: SvcsContainer) -> ApiKeyListOut:
        principal.require_session()
        keys = await key_management_from(svcs_container)
        return ApiKeyListOut(data=[ApiKeyOut.of(k) for k in await keys.list(principal)])

    @delete(
        "/{key_id:str}",
        status_code=204,
        responses=problem_responses(ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND),
    )
    async def revoke_key(
        self,
        request: Request[Any, Any, Any],
        key_id: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> None:
        """The key stops working at once, in every process."""
        principal.require_session()
        keys = await key_management_from(svcs_container)
        await keys.revoke(principal, key_id, caller_of(request))
