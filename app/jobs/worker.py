"""Workers: claim due tasks, run them through their provider, settle them.

A worker holds a lease on each task it runs and renews it while working. If the worker
dies, the lease runs out, the task comes due again and another worker takes it over. A
worker told to stop (SIGTERM) does not wait for that: it lets its tasks finish for the
shutdown grace period, then gives the rest back to the queue, due at once.

Outcomes are written by app.jobs.settle, which rides out a database outage.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Coroutine
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks.dispatcher import CallbackDispatcher
from app.channels.attempts import REFUSED, UpstreamCall, refused_channels
from app.channels.config import Channel
from app.core import correlation, metrics
from app.core.errors import AppError
from app.core.ids import now_ms
from app.core.loops import log_failure, wait_any
from app.jobs.lifecycle import expire_overdue
from app.jobs.models import Task
from app.jobs.queue import assign_channel, claim_due_tasks, give_back_task, renew_lease
from app.jobs.settle import Settler
from app.maintenance.pruner import Pruner
from app.providers.base import (
    Completed,
    Failed,
    Outcome,
    Pending,
    Provider,
    ProviderJob,
    ProviderUnavailable,
)
from app.runtime import Runtime
from app.uploads.service import purge_expired_uploads

log = logging.getLogger("gengate.worker")


SUBMIT, POLL = "submit", "poll"
INTERNAL_FAILURE = "gengate failed while running the task"
# Why a task that an upstream may hold is not sent again (and is refunded).
UNCONFIRMED = (
    "the provider did not confirm it took the task, and it may still run it; to never run "
    "(or bill) it twice, gengate did not send it again"
)
# After the grace period, how long giving tasks back (and settles already under way) may
# take before a stopping worker cancels what is left: those leases then run out, as after
# a crash.
GIVE_BACK_WITHIN_S = 5.0


class Worker:
    def __init__(self, runtime: Runtime, *, concurrency: int | None = None) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._concurrency = concurrency or runtime.settings.worker_concurrency
        self._lease_ms = int(runtime.settings.lease_seconds * 1000)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._poll_concurrency = runtime.settings.poll_concurrency
        self._channels = runtime.channels
        self._running: set[asyncio.Task[None]] = set()
        self._polling: set[asyncio.Task[None]] = set()
        # Tasks this worker is processing (or settling), so it never runs one twice at once.
        self._active: set[str] = set()
        self._slot_freed = asyncio.Event()
        # Set once a stopping worker's grace period is over: work still running is given back.
        self._giving_back = asyncio.Event()
        self._settler = Settler(runtime, owner=self.owner)

    @property
    def busy(self) -> int:
        """How many tasks this worker is running (or polling) now."""
        return len(self._running) + len(self._polling)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; then let running tasks finish or give them back."""
        notifier = self._runtime.notifier
        next_sweep = 0
        # Callbacks go out beside the tasks, from a pool of their own.
        dispatcher = CallbackDispatcher(self._runtime, owner=self.owner)
        delivering = asyncio.create_task(dispatcher.run(stop), name="callbacks")
        # Retention, when the operator turned it on: one process of the deployment at a time.
        pruner = Pruner(self._runtime, owner=self.owner)
        pruning = asyncio.create_task(pruner.run(stop), name="retention")
        while not stop.is_set():
            # Cleared before claiming, so a wake-up that arrives during the claim counts.
            notifier.work.clear()
            self._slot_freed.clear()
            free = self._concurrency - len(self._running)
            free_polls = self._poll_concurrency - len(self._polling)
            claimed = await self._claim(free, self._running) if free > 0 else 0
            polled = await self._claim(free_polls, self._polling, polls=True) if free_polls else 0
            if now_ms() >= next_sweep:
                await self._sweep()
                next_sweep = now_ms() + int(self._settings.scan_interval_seconds * 1000)
            if (free > 0 and claimed == free) or (free_polls > 0 and polled == free_polls):
                continue  # there may be more due work right now
            room = claimed < free or polled < free_polls
            await wait_any(
                [stop, self._slot_freed] + ([notifier.work] if room else []),
                within_s=self._settings.scan_interval_seconds,
            )
        await self._drain()
        await delivering
        await pruning

    async def _claim(self, free: int, pool: set[asyncio.Task[None]], *, polls: bool = False) -> int:
        try:
            async with self._runtime.sessions() as session:
                tasks = await claim_due_tasks(
                    session, owner=self.owner, limit=free, lease_ms=self._lease_ms, polls=polls
                )
                await session.commit()
        except Exception as exc:
            log_failure(log, "claiming tasks failed", exc)
            return 0
        metrics.picked_up(tasks)
        for task in tasks:
            if task.id in self._active:
                # Our own settle retry outlived the lease and the scan handed the task back
                # to us: the retry still holds the result, so there is nothing to run.
                continue
            self._active.add(task.id)
            running = asyncio.create_task(self._process(task), name=f"task {task.id}")
            pool.add(running)
            running.add_done_callback(self._done)
            metrics.slot_taken(running, polls=polls)
        return len(tasks)

    def _done(self, running: asyncio.Task[None]) -> None:
        self._running.discard(running)
        self._polling.discard(running)
        self._slot_freed.set()

    async def _sweep(self) -> None:
        try:
            async with self._runtime.sessions() as session:
                expired = await expire_overdue(
                    session, notifier=self._runtime.notifier, now=now_ms()
                )
                purged = await purge_expired_uploads(session, self._runtime.media_store, now_ms())
                await session.commit()
            if expired:
                log.info("expired %d overdue tasks", expired)
            if purged:
                log.info("deleted %d expired uploads", purged)
        except Exception as exc:
            log_failure(log, "expiry sweep failed", exc)

    async def _drain(self) -> None:
        """Let running tasks finish for the grace period, then give the rest back.

        A task given back is due at once, so another worker (after a deploy, one of the new
        ones) takes it now rather than when its lease would have run out.
        """
        working = self._running | self._polling
        if not working:
            return
        _done, pending = await asyncio.wait(working, timeout=self._settings.shutdown_grace_seconds)
        if not pending:
            return
        self._giving_back.set()
        _done, pending = await asyncio.wait(pending, timeout=GIVE_BACK_WITHIN_S)
        for running in pending:
            running.cancel()  # its lease runs out and another worker takes over
        await asyncio.gather(*pending, return_exceptions=True)

    async def _process(self, task: Task) -> None:
        # Its own asyncio task: every line logged for it, the heartbeat's too, names it.
        correlation.bind(correlation_id=task.correlation_id, task_id=task.id)
        lost = asyncio.Event()
        # One heartbeat from claim to settle: storing a large result and retrying a settle
        # through an outage both take time during which no other worker may take over.
        heartbeat = asyncio.create_task(self._heartbeat(task.id, lost))
        try:
            try:
                await self._run(task, lost)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s failed inside gengate", task.id)
                await self._settler.settle(task, Failed("internal_error", INTERNAL_FAILURE))
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("settling task %s failed; it runs again once its lease ends", task.id)
        finally:
            heartbeat.cancel()
            self._active.discard(task.id)

    async def _run(self, task: Task, lost: asyncio.Event) -> None:
        """Submit the task to a channel, or poll the channel that holds it, and act on the
        answer: settle it, hand it back for a later poll or retry, or fail over."""
        try:
            model = self._runtime.catalog.get(task.model)
        except AppError:
            failed = Failed("internal_error", f"model {task.model} is no longer in the catalog")
            await self._settler.settle(task, failed)
            return
        job = ProviderJob(
            task_id=task.id,
            model_id=task.model,
            scene=model.scene,
            media_type=task.media_type,
            input=json.loads(task.input_json),
            attempt=task.attempts,
            polls=task.polls,
        )
        if task.upstream_id is not None:
            holder = self._channels.get(task.channel or "")
            if holder is None:
                gone = f"channel {task.channel} that holds this task is no longer configured"
                await self._settler.settle(task, Failed("provider_error", gone))
                return
            await self._call(task, job, lost, holder, POLL)
            return
        if task.attempts > self._settings.max_attempts:
            failed = Failed("provider_error", f"gave up after {task.attempts - 1} attempts")
            await self._settler.settle(task, failed)
            return
        channel = await self._channel_for(task)
        if channel is not None:
            await self._call(task, job, lost, channel, SUBMIT)

    async def _channel_for(self, task: Task) -> Channel | None:
        """Where this attempt goes; None when the task was settled or handed back instead.

        A task that already names a channel was being sent there when its worker stopped
        (or the upstream's answer was lost): the upstream may hold it. Only an upstream that
        dedupes by our task id may be asked again; otherwise the task fails, refunded,
        rather than run (and be billed) twice.
        """
        router = self._channels.router
        if task.channel is not None:
            sent_to = self._channels.get(task.channel)
            if sent_to is None:
                await self._settler.settle(task, Failed("provider_error", UNCONFIRMED))
                return None
            if self._provider(sent_to, task).idempotent_submit:
                return sent_to
            attempt = UpstreamCall(task.id, sent_to, SUBMIT).record(
                "interrupted", message="the worker sending it stopped before the upstream answered"
            )
            await self._settler.settle(task, Failed("provider_error", UNCONFIRMED), attempt=attempt)
            return None
        tried = await self._refused_channels(task) if task.attempts > 1 else set()
        # Once every channel has refused the task, the backoff is over: start again.
        channel = router.route(task.model, exclude=tried) or (
            router.route(task.model) if tried else None
        )
        if channel is None:
            await self._settler.retry_later(task, f"no channel can take {task.model} now")
            return None
        if channel.adapter != "local":  # the local renderer holds nothing across a crash
            await self._settler.commit_retrying(
                task,
                lambda session: assign_channel(
                    session, task_id=task.id, owner=self.owner, channel=channel.name
                ),
            )
        return channel

    async def _refused_channels(self, task: Task) -> set[str]:
        async with self._runtime.sessions() as session:
            return await refused_channels(session, task_id=task.id)

    def _provider(self, channel: Channel, task: Task) -> Provider:
        return self._channels.provider(channel, task.model)

    async def _call(
        self, task: Task, job: ProviderJob, lost: asyncio.Event, channel: Channel, kind: str
    ) -> None:
        provider = self._provider(channel, task)
        if channel.params:
            job = dataclasses.replace(job, input=channel.upstream_input(job.input))

        async def report(progress: int) -> None:
            if not await self._renew(task.id, progress):
                lost.set()

        sent = UpstreamCall(task.id, channel, kind)
        upstream_id = task.upstream_id
        work = (
            provider.poll(job, upstream_id)
            if upstream_id is not None
            else provider.submit(job, report=report)
        )
        try:
            outcome = await self._unless_lost(task, work, lost)
        except ProviderUnavailable as exc:
            self._channels.router.record(channel.name, fail_code="provider_error")
            await self._unavailable(task, sent, exc)
            return
        if outcome is None:
            return
        fail_code = outcome.code if isinstance(outcome, Failed) else None
        self._channels.router.record(channel.name, fail_code=fail_code)
        if isinstance(outcome, Failed) and outcome.details.get("channel_fault"):
            log.error(
                "channel %s cannot serve: %s (%s); task %s",
                channel.name,
                outcome.details["channel_fault"],
                outcome.message,
                task.id,
            )
            if kind == SUBMIT and await self._fail_over(task, sent, outcome.message):
                return
        if kind == POLL and isinstance(outcome, Pending):
            await self._settler.settle(task, outcome)  # an unchanged upstream job: not worth a row
            return
        attempt = sent.record(
            _outcome_name(outcome),
            fail_code=fail_code,
            upstream_id=outcome.upstream_id if isinstance(outcome, Pending) else upstream_id,
            message=outcome.message if isinstance(outcome, Failed) else None,
        )
        await self._settler.settle(task, outcome, attempt=attempt, channel=channel.name)
        log.info("task %s: %s on channel %s", task.id, attempt.outcome, channel.name)

    async def _unless_lost(
        self, task: Task, call: Coroutine[Any, Any, Outcome], lost: asyncio.Event
    ) -> Outcome | None:
        """The provider's outcome, or None when the lease was lost while it worked, or when
        this worker is stopping and gave the task back instead."""
        if self._giving_back.is_set():
            call.close()  # never started: the upstream did not see it
            await self._give_back(task, sent=False)
            return None
        # A worker whose lease an outage outlasted may still settle its finished result
        # (see succeed_task); when that happens while we run the task, stop at once.
        watch = asyncio.create_task(self._watch_finished(task, lost))
        try:
            work = asyncio.ensure_future(call)
            await _wait_any_future(work, lost, self._giving_back)
            if work.done():
                return work.result()
            work.cancel()
            if lost.is_set():
                log.info("task %s: lease lost or settled elsewhere, dropping the work", task.id)
            else:
                await self._give_back(task, sent=True)
            return None
        finally:
            watch.cancel()

    async def _give_back(self, task: Task, *, sent: bool) -> None:
        """Hand the task back to the queue, due now, for another worker: this one stops.

        What the row says decides what the next worker does (see give_back_task): an upstream
        that has the job is polled, never sent it again. `sent`: the call was made.
        """

        def write(session: AsyncSession) -> Awaitable[bool]:
            return give_back_task(session, task_id=task.id, owner=self.owner, sent=sent)

        if await self._settler.commit_retrying(task, write):
            log.info("task %s given back to the queue: this worker is stopping", task.id)
            self._runtime.notifier.wake_workers()

    async def _unavailable(self, task: Task, sent: UpstreamCall, exc: ProviderUnavailable) -> None:
        """An upstream that could not answer: poll again later, fail over, retry, or (when
        the upstream may have taken the job) never send it anywhere else."""
        reason = str(exc) or "the provider is unavailable"
        if sent.kind == POLL:
            # The upstream still holds the job: ask again later; the deadline bounds this.
            attempt = sent.record("unavailable", upstream_id=task.upstream_id, message=reason)
            wait_s = min(self._settings.retry_backoff_seconds * 2 ** min(task.polls, 6), 60.0)
            due = now_ms() + int(max(wait_s, exc.retry_after_s or 0) * 1000)
            await self._settler.release(task, due, attempt=attempt)
        elif not exc.ambiguous:
            if not await self._fail_over(task, sent, reason):
                attempt = sent.record(REFUSED, message=reason)
                await self._settler.retry_later(
                    task, reason, attempt=attempt, retry_after_s=exc.retry_after_s
                )
        elif self._provider(sent.channel, task).idempotent_submit:
            # The upstream dedupes by our id: asking it again cannot start a second job.
            attempt = sent.record("ambiguous", message=reason)
            await self._settler.retry_later(
                task, reason, attempt=attempt, retry_after_s=exc.retry_after_s, keep_channel=True
            )
        else:
            attempt = sent.record("ambiguous", message=reason)
            failed = Failed("provider_timeout", UNCONFIRMED)
            await self._settler.settle(task, failed, attempt=attempt)

    async def _fail_over(self, task: Task, sent: UpstreamCall, reason: str) -> bool:
        """Hand a task the channel refused to another channel at once, if one could take
        it. False (nothing done) when no other channel is left."""
        refused = await self._refused_channels(task) if task.attempts > 1 else set()
        router = self._channels.router
        if task.attempts >= self._settings.max_attempts or not router.available(
            task.model, exclude=refused | {sent.channel.name}
        ):
            return False
        name = sent.channel.name
        log.info("task %s: channel %s refused it (%s); failing over", task.id, name, reason)
        attempt = sent.record(REFUSED, message=reason)
        await self._settler.release(task, now_ms(), attempt=attempt, forget_channel=True)
        self._runtime.notifier.wake_workers()
        return True

    async def _watch_finished(self, task: Task, lost: asyncio.Event) -> None:
        within_s = max(0.0, (task.deadline_at - now_ms()) / 1000)
        if await self._runtime.notifier.wait_finished(task.id, within_s):
            lost.set()

    async def _heartbeat(self, task_id: str, lost: asyncio.Event) -> None:
        interval = self._settings.lease_seconds / 3
        while not lost.is_set():
            await asyncio.sleep(interval)
            if not await self._renew(task_id, None):
                lost.set()

    async def _renew(self, task_id: str, progress: int | None) -> bool:
        try:
            async with self._runtime.sessions() as session:
                kept = await renew_lease(
                    session,
                    task_id=task_id,
                    owner=self.owner,
                    lease_ms=self._lease_ms,
                    progress=progress,
                )
                await session.commit()
                return kept
        except Exception:
            log.warning("lease renewal of %s failed; will try again", task_id)
            return True


async def _wait_any_future(work: asyncio.Future[Outcome], *events: asyncio.Event) -> None:
    waits: list[asyncio.Future[Any]] = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait([work, *waits], return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Completed):
        return "succeeded"
    return "accepted" if isinstance(outcome, Pending) else "failed"
