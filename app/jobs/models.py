from enum import StrEnum
from typing import Literal

from sqlalchemy import BigInteger, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


class TaskStatus(StrEnum):
    """Internal status; the public `state` folds queued and generating into `waiting`."""

    QUEUED = "queued"
    GENERATING = "generating"
    SUCCESS = "success"
    FAIL = "fail"


ACTIVE_STATUSES = (TaskStatus.QUEUED.value, TaskStatus.GENERATING.value)
PublicState = Literal["waiting", "success", "fail"]


def public_state(status: str) -> PublicState:
    """The seed's `state`: queued and generating are both `waiting`."""
    if status in ACTIVE_STATUSES:
        return "waiting"
    return "success" if status == TaskStatus.SUCCESS.value else "fail"


class Task(SQLModel, table=True):
    """One generation task: the source of truth and, through `due_at`, the queue.

    `due_at` is when the row next needs a worker: its creation for a new task, the lease
    expiry while a worker holds it (so a dead worker's task comes due again by itself),
    the next upstream poll while a provider works on it (so `due_at` is also the
    `next_poll_at` of a task an upstream holds: one index serves every kind of due work).
    """

    __tablename__ = "task"
    __table_args__ = (
        UniqueConstraint("api_key_id", "request_id", name="uq_task_key_request"),
        Index("ix_task_status_due", "status", "due_at"),
        Index("ix_task_key_status", "api_key_id", "status"),
        Index("ix_task_account_created", "account_id", "created_at"),
        Index("ix_task_upstream", "upstream_id"),
        # The /v1/tasks history: newest first, alone or filtered by model or status.
        Index("ix_task_key_created", "api_key_id", "created_at", "id"),
        Index("ix_task_key_model_created", "api_key_id", "model", "created_at", "id", "status"),
        Index("ix_task_key_status_created", "api_key_id", "status", "created_at", "id"),
        Index("ix_task_parent", "parent_task_id"),
        # Retention: finished tasks, oldest first (waiting ones have no completed_at).
        Index("ix_task_completed", "completed_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(foreign_key="account.id", max_length=40)
    api_key_id: str = Field(foreign_key="api_key.id", max_length=40)
    model: str = Field(max_length=100)
    media_type: str = Field(max_length=10)
    input_json: str = Field(sa_column=Column(Text, nullable=False))
    callback_url: str | None = Field(default=None, max_length=2048)
    request_id: str | None = Field(default=None, max_length=200)
    request_hash: str | None = Field(default=None, max_length=64)
    status: str = Field(max_length=16)
    progress: int = Field(default=0)
    price: int = Field(sa_column=Column(BigInteger, nullable=False))
    fail_code: str | None = Field(default=None, max_length=40)
    fail_msg: str | None = Field(default=None, max_length=1000)
    provider: str = Field(max_length=40)
    # The channel the task was last sent to; with `upstream_id`, the one that holds it.
    channel: str | None = Field(default=None, max_length=80)
    upstream_id: str | None = Field(default=None, max_length=200)
    # Submissions tried (a poll is not one) and polls made of the upstream job.
    attempts: int = Field(default=0)
    polls: int = Field(default=0)
    # The job's place in the upstream's queue, when the upstream reports one.
    queue_position: int | None = Field(default=None)
    # What the upstream reported the task cost (JSON: tokens, seconds or credits).
    upstream_cost: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    lease_owner: str | None = Field(default=None, max_length=80)
    due_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    deadline_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    started_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    completed_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    # The named style applied at creation (/v1/imagine); None when none was.
    style: str | None = Field(default=None, max_length=100)
    # Lineage of a /v1/reimagine task: its source task, the action and the source's asset
    # index (1-based); all None for a task created directly.
    parent_task_id: str | None = Field(default=None, max_length=40)
    action: str | None = Field(default=None, max_length=16)
    source_index: int | None = Field(default=None)
    # The request as its caller wrote it, for surfaces whose request is not `model` + inputs
    # (/v1/imagine, /v1/reimagine); None for jobs.createTask, whose inputs are the request.
    request_json: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    # The correlation id of the request that created the task (app.core.correlation): the
    # worker's and the callback's log lines for it carry the request's id.
    correlation_id: str | None = Field(default=None, max_length=64)


class TaskGroup(SQLModel, table=True):
    """The tasks one idempotent request created together (/v1/imagine with n > 1, and
    /v1/reimagine): an X-Request-Id replay answers the same ids."""

    __tablename__ = "task_group"
    __table_args__ = (Index("ix_task_group_created", "created_at"),)  # retention

    api_key_id: str = Field(foreign_key="api_key.id", primary_key=True, max_length=40)
    request_id: str = Field(primary_key=True, max_length=200)
    request_hash: str = Field(max_length=64)
    task_ids: str = Field(sa_column=Column(Text, nullable=False), description="JSON list")
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
