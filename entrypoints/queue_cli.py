"""`pictor queue`: the job queues from the command line (stats, failed jobs, retry, abort).

The same use cases as `/admin/queues`, over the same wiring; retries and aborts are audited with
no actor (an operator at the console) and a `cli:` correlation id.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgspec
import svcs

from core.accounts.context import Caller
from core.jobs import JobInfo
from core.ports import Clock, Database, Ids, JobQueue
from core.queue_operations import QueueOperations, QueueOverview
from entrypoints.settings import Settings

T = TypeVar("T")


def _say(text: str) -> None:
    sys.stdout.write(text + "\n")


def add_queue_commands(commands: Any) -> None:
    """Add `queue` and its subcommands to the `pictor` parser's subcommands."""
    queue = commands.add_parser("queue", help="inspect the job queues; retry or abort a job")
    queue_commands = queue.add_subparsers(dest="queue_command", required=True)

    stats = queue_commands.add_parser("stats", help="jobs per state, throughput and oldest job, per queue")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    stats.set_defaults(handler=_stats)

    failed = queue_commands.add_parser("failed", help="the most recently failed jobs of a queue")
    failed.add_argument("queue")
    failed.add_argument("--limit", type=int, default=20, help="at most this many (1-100, default 20)")
    failed.add_argument("--json", action="store_true", help="print JSON, errors in full")
    failed.set_defaults(handler=_failed)

    retry = queue_commands.add_parser("retry", help="queue a failed or aborted job again (audited)")
    retry.add_argument("queue")
    retry.add_argument("key")
    retry.set_defaults(handler=_retry)

    abort = queue_commands.add_parser("abort", help="stop a queued or running job (audited)")
    abort.add_argument("queue")
    abort.add_argument("key")
    abort.set_defaults(handler=_abort)


def _with_operations(
    settings: Settings, args: argparse.Namespace, act: Callable[[QueueOperations], Awaitable[T]]
) -> T:
    async def run() -> T:
        from entrypoints.wiring import service_registry

        async with (
            service_registry(settings, environ=args.environ) as registry,
            svcs.Container(registry) as container,
        ):
            jobs, database, ids, clock = await container.aget(JobQueue, Database, Ids, Clock)
            return await act(QueueOperations(jobs=jobs, database=database, ids=ids, clock=clock))

    return asyncio.run(run())


def _caller(command: str) -> Caller:
    return Caller(correlation_id=f"cli:queue-{command}")


def _stats(settings: Settings, args: argparse.Namespace) -> int:
    overview = _with_operations(settings, args, lambda ops: ops.overview())
    if args.json:
        _say(json.dumps(msgspec.to_builtins(overview), indent=2))
    else:
        _say(format_stats(overview))
    return 0


def format_stats(overview: list[QueueOverview]) -> str:
    """A table of the queues, one line each."""
    header = ("queue", "queued", "running", "failed", "complete", "aborted", "per min", "oldest")
    rows = [header]
    for q in overview:
        oldest = "-" if q.oldest_queued_age_seconds is None else f"{q.oldest_queued_age_seconds:.1f}s"
        rows.append(
            (
                q.queue,
                str(q.queued),
                str(q.running),
                str(q.failed),
                str(q.complete),
                str(q.aborted),
                f"{q.throughput_per_minute:.1f}",
                oldest,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    window = overview[0].throughput_window_seconds if overview else 0
    return "\n".join([*lines, f"(per min: jobs finished per minute over the last {window:.0f} s)"])


def _failed(settings: Settings, args: argparse.Namespace) -> int:
    jobs = _with_operations(settings, args, lambda ops: ops.failed_jobs(args.queue, args.limit))
    if args.json:
        _say(json.dumps(msgspec.to_builtins(jobs), indent=2))
        return 0
    if not jobs:
        _say(f"no failed jobs on record in the {args.queue} queue")
    for job in jobs:
        _say(_describe(job))
    return 0


def _describe(job: JobInfo) -> str:
    finished = job.finished_at.isoformat() if job.finished_at else "-"
    last_line = (job.error or "").strip().splitlines()[-1:] or [""]
    return f"{job.key}  {job.function}  {job.state.value}  tries={job.attempts}  {finished}  {last_line[0]}"


def _retry(settings: Settings, args: argparse.Namespace) -> int:
    job = _with_operations(
        settings, args, lambda ops: ops.retry(args.queue, args.key, actor_id=None, caller=_caller("retry"))
    )
    _say(f"{job.queue}/{job.key} queued again ({job.function})")
    return 0


def _abort(settings: Settings, args: argparse.Namespace) -> int:
    job = _with_operations(
        settings, args, lambda ops: ops.abort(args.queue, args.key, actor_id=None, caller=_caller("abort"))
    )
    _say(f"{job.queue}/{job.key} aborted ({job.function})")
    return 0
