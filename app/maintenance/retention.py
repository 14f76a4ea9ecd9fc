"""Retention: what goes once a finished task is older than the operator's setting.

With a task go its result files (from the media store, then their rows), its callback
deliveries and their attempts, and its upstream calls (task_attempt); X-Request-Id groups
(task_group) older than the cutoff go too. Thumbnails are made on request, never stored.

Never pruned: waiting tasks; a task whose callback is still being delivered (it goes once
the delivery ends); and the credit ledger, whose rows keep their task id as a plain value
(no foreign key), so every balance still equals the sum of its ledger.

A batch reads its tasks, deletes their files with no transaction open (the SQLite engine
has one connection, which a slow bucket must not hold), then deletes the rows of the tasks
whose files are gone, checking again that they may go (a task redelivered meanwhile stays,
without its files: it was past retention already). A file is never left without the row
that leads to it: a failed delete keeps the task for the next run.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeAlias

from sqlalchemy import Select, delete, exists, func, select, tuple_
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.callbacks.models import CallbackAttempt, CallbackDelivery, DeliveryStatus
from app.channels.models import TaskAttempt
from app.jobs.models import Task, TaskGroup, TaskStatus
from app.jobs.viewcache import task_changed_after_commit
from app.media.models import MediaFile
from app.media.storage import MediaStore
from app.runtime import Runtime

log = logging.getLogger("gengate.retention")

DAY_MS = 86_400_000
_FINISHED = (TaskStatus.SUCCESS.value, TaskStatus.FAIL.value)
# Tasks named one by one, or by a query of their ids.
TaskIds: TypeAlias = "list[str] | Select[tuple[str]]"


@dataclass
class PruneCounts:
    """What a prune removed (or, for a dry run, would remove)."""

    tasks: int = 0
    files: int = 0
    bytes: int = 0
    deliveries: int = 0
    request_groups: int = 0

    def __bool__(self) -> bool:
        """Whether anything went (files and deliveries go only with their tasks)."""
        return bool(self.tasks or self.request_groups)

    def __str__(self) -> str:
        return (
            f"{self.tasks} tasks, {self.files} files ({self.bytes} bytes), "
            f"{self.deliveries} callback deliveries, {self.request_groups} request groups"
        )

    def add(self, other: PruneCounts) -> None:
        self.tasks += other.tasks
        self.files += other.files
        self.bytes += other.bytes
        self.deliveries += other.deliveries
        self.request_groups += other.request_groups


@dataclass(frozen=True)
class Batch:
    counts: PruneCounts
    # Whether another batch may find more: a full batch that made progress.
    more: bool
    # Some task's files could not be deleted (it was kept): the store is unwell.
    store_failed: bool


@dataclass
class _Selected:
    task_ids: list[str]
    files: dict[str, list[str]] = field(default_factory=dict)  # task id -> its paths


def cutoff_for(now: int, days: int) -> int:
    """Epoch ms before which a finished task is past a retention of `days`."""
    return now - days * DAY_MS


def iso(ms: int) -> str:
    """An epoch-ms time as operators read it: ISO 8601, UTC."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _prunable(cutoff: int) -> Select[tuple[str]]:
    """Ids of the tasks that may go: finished before `cutoff`, no callback under way."""
    delivering = exists().where(
        col(CallbackDelivery.task_id) == col(Task.id),
        col(CallbackDelivery.status) == DeliveryStatus.PENDING.value,
    )
    return select(col(Task.id)).where(
        col(Task.status).in_(_FINISHED), col(Task.completed_at) < cutoff, ~delivering
    )


def _old_groups(cutoff: int) -> Select[tuple[str, str]]:
    return select(col(TaskGroup.api_key_id), col(TaskGroup.request_id)).where(
        col(TaskGroup.created_at) < cutoff
    )


async def count_prunable(session: AsyncSession, *, cutoff: int) -> PruneCounts:
    """What a prune with this cutoff would remove now (the dry run): nothing is changed."""
    tasks = _prunable(cutoff)
    files, size = await _file_totals(session, tasks)
    return PruneCounts(
        tasks=await _count(session, tasks),
        files=files,
        bytes=size,
        deliveries=await _count(session, _deliveries_of(tasks)),
        request_groups=await _count(session, _old_groups(cutoff)),
    )


def _deliveries_of(task_ids: TaskIds) -> Select[tuple[str]]:
    return select(col(CallbackDelivery.id)).where(col(CallbackDelivery.task_id).in_(task_ids))


