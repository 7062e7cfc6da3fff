"""Liveness and readiness (health+json), readiness being the registry's pings."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import svcs
from litestar import Request, get
from litestar.response import Response

from core.errors import DomainError
from core.health import CheckResult, HealthStatus, overall_status
from entrypoints.http.openapi_responses import health_response
from entrypoints.http.shutdown import ShutdownState
from entrypoints.http.svcs_plugin import SvcsContainer
from entrypoints.wiring import check_name_for

PING_TIMEOUT_SECONDS = 3.0
HEALTH_JSON = "application/health+json"


@get("/health/live", sync_to_thread=False, tags=["operations"], media_type=HEALTH_JSON)
def live() -> Response[dict[str, str]]:
    """200 while the process runs."""
    return Response({"status": "pass"}, media_type=HEALTH_JSON, headers={"Cache-Control": "no-store"})


async def _run_ping(ping: svcs.ServicePing) -> CheckResult:
    name, required = check_name_for(ping.name)
    failed = HealthStatus.FAIL if required else HealthStatus.WARN  # optional: degraded, still ready
    started = time.perf_counter()
    output: str | None = None
    try:
        await ping.aping()
    except DomainError as error:  # written for clients: safe to show
        status, output = failed, error.detail
    except Exception as error:  # a failing dependency is a result here, not an error
        status, output = failed, type(error).__name__  # its message may hold addresses or credentials
    else:
        status = HealthStatus.PASS
    duration = round((time.perf_counter() - started) * 1000, 2)
    return CheckResult(name=name, status=status, required=required, duration_ms=duration, output=output)


async def _run_pings(pings: list[svcs.ServicePing]) -> list[CheckResult]:
    """Every ping at once, and an answer within the timeout even when a ping will not stop.

    A ping still running at the deadline is reported and left to finish in the background:
    awaiting its cancellation could block as long as the stuck dependency does.
    """
    tasks = {asyncio.ensure_future(_run_ping(ping)): ping for ping in pings}
    done, pending = await asyncio.wait(tasks, timeout=PING_TIMEOUT_SECONDS)
    results = [task.result() for task in done]
    for task in pending:
        task.cancel()
        name, required = check_name_for(tasks[task].name)
        results.append(
            CheckResult(
                name=name,
                status=HealthStatus.FAIL if required else HealthStatus.WARN,
                required=required,
                duration_ms=PING_TIMEOUT_SECONDS * 1000,
                output=f"no answer within {PING_TIMEOUT_SECONDS:g} s",
            )
        )
    return results


@get(
    "/health/ready",
    tags=["operations"],
    media_type=HEALTH_JSON,
    responses={503: health_response("A required dependency fails, or the process is shutting down")},
)
async def ready(request: Request[Any, Any, Any], svcs_container: SvcsContainer) -> Response[dict[str, Any]]:
    """`pass` when every dependency answers; `503` with `fail` when a required one does not."""
    results = await _run_pings(svcs_container.get_pings())
    shutdown: ShutdownState = request.app.state.shutdown
    draining = shutdown.draining
    status = overall_status(results, shutting_down=draining)
    body: dict[str, Any] = {
        "status": status.value,
        "checks": {
            r.name: {
                "status": r.status.value,
                "duration_ms": r.duration_ms,
                **({"output": r.output} if r.output else {}),
            }
            for r in results
        },
    }
    if draining:
        body["output"] = "shutting down"
    return Response(
        body,
        status_code=503 if status is HealthStatus.FAIL else 200,
        media_type=HEALTH_JSON,
        headers={"Cache-Control": "no-store"},
    )
