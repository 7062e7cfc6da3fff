"""The RateLimiter port on Valkey: `core.rate_limit.gcra` as one atomic Lua script per decision."""

from __future__ import annotations

from typing import Final

from valkey.asyncio import Valkey

from core.rate_limit import RateLimit, RateLimitDecision, check_cost

# KEYS[1] the key's TAT (integer microseconds, server clock). ARGV[1] emission interval µs,
# ARGV[2] burst, ARGV[3] cost, ARGV[4] '1' to record an allowed request ('0' peeks), ARGV[5] now
# in µs, or '' to read the server's clock. Returns {allowed, remaining, retry_after µs,
# reset_after µs}. Line for line `core.rate_limit.gcra`: every value is an integer below 2**53,
# which a Lua double holds exactly, so the figures are identical to Python's. Time comes from
# the server so that every process decides on one clock. The key expires (PXAT, absolute) when
# its bucket is full again, which is when it stops mattering.
_GCRA: Final = """
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local now
if ARGV[5] ~= '' then
  now = tonumber(ARGV[5])
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
  return {0, remaining, allow_at - now, current - now}
end
if ARGV[4] == '1' then
  -- '%.0f': Lua's own number-to-string conversion keeps only 14 significant digits.
  redis.call('SET', KEYS[1], string.format('%.0f', new_tat),
    'PXAT', string.format('%.0f', math.ceil(new_tat / 1000)))
end
local remaining = math.max(0, math.floor((tolerance - (new_tat - now)) / interval))
return {1, remaining, 0, new_tat - now}
"""


class ValkeyRateLimiter:
    """Implements `core.ports.RateLimiter` on Valkey (or Redis >= 6.2, for SET PXAT).

    One key per limited subject, `{prefix}rate:{key}`, holding its TAT; every decision is one
    EVALSHA round trip (valkey-py loads the script again if the server forgot it).
    """

    def __init__(self, client: Valkey, *, key_prefix: str = "pictor:") -> None:
        self._client = client
        self._prefix = key_prefix
        self._gcra = client.register_script(_GCRA)

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
        args = [limit.emission_interval_us, limit.burst, cost, "1" if record else "0"]
        reply = await self._gcra(keys=[self._key(key)], args=[*args, "" if now_us is None else now_us])
        allowed, remaining, retry_after_us, reset_after_us = (int(value) for value in reply)
        return RateLimitDecision.from_microseconds(
            allowed=allowed == 1,
            limit=limit.burst,
            remaining=remaining,
            retry_after_us=retry_after_us,
            reset_after_us=reset_after_us,
        )

    def _key(self, key: str) -> str:
        return f"{self._prefix}rate:{key}"
