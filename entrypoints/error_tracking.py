"""Error tracking in one process: what requests and jobs count into, and the loop that shares it.

The wiring registers one `ErrorTracking` per registry (so per process: the API with its embedded
worker shares one). HTTP responses and job runs are counted in memory (`ErrorTally`, no IO on the
request path) and in Prometheus; every `interval_seconds` the loop adds the tally to the shared
`ErrorLog` in one round trip and checks the alert rules over the shared window (`AlertMonitor`).
An alert this process claims is logged, counted, shown by the `pictor_alert_active` gauge (every
process sets it while the rule is crossed) and posted to `PICTOR_OPS_WEBHOOK_URL` when set.

`pictor serve` and `pictor worker` start the loop (`start`/`stop` are counted, so the API and its
embedded worker run one); the CLI's short-lived registries never do, so they never alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

import msgspec
import svcs
from prometheus_client import Counter, Gauge

from adapters.memory.error_log import MemoryErrorLog
from core.error_tracking.alerts import OPS_WEBHOOK_SECRET, Alert, signing_secrets
from core.error_tracking.monitor import AlertMonitor, AlertReport
from core.error_tracking.notify import OpsAlertSender
from core.error_tracking.rules import AlertRules
from core.error_tracking.tally import ErrorTally
from core.error_tracking.window import SlidingWindow
from core.errors import CATALOG, DomainError, ErrorCategory, ErrorCode
from core.ports import Clock, ErrorLog, Ids, JobContext, JobHandler, Secrets, WebhookTransport
from entrypoints.settings import Settings

if TYPE_CHECKING:
    from adapters.webhooks_http.transport import HttpWebhookTransport

log = logging.getLogger("pictor.alerts")

ERRORS = Counter(
    "pictor_errors_total",
    "Error responses (status 400 and above) by code, route template and category",
    ["code", "route", "category"],
)
JOB_FAILURES = Counter(
    "pictor_job_failures_total", "Job runs that raised, by queue and function", ["queue", "function"]
)
ALERT_ACTIVE = Gauge(
    "pictor_alert_active",
    "1 while the alert's failure rate is over its threshold in the shared window, else 0",
    ["alert"],
    multiprocess_mode="livemax",
)
ALERTS_SENT = Counter(
    "pictor_alerts_sent_total",
    "Alerts raised by this process (logged, and posted to the ops webhook if set)",
    ["alert"],
)

DEFAULT_INTERVAL_SECONDS: Final = 1.0
MAX_BACKOFF_SECONDS: Final = 30.0
SEND_GRACE_SECONDS: Final = 5.0  # how long stopping waits for alerts still being sent


_CODES: Final = {code.value: code for code in ErrorCode}


def alert_rules(settings: Settings) -> AlertRules:
    return AlertRules(
        window=SlidingWindow.of(settings.alert_window_seconds),
        http_5xx_rate=settings.alert_5xx_rate,
        job_failure_rate=settings.alert_job_failure_rate,
        min_volume=settings.alert_min_requests,
        cooldown_seconds=settings.alert_cooldown_seconds,
    )


def http_error_category(code: str, status: int) -> str:
    """The catalog's category of `code`; for a code outside the catalog, by status."""
    known = _CODES.get(code)
    if known is not None:
        return CATALOG[known].category.value
    return (ErrorCategory.SERVER if status >= 500 else ErrorCategory.CLIENT).value


def job_error_code(error: BaseException) -> tuple[str, str]:
    """A failed job's code and category: a DomainError's own, else the exception's class name
    (as a server error: a job that raises is our fault or a dependency's)."""
    if isinstance(error, DomainError):
        return error.code.value, error.code.category.value
    return type(error).__name__, ErrorCategory.SERVER.value


