"""Sends due callbacks: claims deliveries under a lease, signs, POSTs, records each attempt.

It runs beside the task loop in every worker process, with its own pool of concurrent
sends, so a receiver that hangs holds a delivery slot for at most the callback timeout and
never a task slot; a per-host cap keeps one slow receiver from taking every delivery slot.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import Counter, defaultdict, deque
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.callbacks.models import CallbackAttempt, CallbackDelivery
from app.callbacks.queue import claim_due_deliveries, fix_body, postpone, record_attempt
from app.callbacks.schedule import judge
from app.callbacks.secrets import get_webhook_secret, sign, signing_secrets
from app.core import correlation, metrics
from app.core.ids import now_ms
from app.core.loops import log_failure, wait_any
from app.jobs.models import Task
from app.jobs.views import base_url_of, describe_task
from app.net.policy import outbound_policy
from app.net.url_guard import FetchFailed, UrlRefused, post_json
from app.runtime import Runtime

log = logging.getLogger("gengate.callbacks")

EXCERPT_BYTES = 1024
# Most of a receiver's answer is never looked at; reading stops here.
MAX_RESPONSE_BYTES = 64 * 1024
# A claimed delivery whose host is at its cap, with a round waiting here, is handed back for
# at least this long (longer for a slow host: see _busy_retry_ms).
BUSY_HOST_RETRY_MS = 250
# A delivery that could not be prepared (database away) is tried again after this long.
PREPARE_RETRY_MS = 5000
USER_AGENT = "gengate-webhooks"


class CallbackDispatcher:
    def __init__(self, runtime: Runtime, *, owner: str) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self.owner = owner
        self._policy = outbound_policy(
            runtime.settings,
            timeout_s=runtime.settings.callback_timeout_seconds,
            max_bytes=MAX_RESPONSE_BYTES,
        )
        # Longer than any one send, so a live sender never loses its delivery to another.
        self._lease_ms = int((2 * runtime.settings.callback_timeout_seconds + 5) * 1000)
        self._running: set[asyncio.Task[None]] = set()
        self._per_host: Counter[str] = Counter()
        # Per host at its cap, up to one more round of claimed deliveries, each started the
        # moment a send to its host ends: no database trip and no idle slot in between.
        # One round starts within one send's time, so well within the lease.
        self._waiting: defaultdict[str, deque[tuple[CallbackDelivery, float]]] = defaultdict(deque)
        # Recent time of one send per busy host, in seconds (moving average).
        self._send_s: dict[str, float] = {}
        self._recheck: asyncio.TimerHandle | None = None
        self._slot_freed = asyncio.Event()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; then let sends in flight finish for a moment."""
        notifier = self._runtime.notifier
        scan_s = self._settings.scan_interval_seconds
        while not stop.is_set():
            notifier.deliveries.clear()
            self._slot_freed.clear()
            free = self._settings.callback_concurrency - len(self._running)
            claimed = await self._claim(free) if free > 0 else 0
            if free > 0 and claimed == free:
                continue
            waits = [stop, self._slot_freed] + ([notifier.deliveries] if claimed < free else [])
            await wait_any(waits, within_s=scan_s)
        if self._recheck is not None:
            self._recheck.cancel()
        await self._hand_back_waiting()
        if self._running:
            _done, pending = await asyncio.wait(
                self._running, timeout=self._settings.callback_timeout_seconds + 1
            )
            for sending in pending:
                sending.cancel()  # its lease runs out and another worker sends it
            await asyncio.gather(*pending, return_exceptions=True)

    async def _claim(self, free: int) -> int:
        try:
            async with self._runtime.sessions() as session:
                deliveries = await claim_due_deliveries(
                    session, owner=self.owner, limit=free, lease_ms=self._lease_ms
                )
                start, wait, busy = self._sort_claimed(deliveries)
                retries: defaultdict[int, list[str]] = defaultdict(list)
                for delivery in busy:
                    retries[self._busy_retry_ms(_host_of(delivery.url))].append(delivery.id)
                # A statement per wait, not per delivery: a burst to one host hands back
                # hundreds at a time.
                for retry_ms, ids in retries.items():
                    await postpone(
                        session, delivery_ids=ids, owner=self.owner, due_at=now_ms() + retry_ms
                    )
                await session.commit()
        except Exception as exc:
            log_failure(log, "claiming callback deliveries failed", exc)
            return 0
        if retries:
            self._recheck_in(min(retries) / 1000)
        claimed_at = time.monotonic()
        for delivery in wait:
            self._waiting[_host_of(delivery.url)].append((delivery, claimed_at))
        for delivery in start:
            self._start(delivery)
        return len(deliveries)

    def _sort_claimed(
        self, deliveries: list[CallbackDelivery]
    ) -> tuple[list[CallbackDelivery], list[CallbackDelivery], list[CallbackDelivery]]:
        """Which to send now, which to keep for their host's next free slot, which to hand
        back (their host is at its cap with a round waiting)."""
        cap = self._settings.callback_per_host_concurrency
        sending, waiting = Counter(self._per_host), Counter[str]()
        start: list[CallbackDelivery] = []
        wait: list[CallbackDelivery] = []
        busy: list[CallbackDelivery] = []
        for delivery in deliveries:
            host = _host_of(delivery.url)
            if sending[host] < cap:
                sending[host] += 1
                start.append(delivery)
            elif len(self._waiting.get(host, ())) + waiting[host] < cap:
                waiting[host] += 1
                wait.append(delivery)
            else:
                busy.append(delivery)
        return start, wait, busy

    def _busy_retry_ms(self, host: str) -> int:
        """How long to hand back a delivery to a host that is at its cap with a round
        waiting: about one send there, when that round has started and the next is needed.
        A hanging host's backlog is then read once per timeout, not four times a second."""
        return max(BUSY_HOST_RETRY_MS, int(self._send_s.get(host, 0.0) * 1000))

    def _recheck_in(self, delay_s: float) -> None:
        """Claim again when handed-back deliveries come due, not only at the next scan."""
        loop = asyncio.get_running_loop()
        if self._recheck is not None and self._recheck.when() <= loop.time() + delay_s:
            return
        if self._recheck is not None:
            self._recheck.cancel()
        self._recheck = loop.call_later(delay_s, self._rechecked)

    def _rechecked(self) -> None:
        self._recheck = None
        self._slot_freed.set()

    def _start(self, delivery: CallbackDelivery) -> None:
        self._per_host[_host_of(delivery.url)] += 1
        sending = asyncio.create_task(self._deliver(delivery), name=f"callback {delivery.id}")
        self._running.add(sending)
        sending.add_done_callback(self._done)

    def _start_waiting(self, host: str) -> None:
        """Start the next delivery kept for `host`, unless it waited so long that its lease
        could run out mid-send (it then comes due again at the lease's end)."""
        queue = self._waiting[host]
        latest = (self._lease_ms / 1000) - self._settings.callback_timeout_seconds - 1
        while queue:
            delivery, claimed_at = queue.popleft()
            if time.monotonic() - claimed_at < latest:
                self._start(delivery)
                break
        if not queue:
            del self._waiting[host]

    async def _hand_back_waiting(self) -> None:
        """Stopping: deliveries kept for a free slot go back to the queue, due at once."""
        kept = [d.id for queue in self._waiting.values() for d, _ in queue]
        self._waiting.clear()
        if not kept:
            return
        try:
            async with self._runtime.sessions() as session:
                await postpone(session, delivery_ids=kept, owner=self.owner, due_at=now_ms())
                await session.commit()
        except Exception as exc:  # their leases run out and another worker takes them
            log_failure(log, "handing back callback deliveries failed", exc)

    def _done(self, sending: asyncio.Task[None]) -> None:
        self._running.discard(sending)
        self._slot_freed.set()

    async def _deliver(self, delivery: CallbackDelivery) -> None:
        # Its own asyncio task, but started from the one that delivered before it: replace
        # that one's task and correlation ids at once. The latter is known once prepared.
        correlation.bind(correlation_id=None, task_id=delivery.task_id)
        try:
            await self._attempt(delivery)
        except Exception as exc:
            log_failure(log, f"callback {delivery.id} failed before it was recorded", exc)
        finally:
            host = _host_of(delivery.url)
            self._per_host[host] -= 1
            if self._per_host[host] <= 0:
                del self._per_host[host]
            if host in self._waiting:
                self._start_waiting(host)
            if host not in self._per_host:
                self._send_s.pop(host, None)

    async def _attempt(self, delivery: CallbackDelivery) -> None:
        try:
            body, keys, correlation_id = await self._prepare(delivery)
        except Exception as exc:
            log_failure(log, f"preparing callback {delivery.id} failed", exc)
            async with self._runtime.sessions() as session:
                await postpone(
                    session,
                    delivery_ids=[delivery.id],
                    owner=self.owner,
                    due_at=now_ms() + PREPARE_RETRY_MS,
                )
                await session.commit()
            return
        correlation.bind(correlation_id=correlation_id, task_id=delivery.task_id)
        record, retry_after = await self._send(delivery, body, keys)
        self._note_send(_host_of(delivery.url), record.latency_ms or 0)
        number = delivery.attempts + 1
        verdict = judge(
            attempt=number,
            schedule=self._settings.callback_retry_schedule,
            status_code=record.status_code,
            retry_after=retry_after,
        )
        record.number = number
        next_due = None if verdict.wait_s is None else now_ms() + int(verdict.wait_s * 1000)
        async with self._runtime.sessions() as session:
            kept = await record_attempt(
                session,
                delivery=delivery,
                owner=self.owner,
                attempt=record,
                status=verdict.status,
                next_due_at=next_due,
            )
            await session.commit()
        metrics.CALLBACK_ATTEMPTS.labels(verdict.status.value).inc()
        if not kept:
            log.warning("callback %s: lease lost during attempt %d", delivery.id, number)
        elif verdict.wait_s is not None and verdict.wait_s < self._settings.scan_interval_seconds:
            self._recheck_in(verdict.wait_s)  # due before the next scan: claim it on time
        log.info(
            "callback %s attempt %d: %s -> %s",
            delivery.id,
            number,
            record.status_code or record.error,
            verdict.status.value,
        )

    def _note_send(self, host: str, latency_ms: int) -> None:
        before = self._send_s.get(host)
        now_s = latency_ms / 1000
        self._send_s[host] = now_s if before is None else 0.8 * before + 0.2 * now_s

    async def _prepare(self, delivery: CallbackDelivery) -> tuple[str, list[str], str | None]:
        """The body (fixed at the first attempt), the secrets to sign it with now and the
        task's correlation id (for the log lines of the delivery)."""
        async with self._runtime.sessions() as session:
            correlation_id = await session.scalar(
                select(col(Task.correlation_id)).where(col(Task.id) == delivery.task_id)
            )
            body = delivery.body
            if body is None:
                body = await fix_body(
                    session, delivery_id=delivery.id, body=await self._body_of(session, delivery)
                )
            secret = await get_webhook_secret(session, account_id=delivery.account_id)
            keys = signing_secrets(secret, now=now_ms())
            await session.commit()
        return body, keys, correlation_id

    async def _body_of(self, session: AsyncSession, delivery: CallbackDelivery) -> str:
        """`{"code", "msg", "data"}` with recordInfo's data, its URLs valid for days."""
        task = await session.get(Task, delivery.task_id)
        assert task is not None  # the delivery row's foreign key
        view = await describe_task(
            session,
            runtime=self._runtime,
            task=task,
            base_url=base_url_of(self._runtime, None),
            url_ttl_s=self._settings.callback_url_ttl_seconds,
        )
        success = view.state == "success"
        payload = {
            "code": 200 if success else 501,
            "msg": "success" if success else (view.fail_msg or "failed"),
            "data": view.model_dump(mode="json", by_alias=True),
        }
        return json.dumps(payload, separators=(",", ":"), ensure_ascii=False)

    async def _send(
        self, delivery: CallbackDelivery, body: str, keys: list[str]
    ) -> tuple[CallbackAttempt, str | None]:
        """One POST; the attempt as it went, and the receiver's Retry-After if any."""
        timestamp = int(time.time())
        headers = {
            "webhook-id": delivery.id,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(keys, msg_id=delivery.id, timestamp_s=timestamp, body=body),
            "User-Agent": USER_AGENT,
        }
        row = CallbackAttempt(delivery_id=delivery.id, number=0, started_at=now_ms())
        started = time.monotonic()
        retry_after = None
        try:
            response = await post_json(
                self._runtime.http, delivery.url, body.encode(), headers, self._policy
            )
            row.status_code = response.status_code
            row.response_excerpt = _excerpt(response.content)
            retry_after = response.headers.get("retry-after")
            if 300 <= response.status_code < 400:
                row.error = "redirect not followed"
        except UrlRefused as exc:
            row.error = f"refused: {exc.reason}"[:300]
        except FetchFailed as exc:
            row.error = str(exc)[:300]
        row.latency_ms = int((time.monotonic() - started) * 1000)
        return row, retry_after


def _excerpt(content: bytes) -> str:
    """The start of a receiver's answer as text. NUL becomes U+FFFD like any undecodable
    byte: PostgreSQL text cannot hold it, and an attempt that cannot be recorded is sent
    again at every lease expiry."""
    return content[:EXCERPT_BYTES].decode(errors="replace").replace("\x00", "\ufffd")


def _host_of(url: str) -> str:
    return (urlsplit(url).hostname or "").lower()
