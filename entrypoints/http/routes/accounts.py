"""Accounts and sessions (API.md): register, log in and out, sessions, email verification,
password reset, and the caller's own profile. HTTP ↔ use case only."""

from __future__ import annotations

from typing import Any

from litestar import Controller, Request, Response, delete, get, patch, post
from litestar.datastructures import Cookie
from litestar.params import FromPath, JSONBody

from core.accounts.api_keys import Scope
from core.accounts.authentication import Authentication
from core.accounts.principal import CredentialKind
from core.accounts.registration import ProfileChanges
from core.errors import ErrorCode
from entrypoints.business_metrics import observe_registration, observing_login
from entrypoints.http.auth import (
    BEARER_SECURITY,
    PRINCIPAL_DEPENDENCY,
    SESSION_COOKIE,
    CurrentPrincipal,
    authentication_from,
    caller_of,
)
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.schemas import (
    ForgotPasswordBody,
    LoginBody,
    LoginOut,
    RegisterBody,
    ResetPasswordBody,
    SessionListOut,
    SessionOut,
    SessionSummary,
    TokenBody,
    UpdateMeBody,
    UserOut,
)
from entrypoints.http.svcs_plugin import SvcsContainer
from entrypoints.settings import Settings
from entrypoints.use_cases import registration_from


