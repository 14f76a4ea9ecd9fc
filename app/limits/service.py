"""Rate limits per API key and endpoint group, from the key's tier.

Counters live in Redis when it is configured (shared by every process) and in process
memory otherwise; the `limits` library does the windowing either way.

A Redis that cannot be reached does not stop the API: the process counts in its own memory
until Redis answers again (one warning when it starts, one line when shared counting
resumes). Meanwhile each process grants a key its tier's full limit, so with N API
processes a key may make up to N times its limit. While Redis is away no request waits on
it: a probe in the background, at most one every REDIS_RETRY_S, decides when it is back.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from limits import RateLimitItem, WindowStats, parse
from limits.aio.storage import MemoryStorage, RedisStorage
from limits.aio.strategies import RateLimiter as Strategy
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from app.core.config import Settings
from app.core.errors import RateLimited
from app.core.outages import is_outage
from app.keys.service import Principal

log = logging.getLogger("gengate.limits")

GROUP_CREATE = "jobs.createTask"
GROUP_QUERY = "jobs.recordInfo"
# A counter update is one small round trip; past this, Redis is treated as away.
_REDIS_TIMEOUT_S = 2.0
# While Redis is away, how often a background probe asks whether it is back.
REDIS_RETRY_S = 1.0


class _RedisStorage(RedisStorage):
    # limits imports every client it supports (redis, coredis, valkey) when it first looks
    # for one; naming only redis-py keeps coredis (about 12 MB) out of every process.
    DEPENDENCIES = {"redis": RedisStorage.DEPENDENCIES["redis"]}


def _redis_storage(settings: Settings) -> _RedisStorage:
    return _RedisStorage(
        f"async+{settings.redis_url}",
        implementation="redispy",
        key_prefix=f"{settings.redis_prefix}:limits",
        # Every storage failure arrives as one StorageError, and a Redis that hangs instead
        # of refusing fails the call in bounded time: both switch to counting in process.
        wrap_exceptions=True,
        socket_connect_timeout=_REDIS_TIMEOUT_S,
        socket_timeout=_REDIS_TIMEOUT_S,
    )


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._local: Strategy = SlidingWindowCounterRateLimiter(MemoryStorage())
        self._redis = _redis_storage(settings) if settings.redis_url else None
        self._shared = SlidingWindowCounterRateLimiter(self._redis) if self._redis else None
        # The circuit: open (counting in process) from a Redis failure until a probe answers.
        self._redis_away = False
        self._probe_at = 0.0  # time.monotonic() of the next probe while away
        self._probe: asyncio.Task[None] | None = None
        self._items: dict[tuple[str, str], RateLimitItem] = {}

    def _item(self, tier: str, group: str) -> tuple[RateLimitItem, int]:
        limits = self._settings.tier_limits(tier)
        amount = limits.create_per_minute if group == GROUP_CREATE else limits.query_per_minute
        item = self._items.get((tier, group))
        if item is None:
            item = parse(f"{amount} per {limits.window_seconds} second")
            self._items[(tier, group)] = item
        return item, limits.window_seconds

    async def hit(self, principal: Principal, group: str, *, cost: int = 1) -> None:
        """Count one call, or `cost` calls (a request that creates several tasks). Raises
        RateLimited with retryAfter, limit, tier, windowSeconds. A Redis outage is not an
        error here: the call is counted in process instead (see the module's docstring)."""
        item, window = self._item(principal.tier, group)
        strategy = self._strategy()
        try:
            stats = await _count(strategy, item, group, principal.key_id, cost)
        except Exception as exc:
            if strategy is self._local or not is_outage(exc):
                raise
            self._lost_redis(exc)
            stats = await _count(self._local, item, group, principal.key_id, cost)
        if stats is None:
            return
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            "rate limit exceeded",
            retryAfter=retry_after,
            limit=item.amount,
            tier=principal.tier,
            windowSeconds=window,
        )

    async def aclose(self) -> None:
        """Stop a probe in flight, so that none outlives the process's event loop."""
        if self._probe is not None:
            self._probe.cancel()
            await asyncio.gather(self._probe, return_exceptions=True)

    def _strategy(self) -> Strategy:
        """Redis's counters when it is healthy (no extra round trip for that), else this
        process's, starting a probe of Redis when one is due."""
        if self._shared is None:
            return self._local
        if not self._redis_away:
            return self._shared
        if self._probe is None and time.monotonic() >= self._probe_at:
            self._probe = asyncio.get_running_loop().create_task(self._probe_redis())
        return self._local

    def _lost_redis(self, exc: BaseException) -> None:
        """Open the circuit: count in process from now on, warning once per outage (calls
        that were already waiting on Redis fail into here too, and say nothing more)."""
        if self._redis_away:
            return
        self._redis_away = True
        self._probe_at = time.monotonic() + REDIS_RETRY_S
        log.warning("rate limits are counted per process until Redis is back (%s)", _describe(exc))

    async def _probe_redis(self) -> None:
        """Ask Redis for a PING (bounded by its socket timeouts); close the circuit if it
        answers, else try again REDIS_RETRY_S later."""
        assert self._redis is not None
        try:
            back = await self._redis.check()
        finally:
            self._probe = None
        if not back:
            self._probe_at = time.monotonic() + REDIS_RETRY_S
            return
        self._redis_away = False
        log.info("Redis is back: rate limits are shared between processes again")


async def _count(
    strategy: Strategy, item: RateLimitItem, group: str, key_id: str, cost: int
) -> WindowStats | None:
    """None when the call fits the limit (it is counted); else the window's stats."""
    if await strategy.hit(item, group, key_id, cost=cost):
        return None
    return await strategy.get_window_stats(item, group, key_id)


def _describe(exc: BaseException) -> str:
    """The failure's type, and the underlying one when `limits` wrapped it."""
    inner = getattr(exc, "storage_error", None)
    return type(inner).__name__ if inner is not None else type(exc).__name__
