"""What Pictor charged, in integer cents: the ledger a payment provider would settle."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec


class ChargeKind(StrEnum):
    PRORATION = "proration"  # an upgrade within a period: the price difference for what is left
    RENEWAL = "renewal"  # a new period of a paid plan (also a trial converting)


class Charge(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    user_id: str
    plan: str
    kind: ChargeKind
    amount_cents: int
    currency: str
    period_start: datetime
    period_end: datetime
    created_at: datetime
