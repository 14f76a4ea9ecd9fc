"""Shapes of the /v1 task surface (seed 004), shared by REST and MCP.

Field names are the seed's. Times are ISO 8601 UTC to the second, as in the seed's example
("2025-06-11T15:18:42Z"). `totalIsEstimate` is ours: see TaskPage.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from app.core.schema import PublicModel


class Message(PublicModel):
    """Every error of this surface: `{"message": "..."}` (seed)."""

    message: str


class TaskResponse(PublicModel):
    assets: list[str] = Field(description="Asset ids, in result order (index 1 first)")


class TaskItem(PublicModel):
    """One task as GET /v1/tasks lists it."""

    id: str
    model: str
    style: str = Field(description='The named style applied; "" when none was (seed)')
    cost: int = Field(description="Credits charged (0 once a refunded failure gave them back)")
    request: dict[str, Any] = Field(description="The model and the parameters it was given")
    response: TaskResponse
    status: int = Field(description="0 pending, 1 processing, 2 completed, 3 failed")
    started_at: str | None
    finished_at: str | None
    created_at: str
    updated_at: str
    parent_task_id: str | None = Field(
        default=None, description="/v1/reimagine tasks: the task this one was made from"
    )
    action: str | None = Field(
        default=None, description="/v1/reimagine tasks: upscale, variation or reroll"
    )
    index: int | None = Field(
        default=None, description="/v1/reimagine tasks: the parent's asset used (1-based)"
    )


class TaskPage(PublicModel):
    """A page of the calling key's tasks, newest first.

    `total` is exact up to TOTAL_EXACT_LIMIT matching tasks; beyond it counting would cost
    a scan of the whole history, so `total` is then a lower bound (more than the limit, or
    the end of the page returned if further) and `totalIsEstimate` is true.
    """

    total: int
    page: int
    page_size: int
    tasks: list[TaskItem]
    total_is_estimate: bool = Field(
        default=False, description="true when `total` is a lower bound, not an exact count"
    )


class AssetRead(PublicModel):
    """One result file of a task."""

    id: str
    task_id: str
    index: int = Field(description="1-based place among the task's assets")
    url: str = Field(description="Signed download URL; it expires, ask again for a fresh one")
    content_type: str
    width: int | None = Field(description="Pixels, for images and video; else null")
    height: int | None = Field(description="Pixels, for images and video; else null")
    duration: float | None = Field(description="Seconds, for audio and video; else null")
    bytes: int
    sha256: str
