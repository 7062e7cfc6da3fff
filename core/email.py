"""Outgoing email as a value."""

from __future__ import annotations

import msgspec


class EmailMessage(msgspec.Struct, frozen=True, kw_only=True):
    to: str
    subject: str
    text: str
    html: str
    kind: str  # e.g. "verify_email", "reset_password": for metrics and logs
