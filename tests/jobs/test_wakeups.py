"""Wake-ups: a burst of creates costs a handful of publishes, and no wake-up is lost."""

import asyncio

from redis.asyncio import Redis

from app.jobs.notify import Notifier
from tests.support.apps import eventually
from tests.support.backends import TEST_REDIS_URL


class _CountingRedis:
    """Stands in for Redis where the suite runs without one: counts and delays publishes."""

    def __init__(self) -> None:
        self.published = 0

    async def publish(self, _channel: str, _message: str) -> int:
        self.published += 1
        await asyncio.sleep(0.01)
        return 0


async def test_a_burst_of_wakeups_is_coalesced_and_still_wakes() -> None:
    prefix = "gengate-test-wake-" + str(id(object()))
    counting = _CountingRedis()
    redis = Redis.from_url(TEST_REDIS_URL) if TEST_REDIS_URL else None
    sender = Notifier(redis or counting, prefix)  # type: ignore[arg-type]
    receiver = Notifier(redis, prefix)
    await receiver.start()
    published = 0
    if redis is not None:  # count what the channel carries
        original = redis.publish

        async def counted(channel: str, message: str) -> int:
            nonlocal published
            published += 1
            return int(await original(channel, message))

        redis.publish = counted  # type: ignore[method-assign]
    try:
        for _ in range(200):
            sender.wake_workers()
        awake = receiver if redis is not None else sender
        await eventually(_is_set(awake.work), within_s=10, what="a wake-up")
        await eventually(_idle(sender), within_s=10, what="the publishes to settle")
        burst = published if redis is not None else counting.published
        assert 1 <= burst <= 3  # the first at once, one more covering the rest

        # A wake-up after the burst is not swallowed by the coalescing.
        awake.work.clear()
        sender.wake_workers()
        await eventually(_is_set(awake.work), within_s=10, what="the next wake-up")
    finally:
        await sender.stop()
        await receiver.stop()
        if redis is not None:
            await redis.aclose()


def _is_set(event: asyncio.Event):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        return event.is_set()

    return probe


def _idle(notifier: Notifier):  # type: ignore[no-untyped-def]
    async def probe() -> bool:
        return not notifier._wake_in_flight and not notifier._pending

    return probe
