"""The ImageInspector port over Pillow (`inspection.py`), off the event loop.

Decoding and re-encoding are CPU work of tens of milliseconds for a large photo: they run in a
worker thread (Pillow releases the GIL while decoding), so other requests keep being served.
"""

from __future__ import annotations

import asyncio

from adapters.images.inspection import strip_metadata
from core.images import ImageFacts, ImageLimits


class PillowImageInspector:
    async def inspect_and_clean(self, data: bytes, limits: ImageLimits) -> tuple[bytes, ImageFacts]:
        clean, image_type, width, height = await asyncio.to_thread(strip_metadata, data, limits)
        return clean, ImageFacts(content_type=image_type, width=width, height=height, bytes=len(clean))
