"""Ids are UUID text; anything else names nothing (and must never reach a uuid column)."""

from __future__ import annotations

import uuid


def is_id(text: str) -> bool:
    if len(text) != 36:
        return False
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True
