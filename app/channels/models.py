from sqlalchemy import BigInteger, Column, Index
from sqlmodel import Field, SQLModel

from app.db.types import BigIntPK


class TaskAttempt(SQLModel, table=True):
    """One call a worker made to an upstream for a task, as it went: for the operator (and
    for failover: a channel that refused a task is not tried for it again)."""

    __tablename__ = "task_attempt"
    __table_args__ = (Index("ix_task_attempt_task", "task_id", "id"),)

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    task_id: str = Field(foreign_key="task.id", max_length=40)
    channel: str = Field(max_length=80)
    adapter: str = Field(max_length=20)
    # submit | poll | cancel
    kind: str = Field(max_length=10)
    # accepted | succeeded | failed | refused | ambiguous | unavailable | interrupted | canceled
    outcome: str = Field(max_length=16)
    fail_code: str | None = Field(default=None, max_length=40)
    upstream_id: str | None = Field(default=None, max_length=200)
    message: str | None = Field(default=None, max_length=300)
    latency_ms: int = Field(default=0)
    started_at: int = Field(sa_column=Column(BigInteger, nullable=False))
