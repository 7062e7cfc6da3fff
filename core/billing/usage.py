"""Image quotas per billing period, and reservations against them.

A generation reserves its images when it is accepted; it settles the reservation when it succeeds
and refunds it when it fails or is canceled. Each reservation ends exactly once, so a retried job
never refunds twice. The reservation's check-and-increment is one atomic statement in the store
(PostgreSQL: a conditional UPDATE on the period's row), so processes racing for the last images
can never spend more than the quota.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

import msgspec

QUOTA_THRESHOLDS_PERCENT = (80, 100)  # crossing each emits `quota.threshold_reached`, once a period


class UsagePeriod(msgspec.Struct, frozen=True, kw_only=True):
    user_id: str
    period_start: datetime
    period_end: datetime
    images_used: int  # settled and reserved images
    in_flight: int  # reservations not yet settled or refunded (running generations)
    thresholds_reached: tuple[int, ...] = ()  # percentages already announced this period


class ReservationStatus(StrEnum):
    RESERVED = "reserved"
    SETTLED = "settled"
    REFUNDED = "refunded"


class QuotaReservation(msgspec.Struct, frozen=True, kw_only=True):
    id: str  # the generation's id: one reservation per generation
    user_id: str
    period_start: datetime
    images: int
    status: ReservationStatus
    created_at: datetime
    finished_at: datetime | None = None


class ReservationOutcome(StrEnum):
    RESERVED = "reserved"
    ALREADY_RESERVED = "already_reserved"  # the same reservation id again: nothing changed
    QUOTA_EXCEEDED = "quota_exceeded"
    CONCURRENCY_LIMIT = "concurrency_limit"


class ReservationResult(msgspec.Struct, frozen=True, kw_only=True):
    outcome: ReservationOutcome
    usage: UsagePeriod  # the period as it is after this attempt
