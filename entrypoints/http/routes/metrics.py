"""`/metrics` in Prometheus text format, behind a bearer token from the secrets port."""

from __future__ import annotations

import hmac
from typing import Any

import svcs
from litestar.connection import ASGIConnection
from litestar.handlers import BaseRouteHandler
from litestar.plugins.prometheus import PrometheusController

from core.errors import DomainError, ErrorCode
from core.ports import Secrets
from core.secrets import METRICS_TOKEN
from entrypoints.http.svcs_plugin import registry_of

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="metrics"'}


async def require_metrics_token(connection: ASGIConnection[Any, Any, Any, Any], _: BaseRouteHandler) -> None:
    header = connection.headers.get("authorization", "")
    scheme, _sep, presented = header.partition(" ")
    if scheme.lower() != "bearer" or not presented:
        raise DomainError(ErrorCode.UNAUTHENTICATED, "A metrics bearer token is required", headers=_CHALLENGE)
    async with svcs.Container(registry_of(connection.app)) as container:
        secrets = await container.aget(Secrets)
        versions = await secrets.versions(METRICS_TOKEN)
    if not any(hmac.compare_digest(presented.encode(), v.value.encode()) for v in versions):
        raise DomainError(ErrorCode.UNAUTHENTICATED, "The metrics token is not valid", headers=_CHALLENGE)


class MetricsController(PrometheusController):
    path = "/metrics"
    guards = [require_metrics_token]  # noqa: RUF012 - Litestar's declaration style
    tags = ["operations"]  # noqa: RUF012
    include_in_schema = False
