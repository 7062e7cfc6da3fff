"""HTTP metrics, labelled by route template (never the raw path), method and status.

Litestar's Prometheus middleware builds a Request and several label dicts per request, which
cost about 40 % of a small route's time here; these are the same figures with the label children
cached, recorded by the request-context middleware that already times every response.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

UNMATCHED_ROUTE = "unmatched"  # 404s and other requests no route took: one series, not one per path
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})  # others: "OTHER"

REQUESTS = Counter("pictor_http_requests_total", "HTTP requests answered", ["method", "route", "status"])
DURATION = Histogram(
    "pictor_http_request_duration_seconds",
    "Time from request to the last byte of the response",
    ["method", "route"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ERRORS = Counter(
    "pictor_http_errors_total", "HTTP responses with a 5xx status", ["method", "route", "status"]
)
IN_PROGRESS = Gauge(
    "pictor_http_requests_in_progress", "HTTP requests being handled", multiprocess_mode="livesum"
)

_children: dict[tuple[str, str, int], tuple[Counter, Histogram, Counter | None]] = {}


def observe_request(method: str, route: str | None, status: int, seconds: float) -> None:
    key = (method if method in _METHODS else "OTHER", route or UNMATCHED_ROUTE, status)
    children = _children.get(key)
    if children is None:
        status_text = str(status)
        children = (
            REQUESTS.labels(key[0], key[1], status_text),
            DURATION.labels(key[0], key[1]),
            ERRORS.labels(key[0], key[1], status_text) if status >= 500 else None,
        )
        _children[key] = children
    requests, duration, errors = children
    requests.inc()
    duration.observe(seconds)
    if errors is not None:
        errors.inc()
