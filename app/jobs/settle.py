"""Writing a task's outcome, for the worker that holds it.

A finished task's settle survives a database outage: the stored result is kept and the
settle retried with backoff (the worker still renewing its lease) until it lands, the task
was settled elsewhere, or the task's deadline passes. Making the result again would pay the
upstream twice.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

from sqlalchemy.ext.asyncio import AsyncSession

from app.channels.models import TaskAttempt
from app.core.ids import now_ms
from app.core.outages import is_outage
from app.jobs.lifecycle import fail_task, succeed_task
from app.jobs.models import Task
from app.jobs.queue import release_task
from app.media.service import list_task_media, record_media, store_output
from app.media.storage import MediaStore, StoredBlob
from app.providers.base import Completed, Failed, Outcome, Output, Pending
from app.providers.local_render import MediaInfo
from app.runtime import Runtime

log = logging.getLogger("gengate.worker")
T = TypeVar("T")

# Settle retries during an outage: the first soon (a blip), then doubling up to the cap,
# each with jitter so workers coming back together do not all hit a recovering database.
# The cap is short so that after a long outage this worker's settle lands well before a
# worker that took the task over could have made the result again.
SETTLE_RETRY_FIRST_S = 0.2
SETTLE_RETRY_MAX_S = 2.0


class Settler:
    def __init__(self, runtime: Runtime, *, owner: str) -> None:
        self._runtime = runtime
        self._settings = runtime.settings
        self.owner = owner

    async def release(
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

        await self.commit_retrying(task, write)

    async def retry_later(
        self,
        task: Task,
        reason: str,
        *,
        attempt: TaskAttempt | None = None,
        retry_after_s: float | None = None,
        keep_channel: bool = False,
    ) -> None:
        if task.attempts >= self._settings.max_attempts:
            await self.settle(task, Failed("provider_error", reason), attempt=attempt)
            return
        backoff_s = self._settings.retry_backoff_seconds * 2 ** (task.attempts - 1)
        due = now_ms() + int(max(backoff_s, retry_after_s or 0) * 1000)
        await self.release(task, due, attempt=attempt, forget_channel=not keep_channel)

    async def settle(
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

        await self.commit_retrying(task, write_with_attempt)

    async def commit_retrying(self, task: Task, write: Callable[[AsyncSession], Awaitable[T]]) -> T:
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
            in_use = await self.commit_retrying(task, record_success)
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
    store: MediaStore,
    task_id: str,
    stored: list[tuple[StoredBlob, MediaInfo]],
    *,
    keep: set[str],
) -> None:
    paths = [blob.path for blob, _ in stored if blob.path not in keep]
    if not paths:
        return
    # Best effort, and never in place of the error being handled: a file left behind costs
    # storage only (an unreachable bucket raises the client's own errors, not OSError).
    try:
        store.delete_task(task_id, paths)
    except Exception:
        log.warning("could not discard the result files of task %s", task_id, exc_info=True)
