"""`pictor worker` for real: SAQ on Valkey and on PostgreSQL, a job that calls a use case, SIGTERM."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from adapters.postgres.database import PostgresDatabase
from adapters.postgres.migrations import apply_migrations
from adapters.postgres.pool import open_pool
from adapters.queue.factory import job_queue_from_url
from core.jobs import MAINTENANCE, JobSpec, JobState
from core.outbox import OutboxMessage
from tests.e2e.processes import PictorProcess, clean_environ
from tests.support.services import unique_name

pytestmark = pytest.mark.e2e


async def _prepare(database_url: str) -> None:
    await apply_migrations(database_url)
    pool = await open_pool(database_url, min_size=1, max_size=1, name="e2e-worker")
    try:
        async with PostgresDatabase(pool).unit_of_work() as uow:
            for n in range(3):
                await uow.outbox.add(
                    OutboxMessage(id=f"m{n}", type="e2e.happened", occurred_at=datetime.now(UTC), payload={})
                )
            await uow.commit()
    finally:
        await pool.close()


async def _run_publish_job(queue_url: str, namespace: str, process: PictorProcess) -> dict[str, object]:
    queue = job_queue_from_url(queue_url, name_prefix=namespace)
    try:
        key = unique_name("publish")
        assert await queue.enqueue(JobSpec(queue=MAINTENANCE, function="publish_outbox", key=key)) is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            info = await queue.status(MAINTENANCE, key)
            if info is not None and info.state.is_finished:
                assert info.state is JobState.COMPLETE, (info, process.output())
                return dict(info.result)
            await asyncio.sleep(0.1)
        raise AssertionError(f"the job did not finish:\n{process.output()}")
    finally:
        await queue.close()


async def _unpublished(database_url: str) -> int:
    import psycopg

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        row = await (await conn.execute("SELECT count(*) FROM outbox WHERE published_at IS NULL")).fetchone()
    assert row is not None
    return int(row[0])


@pytest.mark.parametrize("backend", ["valkey", "postgres"])
def test_worker_runs_jobs_and_stops_cleanly(
    backend: str, postgres_url: str, valkey_url: str, tmp_path: Path
) -> None:
    asyncio.run(_prepare(postgres_url))
    namespace = unique_name("w").replace("_", "-")
    queue_url = valkey_url if backend == "valkey" else postgres_url
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_DATABASE_URL": postgres_url,
            "PICTOR_QUEUE_URL": queue_url,
            "PICTOR_VALKEY_URL": valkey_url,
            "PICTOR_NAMESPACE": namespace,
            "PICTOR_SECRET_URL_SIGNING_KEY": "k",
            "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
            "PICTOR_STORAGE_URL": "memory://",
        }
    )
    worker = PictorProcess(["worker", "--queues", "maintenance"], env, tmp_path / "worker.log")
    try:
        # The job and the worker's outbox relay share the backlog (they skip each other's rows):
        # together they publish all three rows, whichever of them gets there first.
        result = asyncio.run(_run_publish_job(queue_url, namespace, worker))
        assert set(result) == {"published"} and 0 <= int(str(result["published"])) <= 3
        deadline = time.monotonic() + 30
        while asyncio.run(_unpublished(postgres_url)) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert asyncio.run(_unpublished(postgres_url)) == 0, worker.output()
        assert worker.terminate(timeout=60) == 0, worker.output()
    finally:
        worker.kill()
    assert '"worker stopped"' in worker.output()  # JSON logs, and a clean stop


def test_worker_refuses_unknown_queues(tmp_path: Path) -> None:
    env = clean_environ({"PICTOR_DATA_DIR": str(tmp_path), "PICTOR_DATABASE_URL": "memory://"})
    env["PICTOR_QUEUE_URL"] = "memory://"
    worker = PictorProcess(["worker", "--queues", "nonsense"], env, tmp_path / "worker.log")
    try:
        assert worker.process.wait(timeout=60) != 0
        assert "unknown queue" in worker.output()
    finally:
        worker.kill()


def test_serve_refuses_pending_migrations_with_a_message(postgres_url: str, tmp_path: Path) -> None:
    env = clean_environ(
        {
            "PICTOR_DATA_DIR": str(tmp_path),
            "PICTOR_DATABASE_URL": postgres_url,
            "PICTOR_VALKEY_URL": "memory://",
            "PICTOR_STORAGE_URL": "memory://",
            "PICTOR_SECRET_URL_SIGNING_KEY": "k",
            "PICTOR_SECRET_WEBHOOK_SECRET_KEY": "w",
        }
    )
    serve = PictorProcess(["serve", "--port", "1"], env, tmp_path / "serve.log")
    try:
        assert serve.process.wait(timeout=60) == 2
        output = serve.output()
        assert "pending migration(s): 0001_outbox" in output
        assert "Traceback" not in output
    finally:
        serve.kill()

    migrate = PictorProcess(["migrate"], env, tmp_path / "migrate.log")
    try:
        assert migrate.process.wait(timeout=60) == 0, migrate.output()
        assert "0001_outbox" in migrate.output()
        assert "migration(s) applied" in migrate.output()
    finally:
        migrate.kill()
    listing = PictorProcess(["migrate", "--list"], env, tmp_path / "list.log")
    try:
        assert listing.process.wait(timeout=60) == 0
        assert "0 migration(s) pending" in listing.output()
    finally:
        listing.kill()
