"""An in-process SessionStore: the fake for tests and the store of a one-process, in-memory setup."""

from __future__ import annotations

from datetime import datetime

import msgspec

from core.accounts.sessions import Session


class MemorySessionStore:
    """Implements `core.ports.SessionStore` in a dict keyed by token hash.

    Like the PostgreSQL store, it keeps sessions until they are deleted, expired or not (callers
    check expiry); `delete_expired` is the clean-up a maintenance job calls.
    """

    def __init__(self) -> None:
        self._sessions: dict[str, Session] = {}

    async def create(self, session: Session) -> None:
        self._sessions[session.token_hash] = session

    async def get(self, token_hash: str) -> Session | None:
        return self._sessions.get(token_hash)

    async def touch(self, token_hash: str, last_seen_at: datetime) -> None:
        session = self._sessions.get(token_hash)
        if session is not None:
            self._sessions[token_hash] = msgspec.structs.replace(session, last_seen_at=last_seen_at)

    async def list_for_user(self, user_id: str) -> list[Session]:
        return sorted(
            (s for s in self._sessions.values() if s.user_id == user_id),
            key=lambda s: (s.created_at, s.id),
            reverse=True,
        )

    async def delete(self, user_id: str, session_id: str) -> bool:
        for token_hash, session in self._sessions.items():
            if session.user_id == user_id and session.id == session_id:
                del self._sessions[token_hash]
                return True
        return False

    async def delete_all_for_user(self, user_id: str, *, except_session_id: str | None = None) -> int:
        ending = [
            token_hash
            for token_hash, s in self._sessions.items()
            if s.user_id == user_id and s.id != except_session_id
        ]
        for token_hash in ending:
            del self._sessions[token_hash]
        return len(ending)

    async def delete_expired(self, now: datetime) -> int:
        """Remove sessions past their idle or absolute expiry at `now`; returns how many."""
        expired = [token_hash for token_hash, s in self._sessions.items() if not s.is_valid_at(now)]
        for token_hash in expired:
            del self._sessions[token_hash]
        return len(expired)

    async def ping(self) -> None:
        return None
