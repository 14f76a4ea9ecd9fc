"""Typed results, in the server's shapes (camelCase on the wire, snake_case here).

Fields the server adds later are kept (`extra="allow"`), so an older client still reads a
newer server's answers.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

WAITING, SUCCESS, FAIL = "waiting", "success", "fail"
# GET /v1/tasks `status` (seed 004).
TASK_STATUSES = {"pending": 0, "processing": 1, "completed": 2, "failed": 3}


class _Shape(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="allow")

    def to_json(self) -> dict[str, Any]:
        """The object as the server sent it (camelCase)."""
        return self.model_dump(mode="json", by_alias=True)


class TaskCreated(_Shape):
    """What jobs.createTask answers."""

    task_id: str
    model: str
    state: str


class Task(_Shape):
    """A task as jobs.recordInfo shows it: state, stage, progress, queue position, results."""

    task_id: str
    model: str
    state: str = Field(description="waiting, success or fail")
    stage: str | None = Field(default=None, description="while waiting: queued or generating")
    progress: int = 0
    queue_position: int | None = None
    param: str | None = None
    result_json: str | None = None
    fail_code: str | None = None
    fail_msg: str | None = None
    fail_retryable: bool | None = None
    credits: int = 0
    cost_time: int | None = None
    complete_time: int | None = None
    create_time: int | None = None
    update_time: int | None = None
    callback_state: str | None = None
    parent_task_id: str | None = None
    action: str | None = None
    index: int | None = None

    @property
    def done(self) -> bool:
        return self.state != WAITING

    @property
    def succeeded(self) -> bool:
        return self.state == SUCCESS

    @property
    def result_urls(self) -> list[str]:
        """The signed result URLs (they expire; `get` mints fresh ones)."""
        if not self.result_json:
            return []
        urls = json.loads(self.result_json).get("resultUrls") or []
        return [str(url) for url in urls]


class TaskResponse(_Shape):
    assets: list[str] = Field(default_factory=list)


class TaskItem(_Shape):
    """A task as GET /v1/tasks lists it (seed 004)."""

    id: str
    model: str
    style: str = ""
    cost: int = 0
    request: dict[str, Any] = Field(default_factory=dict)
    response: TaskResponse = Field(default_factory=TaskResponse)
    status: int = Field(description="0 pending, 1 processing, 2 completed, 3 failed")
    started_at: str | None = None
    finished_at: str | None = None
    created_at: str | None = None
    updated_at: str | None = None
    parent_task_id: str | None = None
    action: str | None = None
    index: int | None = None


class TaskPage(_Shape):
    """A page of the key's tasks, newest first."""

    total: int
    page: int
    page_size: int
    tasks: list[TaskItem]
    total_is_estimate: bool = False


class Asset(_Shape):
    """One result file, with a fresh signed URL and the sha256 of its bytes."""

    id: str
    task_id: str
    index: int
    url: str
    content_type: str
    width: int | None = None
    height: int | None = None
    duration: float | None = None
    bytes: int
    sha256: str
