"""The SessionStore port on PostgreSQL: the `sessions` table (migration 0003)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime
from typing import Any, Final

from adapters.postgres.pool import PostgresPool
from adapters.postgres.row_values import aware
from core.accounts.sessions import Session

_COLUMNS: Final = (
    "id, user_id, token_hash, created_at, last_seen_at, expires_at, idle_timeout_seconds, ip, user_agent"
)


class PostgresSessionStore:
    """Implements `core.ports.SessionStore` on a pool from `adapters.postgres.pool.open_pool`.

    Each method is one autocommit statement: none needs a transaction. Sessions stay until they
    are deleted, expired or not (callers check expiry); `delete_expired` is the clean-up a
    maintenance job calls. Rows go when their user does (ON DELETE CASCADE). The pool belongs to
    the caller, who closes it.
    """

    def __init__(self, pool: PostgresPool, *, ping_timeout: float = 2.0) -> None:
        self._pool = pool
        self._ping_timeout = ping_timeout

    async def create(self, session: Session) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                f"INSERT INTO sessions ({_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                (
                    session.id,
                    session.user_id,
                    session.token_hash,
                    aware(session.created_at, "created_at"),
                    aware(session.last_seen_at, "last_seen_at"),
                    aware(session.expires_at, "expires_at"),
                    session.idle_timeout_seconds,
                    session.ip,
                    session.user_agent,
                ),
            )

    async def get(self, token_hash: str) -> Session | None:
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE token_hash = %s", (token_hash,)
            )
            row = await cursor.fetchone()
        return None if row is None else _session(row)

    async def touch(self, token_hash: str, last_seen_at: datetime) -> None:
        async with self._pool.connection() as conn:
            await conn.execute(
                "UPDATE sessions SET last_seen_at = %s WHERE token_hash = %s",
                (aware(last_seen_at, "last_seen_at"), token_hash),
            )

    async def list_for_user(self, user_id: str) -> list[Session]:
        if not _is_uuid(user_id):
            return []
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                f"SELECT {_COLUMNS} FROM sessions WHERE user_id = %s ORDER BY created_at DESC, id DESC",
                (user_id,),
            )
            return [_session(row) for row in await cursor.fetchall()]

    async def delete(self, user_id: str, session_id: str) -> bool:
        # The session id comes from a URL: anything that is not a UUID names no session.
        if not (_is_uuid(user_id) and _is_uuid(session_id)):
            return False
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM sessions WHERE user_id = %s AND id = %s", (user_id, session_id)
            )
            return cursor.rowcount > 0

    async def delete_all_for_user(self, user_id: str, *, except_session_id: str | None = None) -> int:
        if not _is_uuid(user_id):
            return 0
        keep = except_session_id if except_session_id is not None and _is_uuid(except_session_id) else None
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                "DELETE FROM sessions WHERE user_id = %s AND id IS DISTINCT FROM %s::uuid", (user_id, keep)
            )
            return cursor.rowcount

    async def delete_expired(self, now: datetime) -> int:
        """Remove sessions past their idle or absolute expiry at `now`; returns how many.

        A sequential scan (idle expiry is computed per row): fine for a job that runs every few
        minutes over a table that holds only live-ish sessions.
        """
        async with self._pool.connection() as conn:
            cursor = await conn.execute(
                """
                DELETE FROM sessions
                WHERE expires_at <= %(now)s
                   OR last_seen_at + make_interval(secs => idle_timeout_seconds) <= %(now)s
                """,
                {"now": aware(now, "now")},
            )
            return cursor.rowcount

    async def ping(self) -> None:
        async with asyncio.timeout(self._ping_timeout):
            async with self._pool.connection(timeout=self._ping_timeout) as conn:
                await conn.execute("SELECT 1")


def _session(row: tuple[Any, ...]) -> Session:
    id_, user_id, token_hash, created_at, last_seen_at, expires_at, idle_timeout_seconds, ip, user_agent = row
    return Session(
        id=str(id_),
        user_id=str(user_id),
        token_hash=token_hash,
        created_at=created_at.astimezone(UTC),
        last_seen_at=last_seen_at.astimezone(UTC),
        expires_at=expires_at.astimezone(UTC),
        idle_timeout_seconds=idle_timeout_seconds,
        ip=ip,
        user_agent=user_agent,
    )


def _is_uuid(text: str) -> bool:
    """Whether `text` is a UUID in its canonical spelling, the only one the other stores match."""
    try:
        return str(uuid.UUID(text)) == text
    except ValueError:
        return False
