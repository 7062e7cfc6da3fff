"""Operating the job queues: what each queue holds and does, and retrying or stopping a job.

Used by the admin routes (`/admin/queues`) and by `pictor queue` on the command line. Retries and
aborts are audited; they act on the transport only: a job run again meets the database's state
(a job is idempotent), so retrying a job whose work is already done changes nothing.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from core.accounts import audit_trail
from core.accounts.audit import AuditAction
from core.accounts.context import Caller
from core.accounts.principal import Principal
from core.errors import DomainError, ErrorCode
from core.jobs import QUEUES, JobInfo, JobState
from core.ports import Clock, Database, Ids, JobQueue

THROUGHPUT_WINDOW_SECONDS = 300.0
"""Throughput is averaged over the last five minutes: long enough to smooth bursts, short enough
to show a stall."""

MAX_FAILED_LISTED = 100


def require_operator(principal: Principal) -> None:
    """Operating the queues is for administrators in person, like the rest of /admin: an admin's
    API key cannot do it."""
    principal.require_session()
    principal.require_admin()


class QueueOverview(msgspec.Struct, frozen=True, kw_only=True):
    """One queue at a glance. Finished counts cover the jobs still on record (the result TTL)."""

    queue: str
    queued: int  # waiting, delayed ones included
    running: int
    failed: int
    complete: int
    aborted: int
    throughput_per_minute: float  # jobs finished (any outcome) per minute
    throughput_window_seconds: float
    oldest_queued_age_seconds: float | None  # of the oldest job due to run and not yet started


class QueueOperations:
    """The queue operator's use cases, over the JobQueue port (and the audit log)."""

    def __init__(
        self,
        *,
        jobs: JobQueue,
        database: Database,
        ids: Ids,
        clock: Clock,
        queues: Sequence[str] = QUEUES,
    ) -> None:
        self._jobs = jobs
        self._database = database
        self._ids = ids
        self._clock = clock
        self._queues = tuple(queues)

    @property
    def queues(self) -> tuple[str, ...]:
        return self._queues

    async def overview(self) -> list[QueueOverview]:
        """Every queue, in the order of `core.jobs.QUEUES`."""
        return [await self.queue(name) for name in self._queues]

    async def queue(self, queue: str) -> QueueOverview:
        self._check_queue(queue)
        stats = await self._jobs.stats(queue)
        rate = await self._jobs.finished_per_minute(queue, THROUGHPUT_WINDOW_SECONDS)
        return QueueOverview(
            queue=queue,
            queued=stats.queued,
            running=stats.active,
            failed=stats.failed,
            complete=stats.complete,
            aborted=stats.aborted,
            throughput_per_minute=round(rate, 3),
            throughput_window_seconds=THROUGHPUT_WINDOW_SECONDS,
            oldest_queued_age_seconds=stats.oldest_queued_age_seconds,
        )

    async def failed_jobs(self, queue: str, limit: int = 20) -> list[JobInfo]:
        """The most recently failed jobs of `queue` still on record, newest first."""
        self._check_queue(queue)
        if not 1 <= limit <= MAX_FAILED_LISTED:
            raise DomainError(ErrorCode.VALIDATION_FAILED, f"limit must be between 1 and {MAX_FAILED_LISTED}")
        return await self._jobs.failed_jobs(queue, limit)

    async def job(self, queue: str, key: str) -> JobInfo:
        self._check_queue(queue)
        info = await self._jobs.status(queue, key)
        if info is None:
            raise DomainError(ErrorCode.NOT_FOUND, f"No job {key!r} on the {queue} queue")
        return info

    async def retry(self, queue: str, key: str, *, actor_id: str | None, caller: Caller) -> JobInfo:
        """Queue a failed or aborted job again with all its attempts. NOT_FOUND for an unknown
        job; INVALID_STATE for one that is queued, running or complete (or retried already)."""
        self._check_queue(queue)
        retried = await self._jobs.retry(queue, key)
        if retried is None:
            current = await self.job(queue, key)
            raise DomainError(
                ErrorCode.INVALID_STATE,
                f"Only a failed or aborted job can be retried; this one is {current.state.value}",
            )
        await self._audit(AuditAction.JOB_RETRIED, retried, actor_id, caller)
        return retried

    async def abort(self, queue: str, key: str, *, actor_id: str | None, caller: Caller) -> JobInfo:
        """Stop a queued or running job (a running one stops at its worker's next abort check).
        NOT_FOUND for an unknown job; INVALID_STATE for one that has finished."""
        self._check_queue(queue)
        current = await self.job(queue, key)
        if current.state.is_finished or not await self._jobs.abort(queue, key):
            latest = await self._jobs.status(queue, key) or current
            raise DomainError(
                ErrorCode.INVALID_STATE,
                f"Only a queued or running job can be aborted; this one is {latest.state.value}",
            )
        stopped = await self._jobs.status(queue, key)
        aborted = stopped or msgspec.structs.replace(current, state=JobState.ABORTED)
        await self._audit(AuditAction.JOB_ABORTED, aborted, actor_id, caller)
        return aborted

    def _check_queue(self, queue: str) -> None:
        if queue not in self._queues:
            raise DomainError(
                ErrorCode.NOT_FOUND,
                f"No queue {queue!r}; the queues are {', '.join(self._queues)}",
            )

    async def _audit(self, action: AuditAction, job: JobInfo, actor_id: str | None, caller: Caller) -> None:
        async with self._database.unit_of_work() as uow:
            await audit_trail.record(
                uow,
                self._ids,
                self._clock,
                caller,
                action,
                actor_id=actor_id,
                target_type="job",
                target_id=f"{job.queue}/{job.key}",
                queue=job.queue,
                key=job.key,
                function=job.function,
            )
            await uow.commit()
