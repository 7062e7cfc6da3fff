"""The SessionStore port on Valkey: msgpack sessions that expire by themselves, indexed per user."""

from __future__ import annotations

import logging
import math
from datetime import datetime
from typing import Final

import msgspec
from valkey.asyncio import Valkey

from core.accounts.sessions import Session

logger = logging.getLogger(__name__)

_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(Session)

# KEYS[1] session key, KEYS[2] the user's index; ARGV[1] encoded session, ARGV[2] TTL in ms,
# ARGV[3] index member (the token hash), ARGV[4] its score (creation time). One atomic step, so a
# session is never stored without its index entry; the index lives as long as its longest-lived
# session.
_CREATE: Final = """
local ttl = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl)
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[3])
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

# KEYS and ARGV[1..2] as in _CREATE. Rewrites the session only if it still exists (XX): a touch
# racing with a logout must not bring the ended session back. Returns 1 when rewritten.
_TOUCH: Final = """
local ttl = tonumber(ARGV[2])
if not redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl, 'XX') then return 0 end
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
return 1
"""

# KEYS[1] the user's index; ARGV[1] the session key prefix, ARGV[2] a token hash to keep ('' for
# none). Ends every session the index holds when it runs, so a login that lands meanwhile is either
# ended too or happens after the call. Returns how many sessions still existed.
_END_ALL: Final = """
local ended = 0
for _, member in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  if member ~= ARGV[2] then
    ended = ended + redis.call('UNLINK', ARGV[1] .. member)
    redis.call('ZREM', KEYS[1], member)
  end
end
return ended
"""


class ValkeySessionStore:
    """Implements `core.ports.SessionStore` on Valkey (or Redis 7).

    Layout under `key_prefix`: each session msgpack-encoded at `{prefix}session:{token_hash}`,
    expiring when the session does (idle or absolute, whichever is first; each touch pushes the
    idle end out again), and a sorted set `{prefix}user_sessions:{user_id}` of the user's token
    hashes, scored by creation time. Index members whose session has expired are pruned when the
    user's sessions are listed or ended. TTLs are measured from the session's own times (not the
    server's clock), so they are right whatever clock the caller uses. Ending all of a user's
    sessions runs a script over keys it reads from the index, so this needs a standalone (or
    primary/replica) server, not Cluster, like `ValkeyCache`.
    """

    def __init__(self, client: Valkey, *, key_prefix: str = "pictor:") -> None:
        self._client = client
        self._prefix = key_prefix
        self._create = client.register_script(_CREATE)
        self._touch = client.register_script(_TOUCH)
        self._end_all = client.register_script(_END_ALL)

    async def create(self, session: Session) -> None:
        await self._create(
            keys=[self._session_key(session.token_hash), self._index_key(session.user_id)],
            args=[
                _encoder.encode(session),
                _ttl_ms(session),
                session.token_hash,
                session.created_at.timestamp(),
            ],
        )

    async def get(self, token_hash: str) -> Session | None:
        return _decode(await self._client.get(self._session_key(token_hash)))

    async def touch(self, token_hash: str, last_seen_at: datetime) -> None:
        session = await self.get(token_hash)
        if session is None:
            return
        touched = msgspec.structs.replace(session, last_seen_at=last_seen_at)
        await self._touch(
            keys=[self._session_key(token_hash), self._index_key(session.user_id)],
            args=[_encoder.encode(touched), _ttl_ms(touched)],
        )

    async def list_for_user(self, user_id: str) -> list[Session]:
        index = self._index_key(user_id)
        members: list[bytes] = await self._client.zrange(index, 0, -1)
        if not members:
            return []
        values = await self._client.mget([self._session_key(m.decode()) for m in members])
        sessions: list[Session] = []
        stale: list[bytes] = []
        for member, value in zip(members, values, strict=True):
            session = _decode(value)
            if session is None:
                stale.append(member)
            else:
                sessions.append(session)
        if stale:
            # Sessions are written together with their index entry, never after it: a member
            # without a session has expired or ended and cannot come back.
            await self._client.zrem(index, *stale)
        return sorted(sessions, key=lambda s: (s.created_at, s.id), reverse=True)

    async def delete(self, user_id: str, session_id: str) -> bool:
        for session in await self.list_for_user(user_id):
            if session.id == session_id:
                return await self._end(user_id, session.token_hash)
        return False

    async def delete_all_for_user(self, user_id: str, *, except_session_id: str | None = None) -> int:
        keep = ""
        if except_session_id is not None:
            # The index holds token hashes: find the one of the session to keep.
            for session in await self.list_for_user(user_id):
                if session.id == except_session_id:
                    keep = session.token_hash
        ended = await self._end_all(keys=[self._index_key(user_id)], args=[self._session_key(""), keep])
        return int(ended)

    async def delete_expired(self, now: datetime) -> int:
        """Nothing to do: every session key expires by itself at its idle or absolute end, and the
        per-user indexes are pruned whenever they are read."""
        return 0

    async def ping(self) -> None:
        await self._client.ping()

    async def _end(self, user_id: str, token_hash: str) -> bool:
        """Remove the session and its index entry; True if the session still existed."""
        async with self._client.pipeline(transaction=True) as pipe:
            pipe.unlink(self._session_key(token_hash))
            pipe.zrem(self._index_key(user_id), token_hash)
            removed, _ = await pipe.execute()
        return int(removed) > 0

    def _session_key(self, token_hash: str) -> str:
        return f"{self._prefix}session:{token_hash}"

    def _index_key(self, user_id: str) -> str:
        return f"{self._prefix}user_sessions:{user_id}"


def _ttl_ms(session: Session) -> int:
    """Milliseconds from the last activity to the session's end (at least 1: SET needs a TTL)."""
    remaining = session.effective_expires_at() - session.last_seen_at
    return max(1, math.ceil(remaining.total_seconds() * 1000))


def _decode(value: bytes | None) -> Session | None:
    if value is None:
        return None
    try:
        return _decoder.decode(value)
    except msgspec.DecodeError as error:
        # Written by an older shape of Session: as good as logged out.
        logger.warning("stored session does not decode: %s", error)
        return None
