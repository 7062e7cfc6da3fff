"""`GET /admin/metrics` (role `admin`): the figures of `/metrics` as JSON.

Read from the same registry as `/metrics` (every server process's files in multiprocess mode), so
the two always agree. A worker's own figures (renders, deliveries, emails) are on its own
`/metrics` listener, not here, unless it runs inside the API (the embedded set-up).
"""

from __future__ import annotations

import asyncio
import math

import msgspec
from litestar import Controller, get
from litestar.params import FromQuery
from prometheus_client import CollectorRegistry

from core.errors import ErrorCode
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.system_metrics import collecting_registry, multiprocess_dir

CACHE_HITS = "pictor_cache_hits_total"
CACHE_MISSES = "pictor_cache_misses_total"


class SampleOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # e.g. `pictor_http_requests_total`, `…_bucket`, `…_sum`, `…_count`
    labels: dict[str, str]
    value: float | None  # None for NaN or an infinity, which JSON cannot carry


class MetricFamilyOut(msgspec.Struct, frozen=True, kw_only=True):
    name: str  # the family's name (a counter's without `_total`, as prometheus-client reports it)
    type: str  # counter | gauge | histogram | summary | info | …
    help: str
    samples: list[SampleOut]


class AdminMetricsOut(msgspec.Struct, frozen=True, kw_only=True):
    data: list[MetricFamilyOut]
    multiprocess: bool  # true: the sum of every server process; false: this process alone
    cache_hit_ratio: float | None  # hits / (hits + misses) since start; None before any read


def metric_families(registry: CollectorRegistry) -> list[MetricFamilyOut]:
    """The registry's families, sorted by name, without `_created` timestamps (they are not
    figures, and multiprocess mode has none)."""
    families = []
    for family in registry.collect():
        samples = [
            SampleOut(
                name=sample.name,
                labels=dict(sample.labels),
                value=sample.value if math.isfinite(sample.value) else None,
            )
            for sample in family.samples
            if not sample.name.endswith("_created")
        ]
        families.append(
            MetricFamilyOut(name=family.name, type=family.type, help=family.documentation, samples=samples)
        )
    return sorted(families, key=lambda f: f.name)


def cache_hit_ratio(families: list[MetricFamilyOut]) -> float | None:
    totals = {CACHE_HITS: 0.0, CACHE_MISSES: 0.0}
    for family in families:
        for sample in family.samples:
            if sample.name in totals and sample.value is not None:
                totals[sample.name] += sample.value
    reads = totals[CACHE_HITS] + totals[CACHE_MISSES]
    return totals[CACHE_HITS] / reads if reads else None


def _collect(name_prefix: str | None) -> AdminMetricsOut:
    families = metric_families(collecting_registry())
    kept = [f for f in families if f.name.startswith(name_prefix)] if name_prefix else families
    return AdminMetricsOut(
        data=kept,
        multiprocess=multiprocess_dir() is not None,
        cache_hit_ratio=cache_hit_ratio(families),  # from every family, whatever the filter kept
    )


class AdminMetricsController(Controller):
    path = "/admin/metrics"
    tags = ["administration"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @get("/", responses=problem_responses(ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN))
    async def get_metrics(
        self, principal: CurrentPrincipal, name: FromQuery[str | None] = None
    ) -> AdminMetricsOut:
        """Every metric family with its samples, as `/metrics` would answer (the same registry);
        `name` keeps the families whose name starts with it (e.g. `pictor_queue_`)."""
        # For administrators in person, like the rest of /admin: an admin's API key cannot.
        principal.require_session()
        principal.require_admin()
        # In multiprocess mode this reads every process's files: off the event loop.
        return await asyncio.to_thread(_collect, name)
