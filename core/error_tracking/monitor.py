"""The alert check: read the shared window, apply the rules, claim the alerts that may go out."""

from __future__ import annotations

import msgspec

from core.error_tracking.alerts import Alert, build_alert
from core.error_tracking.rules import AlertCheck, AlertRules, evaluate
from core.ports import Clock, ErrorLog, Ids


class AlertReport(msgspec.Struct, frozen=True, kw_only=True):
    """Every rule's state now, and the alerts this check claimed (to be logged and sent)."""

    checks: tuple[AlertCheck, ...]
    alerts: tuple[Alert, ...] = ()


class AlertMonitor:
    """Runs in every process that serves traffic or jobs, every second or so; the cooldown claims
    in the shared log make one alert per cooldown in all, whichever process sees it first."""

    def __init__(self, *, log: ErrorLog, clock: Clock, ids: Ids, rules: AlertRules) -> None:
        self._log = log
        self._clock = clock
        self._ids = ids
        self._rules = rules

    async def check(self) -> AlertReport:
        now = self._clock.now()
        window = self._rules.window.buckets(now)
        checks = evaluate(self._rules, await self._log.totals(window))
        claimed = [
            check
            for check in checks
            if check.active and await self._log.claim_alert(check.alert, now, self._rules.cooldown_seconds)
        ]
        if not claimed:
            return AlertReport(checks=tuple(checks))
        recent = await self._log.recent(window)  # only when alerting: the errors behind the alert
        alerts = tuple(
            build_alert(check, recent, rules=self._rules, id=self._ids.new_id(), now=now) for check in claimed
        )
        return AlertReport(checks=tuple(checks), alerts=alerts)
