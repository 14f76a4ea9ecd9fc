"""Wake-ups: new work for workers, finished tasks for waiters, changed tasks for the
recordInfo cache (app.jobs.viewcache).

In process an asyncio.Event does it; with Redis, a pub/sub channel carries the same
signals to every process. Signals are hints: the lease scan still finds everything.
The same listener carries key revocations (`{prefix}:keys`) to the key cache.

Work wake-ups are coalesced: at most one publish is in flight (and publishes start at
least WAKE_SPACING_S apart), and creates that happen meanwhile cost one more publish after
it, so a burst of creates costs a handful of publishes. A wake-up is never lost: the one
after the flight covers every create that committed while it flew. The first create on an
idle system publishes at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Callable

from redis.asyncio import Redis

log = logging.getLogger("gengate.notify")
# Under load, at most one wake-up publish per this interval (a worker that is busy does not
# need more; an idle one gets the first at once).
WAKE_SPACING_S = 0.005


class Notifier:
    def __init__(self, redis: Redis | None, prefix: str) -> None:
        self._redis = redis
        self._work_channel = f"{prefix}:wake"
        self._done_channel = f"{prefix}:done"
        self._keys_channel = f"{prefix}:keys"
        self._changed_channel = f"{prefix}:changed"
        self.work = asyncio.Event()
        # The callback dispatcher's own flag: it runs beside the task loop, which clears
        # `work` when it claims, so each loop needs an event it alone clears.
        self.deliveries = asyncio.Event()
        # Called with a key hash when another process announces a revocation.
        self.on_key_revoked: Callable[[str], None] | None = None
        # Called with a task id when a task changed, here or in another process.
        self.on_task_changed: Callable[[str], None] | None = None
        self._changed_ids: set[str] = set()
        self._wake_in_flight = False
        self._wake_again = False
        self._stopped = False
        self._done_waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[int]] = set()

    async def start(self) -> None:
        if self._redis is not None:
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            await pubsub.subscribe(
                self._work_channel, self._done_channel, self._keys_channel, self._changed_channel
            )
            self._listener = asyncio.create_task(self._listen(pubsub), name="notifier")

    async def stop(self) -> None:
        self._stopped = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        while self._pending:  # a finished wake-up may have started the one after it
            await asyncio.gather(*self._pending, return_exceptions=True)

    def wake_deliveries(self) -> None:
        """A callback delivery is due (the same signal as new tasks)."""
        self.wake_workers()

    def wake_workers(self) -> None:
        """Tell workers (here and, through Redis, elsewhere) that work is due: tasks or
        callback deliveries (one signal serves both; each loop claims what it finds)."""
        self.work.set()
        self.deliveries.set()
        if self._redis is None:
            return
        if self._wake_in_flight:
            self._wake_again = True
            return
        self._wake_in_flight = True
        started = time.monotonic()

        def published() -> None:
            rest = WAKE_SPACING_S - (time.monotonic() - started)
            if rest > 0 and self._wake_again:
                asyncio.get_running_loop().call_later(rest, self._wake_published)
            else:
                self._wake_published()

        self._publish(self._work_channel, "1", done=published)

    def _wake_published(self) -> None:
        self._wake_in_flight = False
        if self._wake_again:
            self._wake_again = False
            self.wake_workers()

    def key_revoked(self, key_hash: str) -> None:
        """Tell the other processes' key caches to forget a key."""
        self._publish(self._keys_channel, key_hash)

    def task_changed(self, task_id: str) -> None:
        """A committed change to what recordInfo shows of the task: forget it here at once,
        and tell the other processes (the ids of one loop turn go in one publish)."""
        if self.on_task_changed is not None:
            self.on_task_changed(task_id)
        if self._redis is None or self._stopped:
            return
        if not self._changed_ids:
            asyncio.get_running_loop().call_soon(self._publish_changed)
        self._changed_ids.add(task_id)

    def _publish_changed(self) -> None:
        ids, self._changed_ids = self._changed_ids, set()
        self._publish(self._changed_channel, " ".join(sorted(ids)))

    def task_finished(self, task_id: str) -> None:
        """The task succeeded or failed: wake its waiters, and forget its old answer (here
        and, through the same message, in every other process)."""
        if self.on_task_changed is not None:
            self.on_task_changed(task_id)
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

    def _publish(
        self, channel: str, message: str, *, done: Callable[[], None] | None = None
    ) -> None:
        if self._redis is None or self._stopped:
            return
        redis = self._redis

        async def send() -> int:
            return int(await redis.publish(channel, message))

        def published(task: asyncio.Task[int]) -> None:
            self._pending.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s not published: %s", channel, type(task.exception()).__name__)
            if done is not None:
                done()

        task = asyncio.get_running_loop().create_task(send())
        self._pending.add(task)
        task.add_done_callback(published)

    async def _listen(self, pubsub) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                async for message in pubsub.listen():
                    channel = message["channel"].decode()
                    if channel == self._work_channel:
                        self.work.set()
                        self.deliveries.set()
                    elif channel == self._keys_channel:
                        if self.on_key_revoked is not None:
                            self.on_key_revoked(message["data"].decode())
                    elif channel == self._changed_channel:
                        if self.on_task_changed is not None:
                            for task_id in message["data"].decode().split():
                                self.on_task_changed(task_id)
                    else:  # a task finished
                        task_id = message["data"].decode()
                        if self.on_task_changed is not None:
                            self.on_task_changed(task_id)
                        self._release(task_id)
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as exc:  # the scan still finds work; keep listening
                log.warning("wake-up channel interrupted: %s", type(exc).__name__)
                await asyncio.sleep(1)
