"""Rate limits per API key and endpoint group, from the key's tier.

Counters live in Redis when it is configured (shared by every process) and in process
memory otherwise; the `limits` library does the windowing either way.
"""

from __future__ import annotations

import math
import time

from limits import RateLimitItem, parse
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import SlidingWindowCounterRateLimiter

from app.core.config import Settings
from app.core.errors import RateLimited
from app.core.outages import unavailable_on_outage
from app.keys.service import Principal

GROUP_CREATE = "jobs.createTask"
GROUP_QUERY = "jobs.recordInfo"
# A counter update is one small round trip; past this, Redis is treated as away.
_REDIS_TIMEOUT_S = 2.0


class _RedisStorage(RedisStorage):
    # limits imports every client it supports (redis, coredis, valkey) when it first looks
    # for one; naming only redis-py keeps coredis (about 12 MB) out of every process.
    DEPENDENCIES = {"redis": RedisStorage.DEPENDENCIES["redis"]}


class RateLimiter:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._storage: Storage
        if settings.redis_url:
            self._storage = _RedisStorage(
                f"async+{settings.redis_url}",
                implementation="redispy",
                key_prefix=f"{settings.redis_prefix}:limits",
                # Every storage failure arrives as one StorageError, and a Redis that hangs
                # instead of refusing fails the call in bounded time: both become a 503.
                wrap_exceptions=True,
                socket_connect_timeout=_REDIS_TIMEOUT_S,
                socket_timeout=_REDIS_TIMEOUT_S,
            )
        else:
            self._storage = MemoryStorage()
        self._limiter = SlidingWindowCounterRateLimiter(self._storage)
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
        RateLimited with retryAfter, limit, tier, windowSeconds, and ServiceUnavailable when
        the counters' storage (Redis) cannot be reached."""
        item, window = self._item(principal.tier, group)
        with unavailable_on_outage():
            if await self._limiter.hit(item, group, principal.key_id, cost=cost):
                return
            stats = await self._limiter.get_window_stats(item, group, principal.key_id)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        raise RateLimited(
            "rate limit exceeded",
            retryAfter=retry_after,
            limit=item.amount,
            tier=principal.tier,
            windowSeconds=window,
        )
