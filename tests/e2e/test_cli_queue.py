"""`pictor queue` for real, on SAQ's PostgreSQL queue: stats, failed jobs, retry and abort (audited)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from adapters.postgres.migrations import apply_migrations
from adapters.queue.factory import job_queue_from_url
from adapters.queue.saq_queue import SaqJobQueue
from adapters.queue.saq_worker import SaqWorkerPool
from core.jobs import EMAIL, WEBHOOKS, JobSpec, JobState
from core.ports import JobContext
from tests.e2e.processes import clean_environ
from tests.support.services import unique_name

pytestmark = pytest.mark.e2e


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "entrypoints.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def _fail_a_job_and_delay_another(url: str, namespace: str) -> None:
    queue = job_queue_from_url(url, name_prefix=namespace)
    assert isinstance(queue, SaqJobQueue)

    async def bounce(ctx: JobContext, **_: Any) -> None:
        raise RuntimeError("the mail server said no")

    worker = SaqWorkerPool(queue, queues=[EMAIL], handlers={"bounce": bounce}, dequeue_timeout_seconds=0.1)
    try:
        await worker.start()
        await queue.enqueue(JobSpec(queue=EMAIL, function="bounce", key="welcome:1", attempts=1))
        await queue.enqueue(JobSpec(queue=WEBHOOKS, function="deliver", key="delivery:1", delay_seconds=600))
        deadline = time.monotonic() + 30  # only against a hang
        while (info := await queue.status(EMAIL, "welcome:1")) is None or info.state is not JobState.FAILED:
            assert time.monotonic() < deadline, info
            await asyncio.sleep(0.05)
    finally:
        await worker.stop()
        await queue.close()


async def _audit(url: str) -> list[tuple[str, str | None, str, str | None]]:
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        cursor = await conn.execute(
            "SELECT action, actor_id, target_id, correlation_id FROM audit_log ORDER BY id"
        )
        return [tuple(row) for row in await cursor.fetchall()]  # type: ignore[misc]


def test_queue_stats_failed_retry_and_abort(postgres_url: str, tmp_path: Path) -> None:
    asyncio.run(apply_migrations(postgres_url))
    namespace = unique_name("q").replace("_", "-")
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_DATABASE_URL": postgres_url,
            "PICTOR_VALKEY_URL": "memory://",
            "PICTOR_STORAGE_URL": "memory://",
            "PICTOR_NAMESPACE": namespace,
            "PICTOR_SECRET_URL_SIGNING_KEY": "k",
            "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        }
    )
    asyncio.run(_fail_a_job_and_delay_another(postgres_url, namespace))

    stats = _run(["queue", "stats", "--json"], env)
    assert stats.returncode == 0, stats.stderr
    by_queue = {q["queue"]: q for q in json.loads(stats.stdout)}
    assert (by_queue[EMAIL]["failed"], by_queue[EMAIL]["queued"]) == (1, 0)
    assert by_queue[EMAIL]["throughput_per_minute"] > 0
    assert by_queue[WEBHOOKS]["queued"] == 1
    table = _run(["queue", "stats"], env)
    assert table.returncode == 0, table.stderr
    assert table.stdout.splitlines()[0].split() == [
        "queue",
        "queued",
        "running",
        "failed",
        "complete",
        "aborted",
        "per",
        "min",
        "oldest",
    ]

    failed = _run(["queue", "failed", EMAIL], env)
    assert failed.returncode == 0, failed.stderr
    assert failed.stdout.startswith("welcome:1  bounce  failed  tries=1")
    assert "the mail server said no" in failed.stdout

    retried = _run(["queue", "retry", EMAIL, "welcome:1"], env)
    assert retried.returncode == 0, retried.stderr
    assert retried.stdout.strip() == f"{EMAIL}/welcome:1 queued again (bounce)"
    again = _run(["queue", "retry", EMAIL, "welcome:1"], env)
    assert again.returncode == 2
    assert "only a failed or aborted job can be retried; this one is queued" in again.stderr.lower()

    aborted = _run(["queue", "abort", WEBHOOKS, "delivery:1"], env)
    assert aborted.returncode == 0, aborted.stderr
    missing = _run(["queue", "abort", WEBHOOKS, "nope"], env)
    assert missing.returncode == 2 and "No job 'nope'" in missing.stderr
    assert "Traceback" not in missing.stderr + again.stderr

    assert asyncio.run(_audit(postgres_url)) == [
        ("job.retried", None, f"{EMAIL}/welcome:1", "cli:queue-retry"),
        ("job.aborted", None, f"{WEBHOOKS}/delivery:1", "cli:queue-abort"),
    ]
