"""Wake-ups: new work for workers, finished tasks for waiters, changed tasks for the
recordInfo cache (app.jobs.viewcache), revoked keys for the key cache (app.keys.cache).

In process an asyncio.Event does it. Between processes the signals travel on one transport,
chosen in `transport_for`: Redis pub/sub when Redis is configured; else, on PostgreSQL,
NOTIFY/LISTEN (app.jobs.pgnotify); else none, and each process hears only itself. Signals
are hints: the lease scan still finds everything. When a transport was cut off and is back,
announcements may have been lost meanwhile, so every cached answer is dropped (`on_resync`)
and the loops are woken to scan.

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
from collections.abc import Callable, Iterator
from typing import Any, Protocol

from redis.asyncio import Redis
from sqlalchemy import make_url

from app.core.outages import is_outage
from app.jobs.pgnotify import PgTransport

log = logging.getLogger("gengate.notify")
# Under load, at most one wake-up publish per this interval (a worker that is busy does not
# need more; an idle one gets the first at once).
WAKE_SPACING_S = 0.005
# What each signal is about (a Redis channel each; on PostgreSQL the payload's first word).
WAKE, DONE, KEYS, CHANGED = "wake", "done", "keys", "changed"
# The most one message carries: a NOTIFY payload must stay under 8000 bytes, topic included.
MESSAGE_MAX_BYTES = 7900
# A publish to a Redis that hangs gives up after this (the signal is a hint).
PUBLISH_TIMEOUT_S = 2.0

Deliver = Callable[[str, str], None]


class Transport(Protocol):
    """Carries signals (`topic`, `message`) to every process, this one included."""

    async def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        """Call `deliver(topic, message)` for every signal from now on, and `resync()` when
        signals may have been lost and the transport is back."""

    async def publish(self, topic: str, message: str) -> None: ...

    async def stop(self) -> None: ...


def transport_for(redis: Redis | None, prefix: str, database_url: str | None) -> Transport | None:
    """Redis when there is one, else PostgreSQL's NOTIFY/LISTEN, else none (in process)."""
    if redis is not None:
        return RedisTransport(redis, prefix)
    if database_url is not None and make_url(database_url).get_backend_name() == "postgresql":
        return PgTransport(database_url, prefix)
    return None


class Notifier:
    def __init__(
        self, redis: Redis | None, prefix: str, *, database_url: str | None = None
    ) -> None:
        self._transport = transport_for(redis, prefix, database_url)
        self.work = asyncio.Event()
        # The callback dispatcher's own flag: it runs beside the task loop, which clears
        # `work` when it claims, so each loop needs an event it alone clears.
        self.deliveries = asyncio.Event()
        # Called with a key hash when another process announces a revocation.
        self.on_key_revoked: Callable[[str], None] | None = None
        # Called with a task id when a task changed, here or in another process.
        self.on_task_changed: Callable[[str], None] | None = None
        # Called when announcements may have been lost (the transport was cut off and is
        # back): anything may have changed.
        self.on_resync: Callable[[], None] | None = None
        self._changed_ids: set[str] = set()
        self._wake_in_flight = False
        self._wake_again = False
        self._stopped = False
        self._done_waiters: defaultdict[str, set[asyncio.Event]] = defaultdict(set)
        self._pending: set[asyncio.Task[None]] = set()

    @property
    def transport(self) -> Transport | None:
        """What carries the signals to other processes (None: nothing does)."""
        return self._transport

    async def start(self) -> None:
        if self._transport is not None:
            await self._transport.start(self._received, self._resynced)

    async def stop(self) -> None:
        self._stopped = True
        while self._pending:  # a finished wake-up may have started the one after it
            await asyncio.gather(*self._pending, return_exceptions=True)
        if self._transport is not None:
            await self._transport.stop()

    def wake_deliveries(self) -> None:
        """A callback delivery is due (the same signal as new tasks)."""
        self.wake_workers()

    def wake_workers(self) -> None:
        """Tell workers (here and, through the transport, elsewhere) that work is due: tasks
        or callback deliveries (one signal serves both; each loop claims what it finds)."""
        self.work.set()
        self.deliveries.set()
        if self._transport is None:
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

        self._publish(WAKE, "1", done=published)

    def _wake_published(self) -> None:
        self._wake_in_flight = False
        if self._wake_again:
            self._wake_again = False
            self.wake_workers()

    def key_revoked(self, key_hash: str) -> None:
        """Tell the other processes' key caches to forget a key."""
        self._publish(KEYS, key_hash)

    def task_changed(self, task_id: str) -> None:
        """A committed change to what recordInfo shows of the task: forget it here at once,
        and tell the other processes (the ids of one loop turn go in one publish, or a few
        when they are many)."""
        if self.on_task_changed is not None:
            self.on_task_changed(task_id)
        if self._transport is None or self._stopped:
            return
        if not self._changed_ids:
            asyncio.get_running_loop().call_soon(self._publish_changed)
        self._changed_ids.add(task_id)

    def _publish_changed(self) -> None:
        ids, self._changed_ids = self._changed_ids, set()
        for message in _joined(sorted(ids), MESSAGE_MAX_BYTES):
            self._publish(CHANGED, message)

    def task_finished(self, task_id: str) -> None:
        """The task succeeded or failed: wake its waiters, and forget its old answer (here
        and, through the same message, in every other process)."""
        if self.on_task_changed is not None:
            self.on_task_changed(task_id)
        self._release(task_id)
        self._publish(DONE, task_id)

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

    def _publish(self, topic: str, message: str, *, done: Callable[[], None] | None = None) -> None:
        if self._transport is None or self._stopped:
            return

        def published(task: asyncio.Task[None]) -> None:
            self._pending.discard(task)
            if not task.cancelled() and task.exception() is not None:
                log.warning("%s not published: %s", topic, type(task.exception()).__name__)
            if done is not None:
                done()

        task = asyncio.get_running_loop().create_task(self._transport.publish(topic, message))
        self._pending.add(task)
        task.add_done_callback(published)

    def _received(self, topic: str, message: str) -> None:
        """A signal from any process, this one included."""
        if topic == WAKE:
            self.work.set()
            self.deliveries.set()
        elif topic == KEYS:
            if self.on_key_revoked is not None:
                self.on_key_revoked(message)
        elif topic == CHANGED:
            if self.on_task_changed is not None:
                for task_id in message.split():
                    self.on_task_changed(task_id)
        elif topic == DONE:
            if self.on_task_changed is not None:
                self.on_task_changed(message)
            self._release(message)

    def _resynced(self) -> None:
        """Announcements may have been lost: drop what they would have dropped, and have
        the loops scan for work they would have been woken for."""
        if self.on_resync is not None:
            self.on_resync()
        self.work.set()
        self.deliveries.set()


