"""/admin/queues over the in-memory wiring: figures per queue, failed jobs, retry and abort.

The app's JobQueue is the in-memory one; the tests run a MemoryWorker on it with handlers of
their own, so jobs finish (or fail) as each test needs.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import svcs
from litestar import Litestar
from litestar.testing import AsyncTestClient

from adapters.memory.job_queue import MemoryJobQueue, MemoryWorker
from core.jobs import EMAIL, GENERATION, QUEUES, WEBHOOKS, JobSpec
from core.ports import JobContext, JobHandler, JobQueue
from entrypoints.http.svcs_plugin import registry_of
from tests.support.accounts import admin_session, bearer, login, register


async def _job_queue(client: AsyncTestClient[Litestar]) -> MemoryJobQueue:
    async with svcs.Container(registry_of(client.app)) as container:
        queue = await container.aget(JobQueue)
    assert isinstance(queue, MemoryJobQueue)
    return queue


@pytest.fixture
async def admin(client: AsyncTestClient[Litestar]) -> str:
    """A logged-in administrator's session token."""
    return await admin_session(client, "ops@example.com", display_name="Ops")


@pytest.fixture
async def start_worker(
    client: AsyncTestClient[Litestar],
) -> AsyncIterator[Callable[[str, dict[str, JobHandler]], Any]]:
    workers: list[MemoryWorker] = []

    async def start(queue: str, handlers: dict[str, JobHandler]) -> MemoryWorker:
        worker = MemoryWorker(await _job_queue(client), queues=[queue], handlers=handlers)
        await worker.start()
        workers.append(worker)
        return worker

    yield start
    for worker in workers:
        await worker.stop()


async def _wait_state(
    client: AsyncTestClient[Litestar], token: str, queue: str, key: str, state: str
) -> None:
    deadline = time.monotonic() + 10  # only a guard against a hang
    while time.monotonic() < deadline:
        job = await client.get(f"/admin/queues/{queue}/jobs/{key}", headers=bearer(token))
        if job.status_code == 200 and job.json()["state"] == state:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{queue}/{key} never became {state}")


async def _ok(ctx: JobContext, **_: Any) -> str:
    return "done"


async def _broken(ctx: JobContext, **_: Any) -> None:
    raise RuntimeError(f"mail server said no on try {ctx.attempt}")


async def test_only_admins_in_person_operate_the_queues(
    client: AsyncTestClient[Litestar], admin: str
) -> None:
    await register(client, "user@example.com")
    user = await login(client, "user@example.com")
    admin_key = (await client.post("/v1/api-keys", json={"name": "ops"}, headers=bearer(admin))).json()["key"]
    for method, path in (
        ("GET", "/admin/queues"),
        ("GET", f"/admin/queues/{EMAIL}/failed"),
        ("GET", f"/admin/queues/{EMAIL}/jobs/k"),
        ("POST", f"/admin/queues/{EMAIL}/jobs/k/retry"),
        ("POST", f"/admin/queues/{EMAIL}/jobs/k/abort"),
    ):
        anonymous = await client.request(method, path)
        assert anonymous.status_code == 401, (method, path)
        for token in (user, admin_key):
            refused = await client.request(method, path, headers=bearer(token))
            assert refused.status_code == 403, (method, path, refused.text)
            assert refused.json()["code"] == "forbidden"


async def test_the_overview_counts_jobs_and_throughput_per_queue(
    client: AsyncTestClient[Litestar], admin: str, start_worker: Any
) -> None:
    jobs = await _job_queue(client)
    empty = await client.get("/admin/queues", headers=bearer(admin))
    assert empty.status_code == 200
    assert [q["queue"] for q in empty.json()["data"]] == list(QUEUES)
    assert all(q["throughput_per_minute"] == 0 for q in empty.json()["data"])

    await start_worker(EMAIL, {"send": _ok, "bounce": _broken})
    for n in range(3):
        await jobs.enqueue(JobSpec(queue=EMAIL, function="send", key=f"mail-{n}"))
    await jobs.enqueue(JobSpec(queue=EMAIL, function="bounce", key="bounce", attempts=1))
    await jobs.enqueue(JobSpec(queue=GENERATION, function="render", key="waiting"))  # no worker there
    for key, state in (
        ("mail-0", "complete"),
        ("mail-1", "complete"),
        ("mail-2", "complete"),
        ("bounce", "failed"),
    ):
        await _wait_state(client, admin, EMAIL, key, state)

    overview = {
        q["queue"]: q for q in (await client.get("/admin/queues", headers=bearer(admin))).json()["data"]
    }
    email = overview[EMAIL]
    assert (email["queued"], email["running"], email["complete"], email["failed"], email["aborted"]) == (
        0,
        0,
        3,
        1,
        0,
    )
    # Four jobs finished within the five-minute window.
    assert email["throughput_window_seconds"] == 300
    assert email["throughput_per_minute"] == pytest.approx(4 / 5)
    assert email["oldest_queued_age_seconds"] is None
    generation = overview[GENERATION]
    assert (generation["queued"], generation["throughput_per_minute"]) == (1, 0)
    assert generation["oldest_queued_age_seconds"] >= 0

    one = await client.get(f"/admin/queues/{EMAIL}", headers=bearer(admin))
    assert one.status_code == 200 and one.json()["complete"] == 3
    unknown = await client.get("/admin/queues/nope", headers=bearer(admin))
    assert (unknown.status_code, unknown.json()["code"]) == (404, "not_found")


