"""Generation metrics (DESIGN.md §6, issue 5 item 8): generations by status, render duration, queue
wait, images stored and their bytes. Recorded by the entrypoints from what the use cases return,
so the core stays free of prometheus."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from prometheus_client import Counter, Histogram

GENERATIONS = Counter(
    "pictor_generations_total",
    "Generations reaching a status (queued when accepted, then succeeded, failed or canceled)",
    ["status"],
)
RENDER_DURATION = Histogram(
    "pictor_generation_render_duration_seconds",
    "Time a successful render job took, from start to its images stored",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0),
)
QUEUE_WAIT = Histogram(
    "pictor_generation_queue_wait_seconds",
    "Time from acceptance to the first start of a generation's render",
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
IMAGES_STORED = Counter("pictor_images_stored_total", "Generated images stored")
IMAGES_STORED_BYTES = Counter("pictor_images_stored_bytes_total", "Bytes of generated images stored")

_STATUSES = frozenset({"queued", "running", "succeeded", "failed", "canceled"})


def observe_generation_status(status: str) -> None:
    """Count one generation reaching `status` (the API counts `queued` and `canceled`)."""
    if status in _STATUSES:
        GENERATIONS.labels(status).inc()


def observe_render_outcome(outcome: Mapping[str, Any]) -> None:
    """Record what a `render_generation` job returned (`RenderGeneration.run`). A job that found
    its generation finished already counts nothing: the first run did."""
    if "queue_wait_seconds" in outcome:
        QUEUE_WAIT.observe(max(0.0, float(outcome["queue_wait_seconds"])))
    if "render_seconds" not in outcome and "error_code" not in outcome:
        return  # nothing ended in this run (already finished, canceled by the client, missing)
    observe_generation_status(str(outcome["status"]))
    if "render_seconds" in outcome:
        RENDER_DURATION.observe(float(outcome["render_seconds"]))
        IMAGES_STORED.inc(int(outcome.get("images", 0)))
        IMAGES_STORED_BYTES.inc(int(outcome.get("bytes", 0)))
