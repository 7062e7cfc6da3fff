"""Administration of the job queues (role `admin`): figures per queue, failed jobs, retry, abort."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec
from litestar import Controller, Request, get, post
from litestar.params import FromPath, FromQuery

from core.errors import ErrorCode
from core.jobs import JobInfo
from core.ports import Clock, Database, Ids, JobQueue
from core.queue_operations import QueueOperations, QueueOverview, require_operator
from entrypoints.http.auth import BEARER_SECURITY, PRINCIPAL_DEPENDENCY, CurrentPrincipal, caller_of
from entrypoints.http.openapi_responses import problem_responses
from entrypoints.http.svcs_plugin import SvcsContainer

_ADMIN_PROBLEMS = (ErrorCode.UNAUTHENTICATED, ErrorCode.FORBIDDEN)
_JOB_PROBLEMS = (*_ADMIN_PROBLEMS, ErrorCode.NOT_FOUND)
_ACTION_PROBLEMS = (*_JOB_PROBLEMS, ErrorCode.INVALID_STATE)


class QueueListOut(msgspec.Struct, kw_only=True):
    data: list[QueueOverview]


class JobOut(msgspec.Struct, kw_only=True):
    queue: str
    key: str
    function: str
    state: str  # queued | active | complete | failed | aborted
    attempts: int
    progress: float
    error: str | None
    result: Any
    enqueued_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, info: JobInfo) -> JobOut:
        return cls(
            queue=info.queue,
            key=info.key,
            function=info.function,
            state=info.state.value,
            attempts=info.attempts,
            progress=info.progress,
            error=info.error,
            result=info.result,
            enqueued_at=info.enqueued_at,
            scheduled_at=info.scheduled_at,
            started_at=info.started_at,
            finished_at=info.finished_at,
        )


class JobListOut(msgspec.Struct, kw_only=True):
    data: list[JobOut]


async def queue_operations_from(svcs_container: SvcsContainer) -> QueueOperations:
    jobs, database, ids, clock = await svcs_container.aget(JobQueue, Database, Ids, Clock)
    return QueueOperations(jobs=jobs, database=database, ids=ids, clock=clock)


class AdminQueuesController(Controller):
    path = "/admin/queues"
    tags = ["administration"]  # noqa: RUF012
    dependencies = PRINCIPAL_DEPENDENCY
    security = BEARER_SECURITY

    @get("/", responses=problem_responses(*_ADMIN_PROBLEMS))
    async def list_queues(self, principal: CurrentPrincipal, svcs_container: SvcsContainer) -> QueueListOut:
        """Per queue: jobs queued, running, failed, complete and aborted (finished ones while their
        results are kept), throughput (jobs finished per minute over the last five minutes, counted
        by every worker in the queue's store) and the age of the oldest job waiting to run."""
        require_operator(principal)
        operations = await queue_operations_from(svcs_container)
        return QueueListOut(data=await operations.overview())

    @get("/{queue:str}", responses=problem_responses(*_JOB_PROBLEMS))
    async def get_queue(
        self, queue: FromPath[str], principal: CurrentPrincipal, svcs_container: SvcsContainer
    ) -> QueueOverview:
        require_operator(principal)
        return await (await queue_operations_from(svcs_container)).queue(queue)

    @get("/{queue:str}/failed", responses=problem_responses(*_JOB_PROBLEMS))
    async def failed_jobs(
        self,
        queue: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
        limit: FromQuery[int] = 20,
    ) -> JobListOut:
        """The most recently failed jobs still on record, newest first (at most 100)."""
        require_operator(principal)
        operations = await queue_operations_from(svcs_container)
        return JobListOut(data=[JobOut.of(job) for job in await operations.failed_jobs(queue, limit)])

    @get("/{queue:str}/jobs/{key:str}", responses=problem_responses(*_JOB_PROBLEMS))
    async def get_job(
        self,
        queue: FromPath[str],
        key: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> JobOut:
        require_operator(principal)
        return JobOut.of(await (await queue_operations_from(svcs_container)).job(queue, key))

    @post(
        "/{queue:str}/jobs/{key:str}/retry", status_code=202, responses=problem_responses(*_ACTION_PROBLEMS)
    )
    async def retry_job(
        self,
        request: Request[Any, Any, Any],
        queue: FromPath[str],
        key: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> JobOut:
        """Queue a failed or aborted job again, with all its attempts (audited). 409
        `invalid_state` for a job that is queued, running or complete."""
        require_operator(principal)
        operations = await queue_operations_from(svcs_container)
        job = await operations.retry(queue, key, actor_id=principal.user.id, caller=caller_of(request))
        return JobOut.of(job)

    @post(
        "/{queue:str}/jobs/{key:str}/abort", status_code=202, responses=problem_responses(*_ACTION_PROBLEMS)
    )
    async def abort_job(
        self,
        request: Request[Any, Any, Any],
        queue: FromPath[str],
        key: FromPath[str],
        principal: CurrentPrincipal,
        svcs_container: SvcsContainer,
    ) -> JobOut:
        """Stop a queued or running job (a running one stops at its worker's next abort check;
        audited). 409 `invalid_state` for a job that has finished."""
        require_operator(principal)
        operations = await queue_operations_from(svcs_container)
        job = await operations.abort(queue, key, actor_id=principal.user.id, caller=caller_of(request))
        return JobOut.of(job)
