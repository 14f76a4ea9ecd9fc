"""Wake-ups: new work for workers, finished tasks for waiters.

In process an asyncio.Event does it; with Redis, a pub/sub channel carries the same
signals to every process. Signals are hints: the lease scan still finds everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict

from redis.asyncio import Redis

log = logging.getLogger("gengate.notify")


class Notifier:
    def __init__(self, redis: Redis | None, prefix: str) -> None:
        self._redis = redis
        self._work_channel = f"{prefix}:wake"
        self._done_channel = f"{prefix}:done"
        self.work = asyncio.Event()
        self._done_waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[int]] = set()

    async def start(self) -> None:
        if self._redis is not None:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(self._work_channel, self._done_channel)
            self._listener = asyncio.create_task(self._listen(pubsub), name="notifier")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def wake_workers(self) -> None:
        """Tell workers (here and, through Redis, elsewhere) that work is due."""
        self.work.set()
        self._publish(self._work_channel, "1")

    def task_finished(self, task_id: str) -> None:
        self._release(task_id)
        self._publish(self._done_channel, task_id)

    async def wait_finished(self, task_id: str, within_s: float) -> bool:
        """Wait up to `within_s` seconds for a finish signal of `task_id`."""
        event = asyncio.Event()
        self._done_waiters[task_id].add(event)
        try:
            async with asyncio.timeout(within_s):
                await event.wait()
            return True
        except TimeoutError:
            return False
        finally:
            waiters = self._done_waiters.get(task_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._done_waiters[task_id]

    def _release(self, task_id: str) -> None:
        for event in self._done_waiters.get(task_id, ()):
            event.set()

    def _publish(self, channel: str, message: str) -> None:
        if self._redis is None:
            return
        redis = self._redis

        async def send() -> int:
            return int(await redis.publish(channel, message))

        task = asyncio.get_running_loop().create_task(send())
        self._pending.add(task)
        task.add_done_callback(self._published)

    def _published(self, task: asyncio.Task[int]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.warning("wake-up not published: %s", type(task.exception()).__name__)

    async def _listen(self, pubsub) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                async for message in pubsub.listen():
                    channel = message["channel"].decode()
                    if channel == self._work_channel:
                        self.work.set()
                    else:
                        self._release(message["data"].decode())
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as exc:  # the scan still finds work; keep listening
                log.warning("wake-up channel interrupted: %s", type(exc).__name__)
                await asyncio.sleep(1)