async def _file_totals(session: AsyncSession, task_ids: TaskIds) -> tuple[int, int]:
    """How many result files these tasks have, and their bytes."""
    stmt = select(func.count(), func.coalesce(func.sum(col(MediaFile.size_bytes)), 0)).where(
        col(MediaFile.task_id).in_(task_ids)
    )
    files, size = (await session.execute(stmt)).one()
    return int(files), int(size)


async def _count(session: AsyncSession, stmt: Select[tuple[str]] | Select[tuple[str, str]]) -> int:
    return int(await session.scalar(select(func.count()).select_from(stmt.subquery())) or 0)


async def prune_batch(runtime: Runtime, *, cutoff: int, limit: int) -> Batch:
    """Remove up to `limit` prunable tasks and `limit` old request groups, in one transaction
    after their files are deleted."""
    async with runtime.sessions() as session:
        selected = await _select(session, cutoff=cutoff, limit=limit)
    gone = await asyncio.to_thread(_delete_files, runtime.media_store, selected)
    async with runtime.sessions() as session:
        counts = await _delete_rows(session, cutoff=cutoff, task_ids=gone, limit=limit)
        await session.commit()
    store_failed = len(gone) < len(selected.task_ids)
    full = len(selected.task_ids) == limit or counts.request_groups == limit
    progress = counts.tasks + counts.request_groups > 0
    return Batch(counts, more=full and progress and not store_failed, store_failed=store_failed)


async def _select(session: AsyncSession, *, cutoff: int, limit: int) -> _Selected:
    """The oldest prunable tasks and their stored files."""
    stmt = _prunable(cutoff).order_by(col(Task.completed_at)).limit(limit)
    selected = _Selected(list((await session.execute(stmt)).scalars()))
    if selected.task_ids:
        files = select(col(MediaFile.task_id), col(MediaFile.path)).where(
            col(MediaFile.task_id).in_(selected.task_ids)
        )
        paths: defaultdict[str, list[str]] = defaultdict(list)
        for task_id, path in (await session.execute(files)).all():
            paths[task_id].append(path)
        selected.files = dict(paths)
    return selected


def _delete_files(store: MediaStore, selected: _Selected) -> list[str]:
    """The tasks whose files are gone from the store (blocking: run in a thread)."""
    gone = []
    for task_id in selected.task_ids:
        paths = selected.files.get(task_id)
        try:
            if paths:
                store.delete_task(task_id, paths)
        except Exception:  # an unreachable bucket too: the task is kept for the next run
            log.warning(
                "could not delete the files of task %s; kept for now", task_id, exc_info=True
            )
            continue
        gone.append(task_id)
    return gone


async def _delete_rows(
    session: AsyncSession, *, cutoff: int, task_ids: list[str], limit: int
) -> PruneCounts:
    """Delete the rows of the tasks that may still go (checked again: a callback may have
    been redelivered meanwhile), children first, and up to `limit` old request groups."""
    counts = PruneCounts()
    if task_ids:
        still = (
            _prunable(cutoff).where(col(Task.id).in_(task_ids)).with_for_update(skip_locked=True)
        )
        ids = list((await session.execute(still)).scalars())
        counts = await _delete_tasks(session, ids)
    groups = list(
        (await session.execute(_old_groups(cutoff).limit(limit).with_for_update(skip_locked=True)))
        .tuples()
        .all()
    )
    if groups:
        key = tuple_(col(TaskGroup.api_key_id), col(TaskGroup.request_id))
        await session.execute(delete(TaskGroup).where(key.in_(groups)))
    counts.request_groups = len(groups)
    return counts


async def _delete_tasks(session: AsyncSession, ids: list[str]) -> PruneCounts:
    """Delete these tasks' rows, children first (the foreign keys); what went."""
    if not ids:
        return PruneCounts()
    files, size = await _file_totals(session, ids)
    await session.execute(
        delete(CallbackAttempt).where(col(CallbackAttempt.delivery_id).in_(_deliveries_of(ids)))
    )
    delivered = await session.execute(
        delete(CallbackDelivery)
        .where(col(CallbackDelivery.task_id).in_(ids))
        .returning(col(CallbackDelivery.id))
    )
    deliveries_gone = len(delivered.all())
    await session.execute(delete(TaskAttempt).where(col(TaskAttempt.task_id).in_(ids)))
    await session.execute(delete(MediaFile).where(col(MediaFile.task_id).in_(ids)))
    await session.execute(delete(Task).where(col(Task.id).in_(ids)))
    task_changed_after_commit(session, *ids)  # cached recordInfo answers go too
    return PruneCounts(tasks=len(ids), files=files, bytes=size, deliveries=deliveries_gone)
