"""The RateLimiter port on Valkey: `core.rate_limit.gcra` as one atomic Lua script per decision."""

from __future__ import annotations

import hashlib
from typing import Final

from valkey.asyncio import Valkey
from valkey.exceptions import NoScriptError

from adapters.valkey.auto_pipeline import AutoPipeline
from core.rate_limit import RateLimit, RateLimitDecision, check_cost

# KEYS[1] the key's TAT (integer microseconds, server clock). ARGV[1] is one string
# "interval burst cost record now": emission interval µs, burst, cost, 1 to record an allowed
# request (0 peeks), now in µs or - to read the server's clock. Returns one string "allowed
# remaining retry_after_µs reset_after_µs". (One argument in, one bulk string out: packing and
# parsing several RESP values costs the client more CPU than the script costs the server, and
# this runs on every authenticated request.) Line for line `core.rate_limit.gcra`: every value is
# an integer below 2**53, which a Lua double holds exactly, so the figures are identical to
# Python's. Time comes from the server so that every process decides on one clock. The key
# expires (PXAT, absolute) when its bucket is full again, which is when it stops mattering.
_GCRA: Final = """
local a, b, c, record, given = string.match(ARGV[1], '^(%d+) (%d+) (%d+) ([01]) ([-%d]+)$')
local interval = tonumber(a)
local burst = tonumber(b)
local cost = tonumber(c)
local now
if given ~= '-' then
  now = tonumber(given)
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local tolerance = interval * burst
local tat = tonumber(redis.call('GET', KEYS[1]))
local current = now
if tat ~= nil and tat >= now then current = tat end
local new_tat = current + interval * cost
local allow_at = new_tat - tolerance
if now < allow_at then
  local remaining = math.max(0, math.floor((tolerance - (current - now)) / interval))
  return string.format('0 %.0f %.0f %.0f', remaining, allow_at - now, current - now)
end
if record == '1' then
  -- '%.0f': Lua's own number-to-string conversion keeps only 14 significant digits.
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
    'PXAT', string.format('%.0f', math.ceil(new_tat / 1000)))
end
local remaining = math.max(0, math.floor((tolerance - (new_tat - now)) / interval))
return string.format('1 %.0f 0 %.0f', remaining, new_tat - now)
"""


class ValkeyRateLimiter:
    """Implements `core.ports.RateLimiter` on Valkey (or Redis >= 6.2, for SET PXAT).

    One key per limited subject, `{prefix}rate:{key}`, holding its TAT; every decision is one
    EVALSHA round trip (the script is loaded again when the server has forgotten it).
    """

    def __init__(self, client: Valkey, *, key_prefix: str = "pictor:") -> None:
        self._client = client
        self._prefix = key_prefix
        self._sha = hashlib.sha1(_GCRA.encode(), usedforsecurity=False).hexdigest()  # EVALSHA's name
        self._pipeline = AutoPipeline(client)  # concurrent decisions share a round trip

    async def hit(self, key: str, limit: RateLimit, cost: int = 1) -> RateLimitDecision:
        return await self.decide(key, limit, cost)

    async def peek(self, key: str, limit: RateLimit) -> RateLimitDecision:
        return await self.decide(key, limit, record=False)

    async def reset(self, key: str) -> None:
        await self._client.unlink(self._key(key))

    async def ping(self) -> None:
        await self._client.ping()

    async def decide(
        self, key: str, limit: RateLimit, cost: int = 1, *, record: bool = True, now_us: int | None = None
    ) -> RateLimitDecision:
        """The decision for a request of `cost`, counted when allowed and `record` is true.

        `now_us` replaces the server's clock (microseconds); it exists so tests can compare the
        script with `core.rate_limit.gcra` at chosen instants. Production code leaves it out.
        """
        check_cost(limit, cost)
        now = "-" if now_us is None else str(int(now_us))
        argument = f"{limit.emission_interval_us} {limit.burst} {cost} {1 if record else 0} {now}"
        full_key = f"{self._prefix}rate:{key}"
        try:
            reply = await self._pipeline.execute("EVALSHA", self._sha, 1, full_key, argument)
        except NoScriptError:  # a restarted or flushed server forgot it: load it and go on
            self._sha = await self._client.script_load(_GCRA)
            reply = await self._pipeline.execute("EVALSHA", self._sha, 1, full_key, argument)
        allowed, remaining, retry_after_us, reset_after_us = (int(value) for value in reply.split())
        return RateLimitDecision.from_microseconds(
            allowed=allowed == 1,
            limit=limit.burst,
            remaining=remaining,
            retry_after_us=retry_after_us,
            reset_after_us=reset_after_us,
        )

    def _key(self, key: str) -> str:
        return f"{self._prefix}rate:{key}"
