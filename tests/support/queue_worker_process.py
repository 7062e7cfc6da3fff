"""A queue worker in a process of its own, for tests that kill a worker in the middle of a job.

    python -m tests.support.queue_worker_process URL NAME_PREFIX QUEUE FUNCTION [--lifetime S]
        [--sweep-interval S]

It serves QUEUE with one handler, FUNCTION, that heartbeats every 50 ms and never returns, so the
job stays active (and alive) until the process is killed. After `--lifetime` seconds it stops on its
own, so a test that fails before killing it leaves nothing running for long. Its sweep interval is
short because on Valkey a sweep locks out the others for that long.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from adapters.queue.factory import job_queue_from_url, job_worker_for
from core.ports import JobContext


async def heartbeat_forever(ctx: JobContext, **_: Any) -> None:
    while True:
        await ctx.heartbeat()
        await asyncio.sleep(0.05)


async def serve(
    url: str, name_prefix: str, queue: str, function: str, *, lifetime: float, sweep_interval: float
) -> None:
    job_queue = job_queue_from_url(url, name_prefix=name_prefix)
    worker = job_worker_for(
        job_queue,
        queues=[queue],
        handlers={function: heartbeat_forever},
        concurrency=1,
        sweep_interval_seconds=sweep_interval,
    )
    try:
        await worker.start()
        await asyncio.sleep(lifetime)
        await worker.stop()
    finally:
        await job_queue.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("url")
    parser.add_argument("name_prefix")
    parser.add_argument("queue")
    parser.add_argument("function")
    parser.add_argument("--lifetime", type=float, default=60.0)
    parser.add_argument("--sweep-interval", type=float, default=0.2)
    args = parser.parse_args()
    asyncio.run(
        serve(
            args.url,
            args.name_prefix,
            args.queue,
            args.function,
            lifetime=args.lifetime,
            sweep_interval=args.sweep_interval,
        )
    )


if __name__ == "__main__":
    main()
