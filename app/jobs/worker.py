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
from app.core.errors import AppError
from app.core.ids import now_ms
from app.core.loops import log_failure, wait_any
from app.core.outages import is_outage
from app.jobs.lifecycle import expire_overdue, fail_task, succeed_task
from app.jobs.models import Task
from app.jobs.queue import claim_due_tasks, release_task, renew_lease
from app.media.service import list_task_media, record_media, store_output
from app.media.storage import LocalMediaStore, StoredBlob
from app.providers.base import (
    Completed,
    Failed,
    Outcome,
    Output,
    Pending,
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


class Worker:
    def __init__(self, runtime: Runtime, *, concurrency: int | None = None) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self._concurrency = concurrency or runtime.settings.worker_concurrency
        self._lease_ms = int(runtime.settings.lease_seconds * 1000)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._running: set[asyncio.Task[None]] = set()
        # Tasks this worker is processing (or settling), so it never runs one twice at once.
        self._active: set[str] = set()
        self._slot_freed = asyncio.Event()

    @property
    def busy(self) -> int:
        """How many tasks this worker is running now."""
        return len(self._running)

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
            claimed = await self._claim(free) if free > 0 else 0
            if now_ms() >= next_sweep:
                await self._sweep()
                next_sweep = now_ms() + int(self._settings.scan_interval_seconds * 1000)
            if free > 0 and claimed == free:
                continue  # there may be more due work right now
            await wait_any(
                [stop, self._slot_freed] + ([notifier.work] if claimed < free else []),
                within_s=self._settings.scan_interval_seconds,
            )
        await self._drain()
        await delivering

    async def _claim(self, free: int) -> int:
        try:
            async with self._runtime.sessions() as session:
                tasks = await claim_due_tasks(
                    session, owner=self.owner, limit=free, lease_ms=self._lease_ms
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
            self._running.add(running)
            running.add_done_callback(self._done)
        return len(tasks)

    def _done(self, running: asyncio.Task[None]) -> None:
        self._running.discard(running)
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
        if not self._running:
            return
        _done, pending = await asyncio.wait(self._running, timeout=grace_s)
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
                outcome = await self._run_provider(task, lost)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("task %s failed inside gengate", task.id)
                outcome = Failed("internal_error", "gengate failed while running the task")
            if outcome is not None:
                await self._settle(task, outcome)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("settling task %s failed; it runs again once its lease ends", task.id)
        finally:
            heartbeat.cancel()
            self._active.discard(task.id)

    async def _run_provider(self, task: Task, lost: asyncio.Event) -> Outcome | None:
        """The provider's outcome, or None when the lease was lost or a retry is queued."""
        if task.attempts > self._settings.max_attempts:
            return Failed("provider_error", f"gave up after {task.attempts - 1} attempts")
        try:
            model = self._runtime.catalog.get(task.model)
        except AppError:
            return Failed("internal_error", f"model {task.model} is no longer in the catalog")
        job = ProviderJob(
            task_id=task.id,
            model_id=task.model,
            scene=model.scene,
            media_type=task.media_type,
            input=json.loads(task.input_json),
            attempt=task.attempts,
        )
        provider = self._runtime.providers[task.provider]

        async def report(progress: int) -> None:
            if not await self._renew(task.id, progress):
                lost.set()

        # A worker whose lease an outage outlasted may still settle its finished result
        # (see succeed_task); when that happens while we run the task, stop at once.
        watch = asyncio.create_task(self._watch_finished(task, lost))
        try:
            call = (
                provider.poll(job, task.upstream_id)
                if task.upstream_id
                else provider.submit(job, report=report)
            )
            work = asyncio.ensure_future(call)
            await _wait_any_future(work, lost)
            if lost.is_set() and not work.done():
                work.cancel()
                log.info("task %s: lease lost or settled elsewhere, dropping the work", task.id)
                return None
            return work.result()
        except ProviderUnavailable as exc:
            await self._retry_later(task, str(exc))
            return None
        finally:
            watch.cancel()

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

    async def _retry_later(self, task: Task, reason: str) -> None:
        if task.attempts >= self._settings.max_attempts:
            await self._settle(task, Failed("provider_error", reason))
            return
        backoff_ms = int(self._settings.retry_backoff_seconds * 1000 * 2 ** (task.attempts - 1))
        due = now_ms() + backoff_ms
        await self._commit_retrying(
            task,
            lambda session: release_task(session, task_id=task.id, owner=self.owner, due_at=due),
        )

    async def _settle(self, task: Task, outcome: Outcome) -> None:
        if isinstance(outcome, Completed):
            await self._store_results(task, outcome.outputs)
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
                )

        await self._commit_retrying(task, write)

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

    async def _store_results(self, task: Task, outputs: list[Output]) -> None:
        """Copy results into our storage, then commit success and the files together.

        The files are written once: a settle that fails for an outage is retried with
        the same files (see _commit_retrying), never by making the result again.
        """
        store = self._runtime.media_store
        stored: list[tuple[StoredBlob, MediaInfo]] = []

        async def record_success(session: AsyncSession) -> set[str] | None:
            """None once recorded; else the paths the task's own files use (keep those)."""
            if not await succeed_task(session, notifier=self._runtime.notifier, task_id=task.id):
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
