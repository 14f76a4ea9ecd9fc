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
    the next upstream poll while a provider works on it.
    """

    __tablename__ = "task"
    __table_args__ = (
        UniqueConstraint("api_key_id", "request_id", name="uq_task_key_request"),
        Index("ix_task_status_due", "status", "due_at"),
        Index("ix_task_key_status", "api_key_id", "status"),
        Index("ix_task_account_created", "account_id", "created_at"),
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
    upstream_id: str | None = Field(default=None, max_length=200)
    attempts: int = Field(default=0)
    lease_owner: str | None = Field(default=None, max_length=80)
    due_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    deadline_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    started_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    completed_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
