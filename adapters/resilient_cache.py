"""A Cache wrapper that never lets a cache failure fail the caller, with a circuit breaker.

When the cache errors, reads become misses, writes are dropped and `get_or_set` goes to the
source; every failure is logged and counted. After `breaker.failure_threshold` failures in a
row the breaker opens and the cache is not called at all until `reset_after_seconds` have passed;
then one trial call decides whether it closes again. Only `ping` tells the truth, because
readiness must.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from enum import Enum
from typing import Any, Final, TypeVar

from prometheus_client import Counter, Gauge

from adapters.single_flight import SingleFlight
from core.circuit_breaker import BreakerState, CircuitBreaker
from core.ports import Cache

T = TypeVar("T")
R = TypeVar("R")

logger = logging.getLogger("pictor.cache")

# Module level: defined once however many wrappers exist (the default registry rejects duplicates).
CACHE_ERRORS: Final = Counter(
    "pictor_cache_errors_total", "Cache calls that failed and were answered by a fallback", ["operation"]
)
CACHE_BYPASSED: Final = Counter(
    "pictor_cache_bypassed_total", "Cache calls skipped because the circuit breaker was open", ["operation"]
)
CACHE_HITS: Final = Counter("pictor_cache_hits_total", "Cache reads answered without calling the source")
CACHE_MISSES: Final = Counter("pictor_cache_misses_total", "Cache reads that found nothing (or loaded it)")
CACHE_BREAKER_OPEN: Final = Gauge(
    "pictor_cache_breaker_open",
    "1 while the cache circuit breaker is open or trying a half-open call, else 0",
    multiprocess_mode="livemax",
)

# Errors that say the call itself is wrong (a value msgspec cannot encode, a TTL of zero): they
# reach the caller, as a bug should, and say nothing about the cache's health.
CALLER_ERRORS: Final = (TypeError, ValueError, ArithmeticError)


class _Unavailable(Enum):
    UNAVAILABLE = "unavailable"


_UNAVAILABLE: Final = _Unavailable.UNAVAILABLE


class _LoaderFailed(Exception):
    """Carries a loader's exception through the inner cache, so it is told apart from cache errors."""

    def __init__(self, error: Exception) -> None:
        super().__init__(repr(error))
        self.error = error


class ResilientCache:
    """Implements `core.ports.Cache` around any other Cache; see the module docstring.

    `monotonic` is the clock the breaker's timings use (a manual clock in tests). While the
    cache is unavailable, concurrent `get_or_set` calls for one key still share one loader call.
    """

    def __init__(
        self,
        inner: Cache,
        *,
        breaker: CircuitBreaker | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._inner = inner
        self._breaker = breaker if breaker is not None else CircuitBreaker()
        self._monotonic = monotonic
        self._fallback_flights = SingleFlight()
        self._show_breaker()

    async def get(self, key: str, type_: type[T]) -> T | None:
        outcome = await self._call("get", lambda: self._inner.get(key, type_))
        if outcome is _UNAVAILABLE:
            return None
        (CACHE_MISSES if outcome is None else CACHE_HITS).inc()
        return outcome

    async def set(self, key: str, value: Any, *, ttl_seconds: float, tags: Sequence[str] = ()) -> None:
        await self._call("set", lambda: self._inner.set(key, value, ttl_seconds=ttl_seconds, tags=tags))

    async def delete(self, *keys: str) -> int:
        outcome = await self._call("delete", lambda: self._inner.delete(*keys))
        return 0 if outcome is _UNAVAILABLE else outcome

    async def get_or_set(
        self,
        key: str,
        type_: type[T],
        loader: Callable[[], Awaitable[T]],
        *,
        ttl_seconds: float,
        tags: Sequence[str] = (),
    ) -> T:
        loaded: list[T] = []  # this caller's loader result, once it has run

        async def load() -> T:
            try:
                value = await loader()
            except Exception as error:
                raise _LoaderFailed(error) from error
            loaded.append(value)
            return value

        outcome = await self._call(
            "get_or_set",
            lambda: self._inner.get_or_set(key, type_, load, ttl_seconds=ttl_seconds, tags=tags),
        )
        if outcome is not _UNAVAILABLE:
            # A caller that shared another caller's load did not reach the source either: a hit.
            (CACHE_MISSES if loaded else CACHE_HITS).inc()
            return outcome
        if loaded:  # the loader ran and only storing its value failed: never load twice
            return loaded[0]
        return await self._fallback_flights.run(key, loader)

    async def invalidate_tags(self, *tags: str) -> int:
        outcome = await self._call("invalidate_tags", lambda: self._inner.invalidate_tags(*tags))
        return 0 if outcome is _UNAVAILABLE else outcome

    async def delete_pattern(self, pattern: str) -> int:
        outcome = await self._call("delete_pattern", lambda: self._inner.delete_pattern(pattern))
        return 0 if outcome is _UNAVAILABLE else outcome

    async def ping(self) -> None:
        # Straight through, whatever the breaker says: readiness needs to know.
        await self._inner.ping()

    async def _call(self, operation: str, call: Callable[[], Awaitable[R]]) -> R | _Unavailable:
        """`call()`'s result, or _UNAVAILABLE when the breaker skipped it or it failed."""
        breaker = self._breaker
        if not breaker.allows(self._monotonic()):
            CACHE_BYPASSED.labels(operation).inc()
            return _UNAVAILABLE
        loader_error: Exception | None = None
        try:
            result = await call()
        except _LoaderFailed as failure:
            breaker.record_abandoned()  # the cache answered (a miss); the source failed
            loader_error = failure.error
        except CALLER_ERRORS:
            breaker.record_abandoned()
            raise
        except Exception as error:
            self._record_failure(operation, error)
            return _UNAVAILABLE
        except BaseException:  # cancelled: no verdict on the cache, and free a half-open trial
            breaker.record_abandoned()
            raise
        else:
            was_closed = breaker.is_closed
            breaker.record_success()
            if not was_closed:  # the gauge only moves when the breaker does (a hit stays cheap)
                logger.info("cache circuit breaker closed: the cache answered again")
                self._show_breaker()
            return result
        # Raised outside the handler, so the loader's error keeps its own cause and context.
        raise loader_error

    def _record_failure(self, operation: str, error: Exception) -> None:
        breaker = self._breaker
        was_open = breaker.state is BreakerState.OPEN
        breaker.record_failure(self._monotonic())
        CACHE_ERRORS.labels(operation).inc()
        logger.warning("cache %s failed, falling back: %r", operation, error)
        if breaker.state is BreakerState.OPEN and not was_open:
            logger.error(
                "cache circuit breaker opened after %d consecutive failures; bypassing the cache for %.1f s",
                breaker.consecutive_failures,
                breaker.reset_after_seconds,
            )
        self._show_breaker()

    def _show_breaker(self) -> None:
        CACHE_BREAKER_OPEN.set(0 if self._breaker.is_closed else 1)