class RedisTransport:
    """Signals over Redis pub/sub, a channel per topic (`{prefix}:{topic}`)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._channels = {topic: f"{prefix}:{topic}" for topic in (WAKE, DONE, KEYS, CHANGED)}
        self._listener: asyncio.Task[None] | None = None
        self._away = False  # Redis failed and has not answered since: warned already

    async def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
        await pubsub.subscribe(*self._channels.values())
        listening = self._listen(pubsub, deliver, resync)
        self._listener = asyncio.create_task(listening, name="notifier")

    async def publish(self, topic: str, message: str) -> None:
        """Publish a signal; with Redis away it is dropped (signals are hints: the scan
        finds the work, the resync drops the caches) after one warning per outage, rather
        than one per signal. A Redis that hangs costs at most PUBLISH_TIMEOUT_S."""
        try:
            async with asyncio.timeout(PUBLISH_TIMEOUT_S):
                await self._redis.publish(self._channels[topic], message)
        except Exception as exc:
            if not is_outage(exc) and not isinstance(exc, TimeoutError):
                raise
            self._lost(exc)
            return
        self._back()

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener

    async def _listen(self, pubsub: Any, deliver: Deliver, resync: Callable[[], None]) -> None:
        topics = {channel: topic for topic, channel in self._channels.items()}
        while True:
            try:
                async for message in pubsub.listen():
                    topic = topics[message["channel"].decode()]
                    deliver(topic, message["data"].decode())
            except asyncio.CancelledError:
                await pubsub.aclose()
                raise
            except Exception as exc:  # the scan still finds work; keep listening
                self._lost(exc)
                await asyncio.sleep(1)
                with contextlib.suppress(Exception):  # still away: listening fails again
                    await pubsub.connect()  # connecting again re-subscribes
                    self._back()
                resync()  # what was sent meanwhile is lost

    def _lost(self, exc: BaseException) -> None:
        """Warn once per outage, whichever of publishing and listening meets it first."""
        if not self._away:
            self._away = True
            log.warning("wake-up channel interrupted: %s", type(exc).__name__)

    def _back(self) -> None:
        """Redis answered (a publish, or listening again): the next failure warns again."""
        if self._away:
            self._away = False
            log.info("wake-up channel back")


def _joined(ids: list[str], max_bytes: int) -> Iterator[str]:
    """`ids` joined by spaces into as few messages of at most `max_bytes` as they fit."""
    message: list[str] = []
    size = -1  # the first id has no space before it
    for task_id in ids:
        width = 1 + len(task_id.encode())
        if message and size + width > max_bytes:
            yield " ".join(message)
            message, size = [], -1
        message.append(task_id)
        size += width
    if message:
        yield " ".join(message)
