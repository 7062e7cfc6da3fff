"""The guard layer: a request's credential (bearer token or session cookie) → a Principal."""

from __future__ import annotations

import logging
from typing import Any

import svcs
from litestar import Litestar, Request
from litestar.di import NamedDependency, Provide
from litestar.params import SkipValidation
from litestar.types import Scope
from prometheus_client import Counter

from core.accounts.authentication import Authentication
from core.accounts.context import AccountPolicy, Caller
from core.accounts.credentials import CredentialResolver, unauthenticated
from core.accounts.principal import Principal
from core.billing.plans import PlanCatalog
from core.errors import DomainError, ErrorCode
from core.ports import Clock, Database, Ids, PasswordHasher, RateLimiter, SessionStore
from entrypoints.business_metrics import API_RATE_LIMIT, observe_rate_limit_rejection
from entrypoints.http.rate_limit_headers import rate_limit_headers, rate_limit_policy, retry_after_seconds
from entrypoints.http.request_context import CORRELATION_SCOPE_KEY, RATE_LIMIT_HEADERS_SCOPE_KEY
from entrypoints.http.svcs_plugin import SvcsContainer, registry_of

SESSION_COOKIE = "pictor_session"
PRINCIPAL_SCOPE_KEY = "pictor.principal"
_GUARD_STATE_KEY = "pictor_guard"
_log = logging.getLogger("pictor.auth")
LIMITER_FAILURES = Counter(
    "pictor_rate_limiter_failures_total", "Requests let through because the rate limiter did not answer"
)


def caller_of(request: Request[Any, Any, Any]) -> Caller:
    return Caller(
        ip=request.client.host if request.client else None,
        user_agent=request.headers.get("user-agent"),
        correlation_id=str(request.scope.get(CORRELATION_SCOPE_KEY) or "") or None,
    )


def credential_of(scope: Scope) -> str | None:
    """The bearer token, else the session cookie; None when the request carries neither."""
    header = None
    for name, value in scope["headers"]:  # the raw list: cheaper than building Headers
        if name == b"authorization":
            header = value.decode("latin-1")
            break
    if header is not None:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise unauthenticated("Use `Authorization: Bearer <session token or API key>`")
        return token.strip()
    cookie = Request(scope).cookies.get(SESSION_COOKIE)
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


class Guard:
    """What every authenticated request needs, fetched from the registry once per app: resolving
    the credential and charging the caller's plan rate limit (DESIGN.md §11: one round trip)."""

    def __init__(self, resolver: CredentialResolver, limiter: RateLimiter, catalog: PlanCatalog) -> None:
        self.resolver = resolver
        self.limiter = limiter
        self.catalog = catalog
        self._limits = {plan.code: plan.rate_limit.as_rate_limit() for plan in catalog}
        self._policies = {plan.code: rate_limit_policy(plan.rate_limit) for plan in catalog}

    @classmethod
    async def of(cls, app: Litestar) -> Guard:
        guard: Guard | None = app.state.get(_GUARD_STATE_KEY)
        if guard is None:
            async with svcs.Container(registry_of(app)) as container:
                resolver, limiter, catalog = await container.aget(
                    CredentialResolver, RateLimiter, PlanCatalog
                )
            guard = app.state[_GUARD_STATE_KEY] = cls(resolver, limiter, catalog)
        return guard

    async def admit(self, scope: Scope, principal: Principal) -> None:
        """Count the request against the plan's limit (per API key or session, shared by every
        process through the limiter's store); raise `rate_limited` past it. A limiter outage lets
        requests through (counted and logged): it must not take the API down with it."""
        plan = self.catalog.effective(principal.plan)
        limit = self._limits[plan.code]  # `effective` always answers a plan of the catalog
        try:
            decision = await self.limiter.hit(f"api:{principal.credential_id}", limit)
        except Exception as error:
            LIMITER_FAILURES.inc()
            _log.warning("rate limiter unavailable, request let through: %r", error)
            return
        headers = rate_limit_headers(self._policies[plan.code], decision)
        scope[RATE_LIMIT_HEADERS_SCOPE_KEY] = headers  # type: ignore[literal-required]
        if not decision.allowed:
            observe_rate_limit_rejection(API_RATE_LIMIT)
            raise DomainError(
                ErrorCode.RATE_LIMITED,
                f"The {plan.name} plan allows {plan.rate_limit.requests} requests per "
                f"{plan.rate_limit.per_seconds} s; retry later",
                headers={name.decode(): value.decode() for name, value in headers},
                retry_after_seconds=retry_after_seconds(decision),
            )


async def provide_principal(scope: Scope) -> Principal:
    # Asks for the ASGI scope, not a Request: Litestar builds and validates far less for it, and
    # this runs on every authenticated request.
    token = credential_of(scope)
    if token is None:
        raise unauthenticated()
    guard = await Guard.of(scope["app"])
    if token.startswith("pk_"):
        client = scope.get("client")
        principal = await guard.resolver.resolve_api_key(token, client_ip=client[0] if client else None)
    else:
        principal, _ = await guard.resolver.resolve_session(token)
    scope[PRINCIPAL_SCOPE_KEY] = principal  # type: ignore[literal-required]
    await guard.admit(scope, principal)
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
    # Uploads are multipart; only with an Authorization header, which a cross-site form cannot set.
    is_upload = request.url.path == "/v1/uploads" and "authorization" in request.headers
    if media_type == "multipart/form-data" and is_upload:
        return
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
