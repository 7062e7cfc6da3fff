"""`GET /admin/errors` (role `admin`): recent error codes with counts, rates and correlation ids."""

from __future__ import annotations

from litestar import Controller, get
from litestar.params import FromQuery

from core.error_tracking.model import SourceKind
from core.error_tracking.report import ErrorReport, error_report
from core.errors import ErrorCode
from core.ports import Clock, ErrorLog
from entrypoints.error_tracking import alert_rules
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.schemas import PageLimit
from entrypoints.http.svcs_plugin import SvcsContainer
from entrypoints.settings import Settings


class AdminErrorsController(Controller):
    path = "/admin/errors"
    tags = ["administration"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @get(
        "/",
        responses=problem_responses(
            ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN, ErrorCode.BAD_REQUEST, ErrorCode.VALIDATION_FAILED
        ),
    )
    async def list_errors(
        self,
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
        kind: FromQuery[SourceKind | None] = None,
        limit: PageLimit = None,
    ) -> ErrorReport:
        """The errors of the alert window (`PICTOR_ALERT_WINDOW_SECONDS`) across all processes, the
        most frequent first: per route (method and route template) or job function and queue, the
        code, category and status, the count, `rate` (its share of that route's responses or that
        function's runs) and `per_minute`, when it was last seen and the correlation ids of its
        latest occurrences (to find their log lines). Also the window's totals (responses and 5xx;
        runs and failures per queue) and each alert rule's state. `kind` keeps `http` or `job`
        errors only; `limit` rows (default 50, at most 500)."""
        error_log, clock, settings = await svcs_container.aget(ErrorLog, Clock, Settings)
        return await error_report(
            principal, log=error_log, clock=clock, rules=alert_rules(settings), kind=kind, limit=limit
        )
