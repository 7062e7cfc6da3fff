"""What a job run by a SAQ worker sees of itself: the JobContext port over `saq.job.Job`."""

from __future__ import annotations

from saq.job import Job

from adapters.queue.saq_backends import META_CORRELATION_ID


class SaqJobContext:
    """JobContext for a SAQ job. Heartbeats and progress are writes of the job to the store."""

    __slots__ = ("_job",)

    def __init__(self, job: Job) -> None:
        self._job = job

    @property
    def queue(self) -> str:
        queue = self._job.queue
        if queue is None:  # a job a worker runs always has its queue
            raise RuntimeError("the job has no queue")
        return queue.name.rpartition(":")[2]  # SAQ's name is `<name_prefix>:<queue>`

    @property
    def key(self) -> str:
        return self._job.key

    @property
    def attempt(self) -> int:
        return self._job.attempts  # the worker counts the try before it starts the function

    @property
    def correlation_id(self) -> str | None:
        value = self._job.meta.get(META_CORRELATION_ID)
        return value if isinstance(value, str) else None

    async def heartbeat(self) -> None:
        await self._job.update()  # stamps `touched`, which the sweep compares with `heartbeat`

    async def progress(self, fraction: float) -> None:
        if not 0.0 <= fraction <= 1.0:
            raise ValueError("progress is a fraction in [0, 1]")
        await self._job.update(progress=fraction)
