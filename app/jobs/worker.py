"""Workers: claim due tasks, run them through their provider, settle them.

A worker holds a lease on each task it runs and renews it while working. If the worker
dies, the lease runs out, the task comes due again and another worker takes it over.

A finished task's settle survives a database outage: the worker keeps the stored result and
retries the settle with backoff (still renewing its lease) until it lands, the task was
settled elsewhere, or the task's deadline passes. Making the result again would pay the
upstream twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import secrets
import socket
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.callbacks.dispatcher import CallbackDispatcher
from app.channels.attempts import REFUSED, attempt_record, refused_channels
from app.channels.config import Channel
from app.channels.models import TaskAttempt
from app.core.errors import AppError
from app.core.ids import now_ms
from app.core.loops import log_failure, wait_any
from app.core.outages import is_outage
from app.jobs.lifecycle import expire_overdue, fail_task, succeed_task
from app.jobs.models import Task
from app.jobs.queue import assign_channel, claim_due_tasks, release_task, renew_lease
from app.media.service import list_task_media, record_media, store_output
from app.media.storage import LocalMediaStore, StoredBlob
from app.providers.base import (
    Completed,
    Failed,
    Outcome,
    Output,
    Pending,
    Provider,
    ProviderJob,
    ProviderUnavailable,
)
from app.providers.local_render import MediaInfo
from app.runtime import Runtime
from app.uploads.service import purge_expired_uploads

log = logging.getLogger("gengate.worker")
T = TypeVar("T")

# Settle retries during an outage: the first soon (a blip), then doubling up to the cap,
# each with jitter so workers coming back together do not all hit a recovering database.
# The cap is short so that after a long outage this worker's settle lands well before a
# worker that took the task over could have made the result again.
SETTLE_RETRY_FIRST_S = 0.2
SETTLE_RETRY_MAX_S = 2.0

SUBMIT, POLL = "submit", "poll"
INTERNAL_FAILURE = "gengate failed while running the task"
# Why a task that an upstream may hold is not sent again (and is refunded).
UNCONFIRMED = (
    "the provider did not confirm it took the task, and it may still run it; to never run "
    "(or bill) it twice, gengate did not send it again"
)


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

    @property
    def busy(self) -> int:
        """How many tasks this worker is running (or polling) now."""
        return len(self._running) + len(self._polling)

    async def run(self, stop: asyncio.Event) -> None:
        """Work until `stop` is set; then let running tasks finish for a moment."""
        notifier = self._runtime.notifier
        next_sweep = 0
        # Callbacks go out beside the tasks, from a pool of their own.
        dispatcher = CallbackDispatcher(self._runtime, owner=self.owner)
        delivering = asyncio.create_task(dispatcher.run(stop), name="callbacks")
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
        for task in tasks:
            if task.id in self._active:
                # Our own settle retry outlived the lease and the scan handed the task back
                # to us: the retry still holds the result, so there is nothing to run.
                continue
            self._active.add(task.id)
            running = asyncio.create_task(self._process(task), name=f"task {task.id}")
            pool.add(running)
            running.add_done_callback(self._done)
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

    async def _drain(self, grace_s: float = 10.0) -> None:
        working = self._running | self._polling
        if not working:
            return
        _done, pending = await asyncio.wait(working, timeout=grace_s)
        for running in pending:
            running.cancel()  # its lease runs out and another worker takes over
        await asyncio.gather(*pending, return_exceptions=True)

    async def _process(self, task: Task) -> None:
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
                await self._settle(task, Failed("internal_error", INTERNAL_FAILURE))
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
            await self._settle(task, failed)
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
                await self._settle(task, Failed("provider_error", gone))
                return
            await self._call(task, job, lost, holder, POLL)
            return
        if task.attempts > self._settings.max_attempts:
            failed = Failed("provider_error", f"gave up after {task.attempts - 1} attempts")
            await self._settle(task, failed)
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
                await self._settle(task, Failed("provider_error", UNCONFIRMED))
                return None
            if self._provider(sent_to, task).idempotent_submit:
                return sent_to
            attempt = attempt_record(
                task_id=task.id,
                channel=sent_to,
                kind=SUBMIT,
                outcome="interrupted",
                started_ms=now_ms(),
                message="the worker sending it stopped before the upstream answered",
            )
            await self._settle(task, Failed("provider_error", UNCONFIRMED), attempt=attempt)
            return None
        tried = await self._refused_channels(task) if task.attempts > 1 else set()
        # Once every channel has refused the task, the backoff is over: start again.
        channel = router.route(task.model, exclude=tried) or (
            router.route(task.model) if tried else None
        )
        if channel is None:
            await self._retry_later(task, f"no channel can take {task.model} now")
            return None
        if channel.adapter != "local":  # the local renderer holds nothing across a crash
            await self._commit_retrying(
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

        started = now_ms()
        upstream_id = task.upstream_id
        call = (
            provider.poll(job, upstream_id)
            if upstream_id is not None
            else provider.submit(job, report=report)
        )
        try:
            outcome = await self._unless_lost(task, call, lost)
        except ProviderUnavailable as exc:
            self._channels.router.record(channel.name, fail_code="provider_error")
            await self._unavailable(task, channel, kind, started, exc)
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
            if kind == SUBMIT and await self._fail_over(task, channel, started, outcome.message):
                return
        if kind == POLL and isinstance(outcome, Pending):
            await self._settle(task, outcome)  # an unchanged upstream job: not worth a row
            return
        attempt = attempt_record(
            task_id=task.id,
            channel=channel,
            kind=kind,
            outcome=_outcome_name(outcome),
            started_ms=started,
            fail_code=fail_code,
            upstream_id=outcome.upstream_id if isinstance(outcome, Pending) else upstream_id,
            message=outcome.message if isinstance(outcome, Failed) else None,
        )
        await self._settle(task, outcome, attempt=attempt, channel=channel.name)

    async def _unless_lost(
        self, task: Task, call: Awaitable[Outcome], lost: asyncio.Event
    ) -> Outcome | None:
        """The provider's outcome, or None when the lease was lost while it worked."""
        # A worker whose lease an outage outlasted may still settle its finished result
        # (see succeed_task); when that happens while we run the task, stop at once.
        watch = asyncio.create_task(self._watch_finished(task, lost))
        try:
            work = asyncio.ensure_future(call)
            await _wait_any_future(work, lost)
            if lost.is_set() and not work.done():
                work.cancel()
                log.info("task %s: lease lost or settled elsewhere, dropping the work", task.id)
                return None
            return work.result()
        finally:
            watch.cancel()

    async def _unavailable(
        self, task: Task, channel: Channel, kind: str, started: int, exc: ProviderUnavailable
    ) -> None:
        """An upstream that could not answer: poll again later, fail over, retry, or (when
        the upstream may have taken the job) never send it anywhere else."""
        reason = str(exc) or "the provider is unavailable"
        if kind == POLL:
            # The upstream still holds the job: ask again later; the deadline bounds this.
            attempt = attempt_record(
                task_id=task.id,
                channel=channel,
                kind=kind,
                outcome="unavailable",
                started_ms=started,
                upstream_id=task.upstream_id,
                message=reason,
            )
            wait_s = min(self._settings.retry_backoff_seconds * 2 ** min(task.polls, 6), 60.0)
            due = now_ms() + int(max(wait_s, exc.retry_after_s or 0) * 1000)
            await self._release(task, due, attempt=attempt)
            return
        if not exc.ambiguous:
            if not await self._fail_over(task, channel, started, reason):
                attempt = attempt_record(
                    task_id=task.id,
                    channel=channel,
                    kind=kind,
                    outcome=REFUSED,
                    started_ms=started,
                    message=reason,
                )
                await self._retry_later(
                    task, reason, attempt=attempt, retry_after_s=exc.retry_after_s
                )
            return
        attempt = attempt_record(
            task_id=task.id,
            channel=channel,
            kind=kind,
            outcome="ambiguous",
            started_ms=started,
            message=reason,
        )
        if self._provider(channel, task).idempotent_submit:
            await self._retry_later(
                task, reason, attempt=attempt, retry_after_s=exc.retry_after_s, keep_channel=True
            )
            return
        await self._settle(task, Failed("provider_timeout", UNCONFIRMED), attempt=attempt)

    async def _fail_over(self, task: Task, channel: Channel, started: int, reason: str) -> bool:
        """Hand a task `channel` refused to another channel at once, if one could take it.
        False (nothing done) when no other channel is left."""
        tried = (await self._refused_channels(task) if task.attempts > 1 else set()) | {
            channel.name
        }
        if task.attempts >= self._settings.max_attempts or not self._channels.router.available(
            task.model, exclude=tried
        ):
            return False
        attempt = attempt_record(
            task_id=task.id,
            channel=channel,
            kind=SUBMIT,
            outcome=REFUSED,
            started_ms=started,
            message=reason,
        )
        log.info("task %s: channel %s refused it (%s); failing over", task.id, channel.name, reason)
        await self._release(task, now_ms(), attempt=attempt, forget_channel=True)
        self._runtime.notifier.wake_workers()
        return True

    async def _release(
        self,
        task: Task,
        due: int,
        *,
        attempt: TaskAttempt | None = None,
        forget_channel: bool = False,
    ) -> None:
        async def write(session: AsyncSession) -> bool:
            if attempt is not None:
                session.add(attempt)
            return await release_task(
                session,
                task_id=task.id,
                owner=self.owner,
                due_at=due,
                forget_channel=forget_channel,
            )

        await self._commit_retrying(task, write)

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

    async def _retry_later(
        self,
        task: Task,
        reason: str,
        *,
        attempt: TaskAttempt | None = None,
        retry_after_s: float | None = None,
        keep_channel: bool = False,
    ) -> None:
        if task.attempts >= self._settings.max_attempts:
            await self._settle(task, Failed("provider_error", reason), attempt=attempt)
            return
        backoff_s = self._settings.retry_backoff_seconds * 2 ** (task.attempts - 1)
        due = now_ms() + int(max(backoff_s, retry_after_s or 0) * 1000)
        await self._release(task, due, attempt=attempt, forget_channel=not keep_channel)

    async def _settle(
        self,
        task: Task,
        outcome: Outcome,
        *,
        attempt: TaskAttempt | None = None,
        channel: str | None = None,
    ) -> None:
        if isinstance(outcome, Completed):
            cost = json.dumps(outcome.cost) if outcome.cost else None
            await self._store_results(task, outcome.outputs, attempt, channel, cost)
            return
        if isinstance(outcome, Pending):
            due = now_ms() + int(outcome.poll_after_s * 1000)
            pending = outcome

            def write(session: AsyncSession) -> Awaitable[bool]:
                return release_task(
                    session,
                    task_id=task.id,
                    owner=self.owner,
                    due_at=due,
                    upstream_id=pending.upstream_id,
                    progress=pending.progress,
                    queue_position=pending.queue_position,
                )
        else:
            failed = outcome

            def write(session: AsyncSession) -> Awaitable[bool]:
                return fail_task(
                    session,
                    notifier=self._runtime.notifier,
                    task_id=task.id,
                    code=failed.code,
                    message=failed.message,
                    owner=self.owner,
                    channel=channel,
                )

        async def write_with_attempt(session: AsyncSession) -> bool:
            if attempt is not None:
                session.add(attempt)
            return await write(session)

        await self._commit_retrying(task, write_with_attempt)

    async def _commit_retrying(
        self, task: Task, write: Callable[[AsyncSession], Awaitable[T]]
    ) -> T:
        """Run `write` in a transaction and commit it, retrying through a database outage.

        Retries with jittered, capped exponential backoff while the failure is an outage
        and the task's deadline has not passed (after it the expiry sweep settles the task,
        so there is nothing left to write). Anything else is raised at once.
        """
        delay_s = SETTLE_RETRY_FIRST_S
        retries = 0
        while True:
            try:
                async with self._runtime.sessions() as session:
                    result = await write(session)
                    await session.commit()
                if retries:
                    log.info("settled task %s after %d retries", task.id, retries)
                return result
            except Exception as exc:
                if not is_outage(exc) or now_ms() >= task.deadline_at:
                    raise
                if not retries:
                    log.warning(
                        "settling task %s failed: database unavailable (%s); "
                        "keeping the result and retrying",
                        task.id,
                        type(exc).__name__,
                    )
            retries += 1
            await asyncio.sleep(random.uniform(delay_s / 2, delay_s))  # noqa: S311 (jitter)
            delay_s = min(delay_s * 2, SETTLE_RETRY_MAX_S)

    async def _store_results(
        self,
        task: Task,
        outputs: list[Output],
        attempt: TaskAttempt | None,
        channel: str | None,
        cost: str | None,
    ) -> None:
        """Copy results into our storage, then commit success and the files together.

        The files are written once: a settle that fails for an outage is retried with
        the same files (see _commit_retrying), never by making the result again.
        """
        store = self._runtime.media_store
        stored: list[tuple[StoredBlob, MediaInfo]] = []

        async def record_success(session: AsyncSession) -> set[str] | None:
            """None once recorded; else the paths the task's own files use (keep those)."""
            succeeded = await succeed_task(
                session,
                notifier=self._runtime.notifier,
                task_id=task.id,
                upstream_cost=cost,
                channel=channel,
            )
            if not succeeded:
                await session.rollback()
                return {m.path for m in await list_task_media(session, task_id=task.id)}
            for position, (blob, info) in enumerate(stored):
                await record_media(
                    session,
                    task_id=task.id,
                    account_id=task.account_id,
                    position=position,
                    blob=blob,
                    info=info,
                )
            if attempt is not None:
                session.add(attempt)
            return None

        try:
            for position, output in enumerate(outputs):
                stored.append(
                    await asyncio.to_thread(
                        store_output, store, task_id=task.id, position=position, data=output.data
                    )
                )
            in_use = await self._commit_retrying(task, record_success)
        except BaseException:
            _discard(store, task.id, stored, keep=set())
            raise
        if in_use is None:
            return
        log.info("task %s was settled elsewhere (canceled or expired); result dropped", task.id)
        # A worker that made the same result on the same day wrote the same paths; those
        # files are the task's now and must stay.
        _discard(store, task.id, stored, keep=in_use)


def _discard(
    store: LocalMediaStore,
    task_id: str,
    stored: list[tuple[StoredBlob, MediaInfo]],
    *,
    keep: set[str],
) -> None:
    paths = [blob.path for blob, _ in stored if blob.path not in keep]
    if paths:
        with contextlib.suppress(OSError):
            store.delete_task(task_id, paths)


async def _wait_any_future(work: asyncio.Future[Outcome], lost: asyncio.Event) -> None:
    lost_wait: asyncio.Future[Any] = asyncio.ensure_future(lost.wait())
    pending: list[asyncio.Future[Any]] = [work, lost_wait]
    try:
        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost_wait.cancel()


def _outcome_name(outcome: Outcome) -> str:
    if isinstance(outcome, Completed):
        return "succeeded"
    return "accepted" if isinstance(outcome, Pending) else "failed"
