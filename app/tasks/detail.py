"""Tasks for people to look at: result files with their URLs and kind, and one task with its
lineage (the task it was made from and the tasks made from it). Read by the console's
gallery and playground; the same scope and rate limit as the /v1 task reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from app.core.ids import now_ms
from app.db.engine import Reader
from app.jobs.models import Task
from app.jobs.views import get_task
from app.keys.scopes import Scope
from app.keys.service import Principal
from app.limits.service import GROUP_QUERY
from app.media.service import list_tasks_media, media_url
from app.runtime import Runtime
from app.tasks.schemas import TaskItem
from app.tasks.service import task_item

# A task made from another is listed under it; more than this many children is a page of
# the gallery's business, not of one task's.
CHILDREN_SHOWN = 50


@dataclass(frozen=True)
class TaskAsset:
    """A result file with a freshly signed URL."""

    id: str
    index: int  # 1-based, as /v1/reimagine counts
    url: str
    content_type: str
    width: int | None
    height: int | None
    duration_s: float | None
    size_bytes: int

    @property
    def is_video(self) -> bool:
        return self.content_type.startswith("video/")


@dataclass(frozen=True)
class TaskDetail:
    task: TaskItem
    assets: list[TaskAsset]
    parent: TaskItem | None
    children: list[TaskItem]


async def task_assets(
    db: Reader, *, runtime: Runtime, task_ids: list[str], base_url: str
) -> dict[str, list[TaskAsset]]:
    """The result files of tasks the caller has already read (so checked to be its own), by
    task id, each in result order, with URLs valid for the media URL setting."""
    ttl_s, now_s = runtime.settings.media_url_ttl_seconds, now_ms() // 1000
    found = await list_tasks_media(db, task_ids=task_ids)
    return {
        task_id: [
            TaskAsset(
                id=f.id,
                index=f.position + 1,
                url=media_url(
                    f, base_url=base_url, secret=runtime.signing_secret, ttl_s=ttl_s, now_s=now_s
                ),
                content_type=f.content_type,
                width=f.width,
                height=f.height,
                duration_s=None if f.duration_ms is None else f.duration_ms / 1000,
                size_bytes=f.size_bytes,
            )
            for f in files
        ]
        for task_id, files in found.items()
    }


async def read_task_detail(
    session: AsyncSession, *, runtime: Runtime, principal: Principal, task_id: str, base_url: str
) -> TaskDetail:
    """One task of the calling key with its files, its parent and its children (newest
    first). Raises PermissionDenied, RateLimited, InvalidInput, NotFound (another key's too).
    """
    principal.require(Scope.TASKS_READ)
    await runtime.limiter.hit(principal, GROUP_QUERY)
    task = await get_task(session, principal=principal, task_id=task_id)
    parent = None
    if task.parent_task_id:
        found = await session.get(Task, task.parent_task_id)
        parent = found if found is not None and found.api_key_id == principal.key_id else None
    children = list(
        (
            await session.scalars(
                select(Task)
                .where(
                    col(Task.parent_task_id) == task.id,
                    col(Task.api_key_id) == principal.key_id,
                )
                .order_by(col(Task.created_at).desc(), col(Task.id).desc())
                .limit(CHILDREN_SHOWN)
            )
        ).all()
    )
    related = [task, *([parent] if parent else []), *children]
    assets = await task_assets(
        session, runtime=runtime, task_ids=[t.id for t in related], base_url=base_url
    )

    def item(of: Task) -> TaskItem:
        return task_item(of, [a.id for a in assets.get(of.id, [])])

    return TaskDetail(
        task=item(task),
        assets=assets.get(task.id, []),
        parent=item(parent) if parent else None,
        children=[item(child) for child in children],
    )