class ErrorTracking:
    """One process's error tracking. `registry` supplies the ErrorLog, Clock, Ids and Secrets at
    each round (so a test that replaces the clock in the registry is obeyed)."""

    def __init__(
        self,
        registry: svcs.Registry,
        settings: Settings,
        *,
        interval_seconds: float = DEFAULT_INTERVAL_SECONDS,
    ) -> None:
        self.tally = ErrorTally()
        self.rules = alert_rules(settings)
        self._registry = registry
        self._ops_url = settings.ops_webhook_url
        self._interval = interval_seconds
        self._own_transport: HttpWebhookTransport | None = None
        self._users = 0
        self._task: asyncio.Task[None] | None = None
        self._sending: set[asyncio.Task[None]] = set()
        self._gauged: set[str] = set()
        self._error_labels: dict[tuple[str, str, int], tuple[str, Counter]] = {}

    # --- counting (the request path: memory only) ---

    def count_response(self, method: str, route: str) -> None:
        """One HTTP response of `route` (a route template), whatever its status."""
        self.tally.count_response(method, route)

    def count_http_error(
        self, method: str, route: str, *, status: int, code: str, correlation_id: str
    ) -> None:
        """An error response; it is counted as a response by `count_response` as well."""
        labels = self._error_labels.get((code, route, status))
        if labels is None:
            category = http_error_category(code, status)
            labels = self._error_labels[(code, route, status)] = (
                category,
                ERRORS.labels(code, route, category),
            )
        category, counter = labels
        counter.inc()
        self.tally.count_http_error(
            method, route, code=code, category=category, status=status, correlation_id=correlation_id
        )

    def count_job(self, queue: str, function: str, ctx: JobContext, error: BaseException | None) -> None:
        """A finished run of a job: succeeded (`error` None) or raised `error`."""
        self.tally.count_job(queue, function)
        if error is None:
            return
        code, category = job_error_code(error)
        JOB_FAILURES.labels(queue, function).inc()
        self.tally.count_job_failure(
            queue,
            function,
            code=code,
            category=category,
            correlation_id=ctx.correlation_id or f"job:{ctx.key}",
        )

    # --- the loop ---

    async def start(self) -> None:
        """Start the loop, unless another user of this registry has (count one more user)."""
        self._users += 1
        if self._task is None:
            self._task = asyncio.create_task(self._run(), name="pictor-error-tracking")

    async def stop(self) -> None:
        """One user less; the last one stops the loop and flushes what is left."""
        self._users = max(0, self._users - 1)
        if self._users == 0:
            await self._halt()

    async def aclose(self) -> None:
        """Stop whatever the users said (the registry is closing) and close the ops transport."""
        self._users = 0
        await self._halt()
        if self._own_transport is not None:
            await self._own_transport.aclose()
            self._own_transport = None

    async def flush(self) -> None:
        """Add what this process counted to the shared log; on failure it is kept for next time."""
        if self.tally.empty:
            return
        async with svcs.Container(self._registry) as container:
            error_log, clock = await container.aget(ErrorLog, Clock)
        now = clock.now()
        window = self.rules.window
        batch = self.tally.drain(
            bucket_seconds=window.bucket_seconds,
            bucket_start=window.bucket_of(now),
            at=now,
            keep_seconds=window.keep_seconds(),
        )
        try:
            await error_log.add(batch)
        except BaseException:
            self.tally.restore(batch)
            raise

    async def run_once(self) -> AlertReport:
        """Flush, check the rules, and raise the alerts this process claimed (their webhooks are
        sent in the background)."""
        await self.flush()
        async with svcs.Container(self._registry) as container:
            error_log, clock, ids = await container.aget(ErrorLog, Clock, Ids)
        report = await AlertMonitor(log=error_log, clock=clock, ids=ids, rules=self.rules).check()
        self._set_gauges(report)
        for alert in report.alerts:
            self._announce(alert)
        return report

    async def wait_for_sends(self, timeout_seconds: float) -> None:
        """Let the alerts being sent finish, for up to `timeout_seconds`; cancel those still going."""
        if not self._sending:
            return
        _, late = await asyncio.wait(set(self._sending), timeout=timeout_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _run(self) -> None:
        failures = 0
        while True:
            await asyncio.sleep(
                self._interval if failures == 0 else min(MAX_BACKOFF_SECONDS, self._interval * 2**failures)
            )
            try:
                await self.run_once()
                failures = 0
            except Exception:
                failures += 1
                log.warning("error tracking round failed; counts are kept and retried", exc_info=True)

    async def _halt(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        try:
            await self.flush()  # the last counts of this process still count for the others
        except Exception:
            log.warning("could not flush the last error counts", exc_info=True)
        await self.wait_for_sends(SEND_GRACE_SECONDS)

    def _set_gauges(self, report: AlertReport) -> None:
        seen: set[str] = set()
        for check in report.checks:
            ALERT_ACTIVE.labels(check.alert).set(1 if check.active else 0)
            seen.add(check.alert)
        for alert in self._gauged - seen:  # a queue idle for a whole window is not failing
            ALERT_ACTIVE.labels(alert).set(0)
        self._gauged |= seen

    def _announce(self, alert: Alert) -> None:
        ALERTS_SENT.labels(alert.alert).inc()
        log.error(
            "alert: %s",
            alert.summary,
            extra={"alert": alert.alert, "alert_id": alert.id, **_log_fields(alert)},
        )
        if self._ops_url is not None:
            task = asyncio.create_task(self._send(alert, self._ops_url), name=f"ops-alert:{alert.id}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _send(self, alert: Alert, url: str) -> None:
        try:
            async with svcs.Container(self._registry) as container:
                secrets, clock = await container.aget(Secrets, Clock)
            sender = OpsAlertSender(
                url=url, secrets=secrets, transport=self._ops_transport(), clock=clock, sleep=asyncio.sleep
            )
            result = await sender.send(alert)
        except Exception:
            log.error("the ops alert could not be sent", extra={"alert_id": alert.id}, exc_info=True)
            return
        if result.succeeded:
            log.info("ops alert delivered", extra={"alert_id": alert.id, "status": result.status_code})
        else:
            log.error(
                "the ops webhook refused the alert",
                extra={"alert_id": alert.id, "status": result.status_code, "error": result.error},
            )

    def _ops_transport(self) -> WebhookTransport:
        if self._own_transport is None:
            from adapters.webhooks_http.transport import HttpWebhookTransport  # httpx: only when alerting

            # The ops URL is the operator's own: a receiver on a private network is expected.
            self._own_transport = HttpWebhookTransport(allow_private=True)
        return self._own_transport


def _log_fields(alert: Alert) -> Mapping[str, object]:
    fields = msgspec.to_builtins(alert)
    fields.pop("id", None)
    fields.pop("alert", None)
    return fields  # type: ignore[no-any-return]


def register_error_tracking(registry: svcs.Registry, settings: Settings, valkey: Any) -> ErrorTracking:
    """Register the ErrorLog (on Valkey when there is one, shared by every process; else in this
    process's memory) and this process's ErrorTracking, closed with the registry."""
    error_log: ErrorLog
    if valkey is None:
        error_log = MemoryErrorLog()
    else:
        from adapters.valkey.error_log import ValkeyErrorLog

        error_log = ValkeyErrorLog(valkey, key_prefix=f"{settings.namespace}:")
    registry.register_value(ErrorLog, error_log)
    tracking = ErrorTracking(registry, settings)
    registry.register_value(ErrorTracking, tracking, on_registry_close=tracking.aclose)
    return tracking


async def check_ops_secret(secrets: Secrets) -> None:
    """Readiness when alerts are posted: some version of `ops_webhook_secret` can sign them."""
    versions = await secrets.versions(OPS_WEBHOOK_SECRET)
    if not signing_secrets([version.value for version in versions]):
        raise DomainError(
            ErrorCode.SECRET_MISSING,
            f"PICTOR_OPS_WEBHOOK_URL is set but no version of {OPS_WEBHOOK_SECRET} can sign "
            "(a whsec_ value, or at least 24 bytes)",
        )


def counting_outcomes(
    handlers: Mapping[str, JobHandler], tracking: ErrorTracking | None
) -> dict[str, JobHandler]:
    """`handlers` with every run counted by `tracking` under the job's name and the queue it was
    taken from (the same handlers when there is no tracking)."""
    if tracking is None:
        return dict(handlers)
    return {name: _counted(handler, tracking, name) for name, handler in handlers.items()}


def _counted(handler: JobHandler, tracking: ErrorTracking, function: str) -> JobHandler:
    async def counted(ctx: JobContext, **kwargs: Any) -> Any:
        try:
            result = await handler(ctx, **kwargs)
        except Exception as error:  # a cancellation (abort, shutdown) is not a failure
            tracking.count_job(ctx.queue, function, ctx, error)
            raise
        tracking.count_job(ctx.queue, function, ctx, None)
        return result

    counted.__name__ = getattr(handler, "__name__", function)
    return counted


def tracking_of(registry: svcs.Registry) -> ErrorTracking | None:
    """The registry's ErrorTracking; None for a registry built without one (some tests' own)."""
    if ErrorTracking not in registry:
        return None
    with svcs.Container(registry) as container:
        return container.get(ErrorTracking)
