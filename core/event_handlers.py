"""Outbox handlers of the core: the audit trail of billing changes and quota notices.

The publisher hands each published event to every handler with the batch's unit of work; what they
write commits exactly when the event is marked published. Webhook fan-out is in
`core.webhooks.fan_out`; metrics and logs are the entrypoints' (they own prometheus and logging).
"""

from __future__ import annotations

from datetime import datetime

import msgspec

from core.accounts.audit import AuditAction, AuditRecord
from core.accounts.emails import quota_notice_email
from core.events import DomainEvent, QuotaThresholdReached, SubscriptionUpdated
from core.jobs import EMAIL, JobSpec
from core.ports import Database, Mailer
from core.use_cases.publish_outbox import Publication

SEND_QUOTA_NOTICE = "send_quota_notice"


async def audit_billing_changes(event: DomainEvent, publication: Publication) -> None:
    """Subscription changes join the audit log (the event's id is the record's: written once)."""
    if isinstance(event, SubscriptionUpdated):
        await publication.uow.audit.add(
            AuditRecord(
                id=event.id,
                occurred_at=event.occurred_at,
                action=AuditAction.SUBSCRIPTION_UPDATED,
                actor_id=None,
                target_type="user",
                target_id=event.user_id,
                correlation_id=event.correlation_id,
                details=msgspec.to_builtins(event.data),
            )
        )


async def schedule_quota_notices(event: DomainEvent, publication: Publication) -> None:
    """A quota threshold reached sends its user an email (once per event: the job key)."""
    if isinstance(event, QuotaThresholdReached):
        publication.enqueue_after_commit(
            JobSpec(
                queue=EMAIL,
                function=SEND_QUOTA_NOTICE,
                kwargs={
                    "user_id": event.user_id,
                    "percent": event.data.percent,
                    "images_used": event.data.images_used,
                    "images_limit": event.data.images_limit,
                    "period_end": event.data.period_end.isoformat(),
                },
                key=f"quota-notice:{event.id}",
                attempts=5,
                retry_delay_seconds=30.0,
                correlation_id=event.correlation_id,
            )
        )


class QuotaNotices:
    """The `send_quota_notice` job: the email, to an active user."""

    def __init__(self, *, database: Database, mailer: Mailer, app_url: str) -> None:
        self._database = database
        self._mailer = mailer
        self._app_url = app_url.rstrip("/")

    async def send(
        self, user_id: str, percent: int, images_used: int, images_limit: int, period_end: str
    ) -> bool:
        async with self._database.unit_of_work() as uow:
            user = await uow.users.get(user_id)
        if user is None or not user.is_active:
            return False
        ends = datetime.fromisoformat(period_end).strftime("%d %B %Y")
        await self._mailer.send(
            quota_notice_email(
                user.email,
                user.display_name,
                percent=percent,
                images_used=images_used,
                images_limit=images_limit,
                period_end=ends,
                link=f"{self._app_url}/billing",
            )
        )
        return True
