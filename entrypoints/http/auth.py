"""The guard layer: a request's credential (bearer token or session cookie) → a Principal."""

from __future__ import annotations

from typing import Any

from litestar import Request
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation

from core.accounts.authentication import Authentication, unauthenticated
from core.accounts.context import AccountPolicy, Caller
from core.accounts.principal import Principal
from core.errors import DomainError, ErrorCode
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
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and not cookie.startswith("pk_"):  # the cookie carries sessions only, never API keys
        return cookie
    return None


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


async def require_json_bodies(request: Request[Any, Any, Any]) -> None:
    """Bodies must say they are JSON. Browsers send `text/plain` and form posts cross-site without
    asking first, so this is also what keeps the session cookie from being used for CSRF."""
    if request.method not in ("POST", "PUT", "PATCH", "DELETE"):
        return
    has_body = request.headers.get("content-length", "0") != "0" or "transfer-encoding" in request.headers
    if not has_body:
        return
    media_type = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise DomainError(
            ErrorCode.UNSUPPORTED_MEDIA_TYPE,
            "Send the body as application/json",
            content_type=media_type or None,
        )


PRINCIPAL_DEPENDENCY = {"principal": Provide(provide_principal)}
BEARER_SECURITY: list[dict[str, list[str]]] = [{"bearer": []}]  # OpenAPI: routes that need a credential
# How handlers ask for the caller: `principal: CurrentPrincipal` (our own value: not re-validated).
CurrentPrincipal = SkipValidation[NamedDependency[Principal]]