class AuthController(Controller):
    path = "/v1/auth"
    tags = ["accounts"]  # noqa: RUF012

    @post(
        "/register",
        status_code=201,
        responses=problem_responses(ErrorCode.EMAIL_TAKEN, ErrorCode.WEAK_PASSWORD),
    )
    async def register(
        self, request: Request[Any, Any, Any], data: JSONBody[RegisterBody], svcs_container: SvcsContainer
    ) -> UserOut:
        """Create an account; a verification email follows."""
        registration = await registration_from(svcs_container)
        user = await registration.register(
            email=data.email,
            password=data.password,
            display_name=data.display_name,
            caller=caller_of(request),
        )
        observe_registration()
        return UserOut.of(user)

    @post(
        "/login",
        status_code=200,
        responses=problem_responses(
            ErrorCode.INVALID_CREDENTIALS, ErrorCode.TOO_MANY_ATTEMPTS, ErrorCode.FORBIDDEN
        ),
    )
    async def login(
        self, request: Request[Any, Any, Any], data: JSONBody[LoginBody], svcs_container: SvcsContainer
    ) -> Response[LoginOut]:
        """A new session: its token is in the body (for programs) and in an HttpOnly cookie (browsers)."""
        authentication = await authentication_from(svcs_container)
        settings = await svcs_container.aget(Settings)
        with observing_login():
            result = await authentication.login(
                email=data.email, password=data.password, caller=caller_of(request)
            )
        body = LoginOut(
            token=result.token,
            session=SessionSummary(
                id=result.session.id,
                created_at=result.session.created_at,
                expires_at=result.session.effective_expires_at(),
            ),
            user=UserOut.of(result.user),
        )
        cookie = Cookie(
            key=SESSION_COOKIE,
            value=result.token,
            httponly=True,
            secure=settings.session_cookie_is_secure,
            samesite="lax",
            path="/",
            max_age=int((result.session.expires_at - result.session.created_at).total_seconds()),
        )
        return Response(body, cookies=[cookie])

    @post(
        "/logout",
        status_code=204,
        dependencies=PRINCIPAL_DEPENDENCY,
        security=BEARER_SECURITY,
        responses=problem_responses(ErrorCode.UNAUTHENTICATED),
    )
    async def logout(
        self, request: Request[Any, Any, Any], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> Response[None]:
        """End the current session."""
        authentication = await authentication_from(svcs_container)
        await authentication.logout(principal, caller_of(request))
        return _without_session_cookie()

    @post(
        "/logout-all",
        status_code=204,
        dependencies=PRINCIPAL_DEPENDENCY,
        security=BEARER_SECURITY,
        responses=problem_responses(ErrorCode.UNAUTHENTICATED),
    )
    async def logout_all(
        self, request: Request[Any, Any, Any], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> Response[None]:
        """End every session of the caller."""
        authentication = await authentication_from(svcs_container)
        await authentication.logout_all(principal, caller_of(request))
        return _without_session_cookie()

    @get(
        "/sessions",
        dependencies=PRINCIPAL_DEPENDENCY,
        security=BEARER_SECURITY,
        responses=problem_responses(ErrorCode.UNAUTHENTICATED),
    )
    async def sessions(self, principal: CurrentPrincipal, svcs_container: SvcsContainer) -> SessionListOut:
        authentication: Authentication = await authentication_from(svcs_container)
        current = principal.credential_id if principal.credential is CredentialKind.SESSION else None
        sessions = await authentication.list_sessions(principal)
        return SessionListOut(data=[SessionOut.of(s, current) for s in sessions])

    @delete(
        "/sessions/{session_id:str}",
        status_code=204,
        dependencies=PRINCIPAL_DEPENDENCY,
        security=BEARER_SECURITY,
        responses=problem_responses(ErrorCode.UNAUTHENTICATED, ErrorCode.NOT_FOUND),
    )
    async def end_session(
        self,
        request: Request[Any, Any, Any],
        session_id: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> None:
        authentication = await authentication_from(svcs_container)
        await authentication.end_session(principal, session_id, caller_of(request))

    @post("/verify-email", status_code=204, responses=problem_responses(ErrorCode.INVALID_STATE))
    async def verify_email(
        self, request: Request[Any, Any, Any], data: JSONBody[TokenBody], svcs_container: SvcsContainer
    ) -> None:
        """Confirm the address with the token from the verification email."""
        registration = await registration_from(svcs_container)
        await registration.verify_email(token=data.token, caller=caller_of(request))

    @post("/password/forgot", status_code=202, responses=problem_responses())
    async def forgot_password(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ForgotPasswordBody],
        svcs_container: SvcsContainer,
    ) -> Response[bytes]:
        """Always 202: whether an account exists is never revealed."""
        registration = await registration_from(svcs_container)
        await registration.request_password_reset(email=data.email, caller=caller_of(request))
        return Response(b"", status_code=202)

    @post(
        "/password/reset",
        status_code=204,
        responses=problem_responses(ErrorCode.INVALID_STATE, ErrorCode.WEAK_PASSWORD),
    )
    async def reset_password(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[ResetPasswordBody],
        svcs_container: SvcsContainer,
    ) -> None:
        """Set a new password with the token from the reset email; every session ends."""
        registration = await registration_from(svcs_container)
        await registration.reset_password(token=data.token, password=data.password, caller=caller_of(request))


class MeController(Controller):
    path = "/v1/me"
    tags = ["accounts"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @get("/", responses=problem_responses(ErrorCode.UNAUTHENTICATED, ErrorCode.INSUFFICIENT_SCOPE))
    async def get_me(self, principal: CurrentPrincipal) -> UserOut:
        """The caller's account, as resolved for this request (no further database read: the
        principal cache is invalidated whenever the account changes)."""
        principal.require_scope(Scope.ACCOUNT_READ)
        return UserOut.of(principal.user)

    @patch(
        "/",
        responses=problem_responses(
            ErrorCode.UNAUTHENTICATED, ErrorCode.INVALID_CREDENTIALS, ErrorCode.WEAK_PASSWORD
        ),
    )
    async def update_me(
        self,
        request: Request[Any, Any, Any],
        data: JSONBody[UpdateMeBody],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> UserOut:
        """`display_name`; `password` together with `current_password` (other sessions then end).

        Only a person's session may change the account; API keys may read it."""
        principal.require_session()
        registration = await registration_from(svcs_container)
        changes = ProfileChanges(
            display_name=data.display_name, password=data.password, current_password=data.current_password
        )
        return UserOut.of(await registration.update_profile(principal, changes, caller_of(request)))


def _without_session_cookie() -> Response[None]:
    response: Response[None] = Response(None, status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response
