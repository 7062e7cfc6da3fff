"""A plan catalog for tests that make many requests: one free plan whose limits stay out of the way."""

from __future__ import annotations

from pathlib import Path

_ROOMY = """
format = 1

[plans.free]
name = "Roomy"
monthly_price_cents = 0
currency = "USD"
monthly_images = {monthly_images}
rate_limit = {{ requests = {requests}, per_seconds = 60, burst = {requests} }}
max_concurrent_jobs = {max_concurrent_jobs}
max_image_pixels = {max_image_pixels}
features = ["api_access"]
"""


def roomy_plans_file(
    directory: Path,
    *,
    monthly_images: int = 1000,
    max_concurrent_jobs: int = 20,
    max_image_pixels: int = 512 * 512,
    requests: int = 10_000,
) -> str:
    """Write the catalog into `directory` (for PICTOR_PLANS_FILE) and return its path."""
    path = directory / f"plans-{monthly_images}-{max_concurrent_jobs}-{max_image_pixels}-{requests}.toml"
    path.write_text(
        _ROOMY.format(
            monthly_images=monthly_images,
            max_concurrent_jobs=max_concurrent_jobs,
            max_image_pixels=max_image_pixels,
            requests=requests,
        )
    )
    return str(path)
