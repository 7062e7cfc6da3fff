"""The guard layer: a request's credential (bearer token or session cookie) → a Principal."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from core.accounts.authentication import Authentication, unauthenticated
from core.accounts.context import AccountPolicy, Caller
from core.accounts.principal import Principal
from core.ports import Clock, Database, Ids, PasswordHasher, RateLimiter, SessionStore
from entrypoints.http.request_context import CORRELATION_SCOPE_KEY
from entrypoints.http.svcs_plugin import SvcsContainer

SESSION_COOKIE = "pictor_session"
PRINCIPAL_SCOPE_KEY = "pictor.principal"


def caller_of(request: Request[Any, Any, Any]) -> Caller:
    return Caller(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        correlation_id=str(request.scope.get(CORRELATION_SCOPE_KEY) or "") or None,
    )


def credential_of(request: Request[Any, Any, Any]) -> str | None:
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("Use `Authorization: Bearer <session token or API key>`")
        return token.strip()
    return request.cookies.get(SESSION_COOKIE) or None


async def authentication_from(svcs_container: SvcsContainer) -> Authentication:
    database, sessions, hasher, limiter, ids, clock, policy = await svcs_container.aget(
        Database, SessionStore, PasswordHasher, RateLimiter, Ids, Clock, AccountPolicy
    )
    return Authentication(
        database=database,
        sessions=sessions,
        hasher=hasher,
        limiter=limiter,
        ids=ids,
        clock=clock,
        policy=policy,
    )


async def provide_principal(request: Request[Any, Any, Any], svcs_container: SvcsContainer) -> Principal:
    token = credential_of(request)
    if token is None:
        raise unauthenticated()
    authentication = await authentication_from(svcs_container)
    if token.startswith("pk_"):
        principal = await authentication.resolve_api_key(token, client_ip=caller_of(request).ip)
    else:
        principal, _ = await authentication.resolve_session(token)
    request.scope[PRINCIPAL_SCOPE_KEY] = principal  # type: ignore[literal-required]
    return principal


PRINCIPAL_DEPENDENCY = {"principal": Provide(provide_principal)}
BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]  # OpenAPI: routes that need a credential
# How handlers ask for the caller: `principal: CurrentPrincipal` (our own value: not re-validated).
CurrentPrincipal = SkipValidation[NamedDependency[Principal]]