async def test_a_failed_job_is_listed_retried_and_audited(
    client: AsyncTestClient[Litestar], admin: str, start_worker: Any
) -> None:
    jobs = await _job_queue(client)
    fixed = asyncio.Event()

    async def flaky(ctx: JobContext, to: str) -> str:
        if not fixed.is_set():
            raise RuntimeError(f"mail server said no on try {ctx.attempt}")
        return f"sent to {to}"

    await start_worker(EMAIL, {"flaky": flaky})
    await jobs.enqueue(
        JobSpec(queue=EMAIL, function="flaky", key="welcome:1", kwargs={"to": "a@example.com"}, attempts=1)
    )
    await _wait_state(client, admin, EMAIL, "welcome:1", "failed")

    failed = await client.get(f"/admin/queues/{EMAIL}/failed", headers=bearer(admin))
    assert failed.status_code == 200
    [listed] = failed.json()["data"]
    assert (listed["key"], listed["function"], listed["state"], listed["attempts"]) == (
        "welcome:1",
        "flaky",
        "failed",
        1,
    )
    assert "mail server said no on try 1" in listed["error"]
    for bad_limit in (0, 101):
        refused = await client.get(f"/admin/queues/{EMAIL}/failed?limit={bad_limit}", headers=bearer(admin))
        assert (refused.status_code, refused.json()["code"]) == (422, "validation_failed")

    fixed.set()
    retried = await client.post(f"/admin/queues/{EMAIL}/jobs/welcome:1/retry", headers=bearer(admin))
    assert retried.status_code == 202, retried.text
    assert (retried.json()["state"], retried.json()["attempts"]) == ("queued", 0)
    await _wait_state(client, admin, EMAIL, "welcome:1", "complete")
    done = (await client.get(f"/admin/queues/{EMAIL}/jobs/welcome:1", headers=bearer(admin))).json()
    assert done["result"] == "sent to a@example.com"
    assert (await client.get(f"/admin/queues/{EMAIL}/failed", headers=bearer(admin))).json()["data"] == []

    again = await client.post(f"/admin/queues/{EMAIL}/jobs/welcome:1/retry", headers=bearer(admin))
    assert (again.status_code, again.json()["code"]) == (409, "invalid_state")
    assert "complete" in again.json()["detail"]
    missing = await client.post(f"/admin/queues/{EMAIL}/jobs/nope/retry", headers=bearer(admin))
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")

    me = (await client.get("/v1/me", headers=bearer(admin))).json()
    audit = (await client.get("/admin/audit?action=job.retried", headers=bearer(admin))).json()["data"]
    assert len(audit) == 1
    assert (audit[0]["actor_id"], audit[0]["target_type"], audit[0]["target_id"]) == (
        me["id"],
        "job",
        f"{EMAIL}/welcome:1",
    )
    assert audit[0]["details"]["function"] == "flaky"


async def test_a_waiting_job_can_be_aborted_once(client: AsyncTestClient[Litestar], admin: str) -> None:
    jobs = await _job_queue(client)
    await jobs.enqueue(JobSpec(queue=WEBHOOKS, function="deliver", key="delivery:1", delay_seconds=60))

    aborted = await client.post(f"/admin/queues/{WEBHOOKS}/jobs/delivery:1/abort", headers=bearer(admin))
    assert aborted.status_code == 202, aborted.text
    assert aborted.json()["state"] == "aborted"
    again = await client.post(f"/admin/queues/{WEBHOOKS}/jobs/delivery:1/abort", headers=bearer(admin))
    assert (again.status_code, again.json()["code"]) == (409, "invalid_state")
    missing = await client.post(f"/admin/queues/{WEBHOOKS}/jobs/nope/abort", headers=bearer(admin))
    assert (missing.status_code, missing.json()["code"]) == (404, "not_found")
    wrong_queue = await client.post("/admin/queues/nope/jobs/delivery:1/abort", headers=bearer(admin))
    assert (wrong_queue.status_code, wrong_queue.json()["code"]) == (404, "not_found")

    audit = (await client.get("/admin/audit?action=job.aborted", headers=bearer(admin))).json()["data"]
    assert [a["target_id"] for a in audit] == [f"{WEBHOOKS}/delivery:1"]

    # An aborted job may be retried: it is queued again, for now rather than its old delay.
    retried = await client.post(f"/admin/queues/{WEBHOOKS}/jobs/delivery:1/retry", headers=bearer(admin))
    assert retried.status_code == 202
    assert retried.json()["state"] == "queued"
    assert retried.json()["scheduled_at"] is None
