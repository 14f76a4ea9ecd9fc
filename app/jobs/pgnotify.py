"""PostgreSQL LISTEN/NOTIFY as the wake-up channel when there is no Redis (see app.jobs.notify).

Each process holds one connection that only LISTENs, and one that only sends: psycopg's
`notifies()` keeps its connection busy while it waits, so nothing else can run on it. Every
signal travels on one channel named after the prefix, as `<topic> <message>`.

The Notifier hands signals over once their transaction has committed (app.db.hooks), so a
NOTIFY is sent on the sending connection then, never before the change it announces is
visible. A signal is a hint: one lost while the database is away is covered by the scan,
and by `resync` once the listening connection is back.

The listening connection is opened again in the background when it drops (a database
restart), with backoff; an outage costs one warning when it starts and one line when it
ends, not one per attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
from collections.abc import Callable
from typing import Any

import psycopg
from psycopg import sql

from app.db.engine import CONNECT_TIMEOUT_SECONDS, libpq_conninfo

log = logging.getLogger("gengate.notify")

# PostgreSQL truncates identifiers longer than this (and pg_notify refuses them).
CHANNEL_MAX_BYTES = 63
# A NOTIFY payload must be shorter than 8000 bytes (the default build).
PAYLOAD_MAX_BYTES = 7999
# The listening connection is opened again after this long, then twice as long, up to the cap.
RECONNECT_FIRST_S = 0.05
RECONNECT_MAX_S = 5.0
# A send the database does not answer in this long is given up (the scan covers it).
SEND_TIMEOUT_S = 5.0
# Idle connections are probed by the kernel, so one a network silently dropped is noticed
# within about a minute rather than never (a LISTEN connection otherwise only reads).
_KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}
APPLICATION_NAME = "gengate-notify"

Deliver = Callable[[str, str], None]


class PgTransport:
    """Sends and receives the Notifier's signals through PostgreSQL NOTIFY/LISTEN."""

    def __init__(self, database_url: str, prefix: str) -> None:
        self._conninfo = libpq_conninfo(database_url)
        self.channel = channel_name(prefix)
        self._deliver: Deliver | None = None
        self._resync: Callable[[], None] | None = None
        self._listener: asyncio.Task[None] | None = None
        self._sender: psycopg.AsyncConnection[Any] | None = None
        self._sender_lock = asyncio.Lock()
        # The listening connection's backend pid, for pg_stat_activity (and tests).
        self.listener_pid: int | None = None

    async def start(self, deliver: Deliver, resync: Callable[[], None]) -> None:
        """Listen from now on: `deliver(topic, message)` for each signal, `resync()` after a
        lost connection is back. The first connection is tried here, so signals sent once
        this returns arrive; a database that cannot be reached is tried in the background."""
        self._deliver, self._resync = deliver, resync
        try:
            listening: psycopg.AsyncConnection[Any] | None = await self._listen()
        except (psycopg.Error, OSError) as exc:
            log.warning("wake-up channel unavailable (%s); retrying", type(exc).__name__)
            listening = None
        self._listener = asyncio.create_task(self._receive(listening), name="notifier")

    async def publish(self, topic: str, message: str) -> None:
        """NOTIFY one signal. Raises ValueError for a message PostgreSQL would refuse; on
        psycopg.Error or TimeoutError the connection is dropped too (the next signal opens
        another)."""
        payload = f"{topic} {message}"
        if len(payload.encode()) > PAYLOAD_MAX_BYTES:
            raise ValueError(f"a {topic} signal of {len(payload)} bytes is too long to NOTIFY")
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                sender = await self._sending()
                await sender.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))
        except (psycopg.Error, TimeoutError):
            await self._drop_sender()
            raise

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._drop_sender()

    # --- receiving -------------------------------------------------------------------------

    async def _receive(self, listening: psycopg.AsyncConnection[Any] | None) -> None:
        """Hand over every notification; when the connection drops, open another."""
        while True:
            if listening is None:
                listening = await self._reconnect()
            try:
                async for note in listening.notifies():
                    self._handle(note.payload)
            except Exception as exc:  # never lets the process go down; the scan covers it
                log.warning("wake-up channel lost (%s); reconnecting", type(exc).__name__)
            finally:
                await listening.close()
            listening = None
            # The sending connection most likely went through the same restart: a new one
            # sends the next signal rather than that signal finding out.
            await self._drop_sender()

    def _handle(self, payload: str) -> None:
        topic, _, message = payload.partition(" ")
        assert self._deliver is not None
        try:
            self._deliver(topic, message)
        except Exception:  # a bad handler must not close the channel for every other signal
            log.exception("wake-up %s not handled", topic)

    async def _reconnect(self) -> psycopg.AsyncConnection[Any]:
        """Open the listening connection again, retrying with jittered, capped backoff, then
        resync: whatever was announced meanwhile was lost."""
        wait_s = RECONNECT_FIRST_S
        while True:
            try:
                listening = await self._listen()
                break
            except (psycopg.Error, OSError) as exc:
                log.debug("wake-up channel not open yet: %s", exc)
            await asyncio.sleep(random.uniform(wait_s / 2, wait_s))  # noqa: S311 (jitter)
            wait_s = min(wait_s * 2, RECONNECT_MAX_S)
        log.info("wake-up channel back")
        assert self._resync is not None
        self._resync()
        return listening

    async def _listen(self) -> psycopg.AsyncConnection[Any]:
        conn = await self._connect()
        try:
            await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self.channel)))
        except BaseException:
            await conn.close()
            raise
        self.listener_pid = conn.info.backend_pid
        return conn

    # --- sending ---------------------------------------------------------------------------

    async def _sending(self) -> psycopg.AsyncConnection[Any]:
        async with self._sender_lock:  # one connection, however many signals ask at once
            if self._sender is None or self._sender.closed:
                self._sender = await self._connect()
            return self._sender

    async def _drop_sender(self) -> None:
        sender, self._sender = self._sender, None
        if sender is not None:
            await sender.close()

    async def _connect(self) -> psycopg.AsyncConnection[Any]:
        return await psycopg.AsyncConnection.connect(
            self._conninfo,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            application_name=APPLICATION_NAME,
            **_KEEPALIVES,
        )


def channel_name(prefix: str) -> str:
    """The channel of a prefix: the prefix itself when PostgreSQL can take it whole, else a
    shortened prefix and a digest of it (distinct prefixes keep distinct channels)."""
    if len(prefix.encode()) <= CHANNEL_MAX_BYTES:
        return prefix
    digest = hashlib.blake2b(prefix.encode(), digest_size=8).hexdigest()
    head = prefix.encode()[: CHANNEL_MAX_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{head}-{digest}"
