"""The worker's job functions, run directly against the in-memory wiring."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import svcs

from adapters.memory.mailer import MemoryMailer
from core.accounts.sessions import new_session
from core.ports import Clock, Mailer, SessionStore
from entrypoints.settings import settings_from_mapping
from entrypoints.wiring import service_registry
from entrypoints.worker import MAINTENANCE_JOBS, job_handlers

ENVIRON = {
    "PICTOR_DATABASE_URL": "memory://",
    "PICTOR_VALKEY_URL": "memory://",
    "PICTOR_STORAGE_URL": "memory://",
    "PICTOR_QUEUE_URL": "memory://",
    "PICTOR_SMTP_URL": "memory://",
    "PICTOR_SECRET_URL_SIGNING_KEY": "k",
}


class Context:
    queue = "maintenance"
    key = "test"
    attempt = 1
    correlation_id = None

    async def heartbeat(self) -> None:
        return None

    async def progress(self, fraction: float) -> None:
        return None


async def test_every_cron_job_has_a_handler(tmp_path: Path):
    settings = settings_from_mapping({**ENVIRON, "PICTOR_DATA_DIR": str(tmp_path)})
    async with service_registry(settings, environ=ENVIRON) as registry:
        handlers = job_handlers(registry)
    assert {job.function for job in MAINTENANCE_JOBS} <= set(handlers)


async def test_expired_sessions_are_cleaned_up(tmp_path: Path):
    settings = settings_from_mapping({**ENVIRON, "PICTOR_DATA_DIR": str(tmp_path)})
    async with service_registry(settings, environ=ENVIRON) as registry:
        async with svcs.Container(registry) as container:
            sessions, clock = await container.aget(SessionStore, Clock)
        now = clock.now()
        await sessions.create(
            new_session(session_id="s1", user_id="u1", token_hash="h1", now=now - timedelta(days=30))
        )
        await sessions.create(new_session(session_id="s2", user_id="u1", token_hash="h2", now=now))
        result = await job_handlers(registry)["delete_expired_sessions"](Context())
        assert result == {"deleted": 1}
        assert await sessions.get("h2") is not None


async def test_email_jobs_for_unknown_users_send_nothing(tmp_path: Path):
    settings = settings_from_mapping({**ENVIRON, "PICTOR_DATA_DIR": str(tmp_path)})
    async with service_registry(settings, environ=ENVIRON) as registry:
        handlers = job_handlers(registry)
        assert await handlers["send_password_reset_email"](Context(), email="nobody@example.com") is False
        assert (
            await handlers["send_verification_email"](
                Context(), user_id="0192f0c2-8f2a-7c1e-9a51-5b1c2d3e4f50"
            )
            is False
        )
        async with svcs.Container(registry) as container:
            mailer: MemoryMailer = await container.aget(Mailer)
        assert mailer.sent == []
