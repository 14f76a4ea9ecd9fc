from enum import StrEnum

from sqlalchemy import BigInteger, Column, Index, Text
from sqlmodel import Field, SQLModel

from app.db.types import BigIntPK


class DeliveryStatus(StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookSecret(SQLModel, table=True):
    """An account's signing secret, and the one it replaced while both are honoured."""

    __tablename__ = "webhook_secret"

    account_id: str = Field(primary_key=True, foreign_key="account.id", max_length=40)
    # Kept as is: signing needs the secret itself (a hash would not do).
    secret: str = Field(max_length=100)
    previous_secret: str | None = Field(default=None, max_length=100)
    previous_until: int | None = Field(default=None, sa_column=Column(BigInteger))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    rolled_at: int | None = Field(default=None, sa_column=Column(BigInteger))


class CallbackDelivery(SQLModel, table=True):
    """One callback of one finished task: the outbox row and, through `due_at`, the queue.

    `due_at` is when the row next needs a worker: the next attempt while pending, or the
    lease expiry while a worker sends it (so a dead worker's delivery comes due by itself).
    """

    __tablename__ = "callback_delivery"
    __table_args__ = (
        Index("ix_callback_delivery_status_due", "status", "due_at"),
        Index("ix_callback_delivery_task", "task_id", "created_at"),
        # The console lists an account's deliveries newest first.
        Index("ix_callback_delivery_account", "account_id", "created_at"),
    )

    # The Standard Webhooks `webhook-id`: the same on every attempt of this delivery.
    id: str = Field(primary_key=True, max_length=40)
    task_id: str = Field(foreign_key="task.id", max_length=40)
    account_id: str = Field(foreign_key="account.id", max_length=40)
    url: str = Field(max_length=2048)
    status: str = Field(max_length=16)
    # Fixed at the first attempt; every retry sends these very bytes.
    body: str | None = Field(default=None, sa_column=Column(Text))
    attempts: int = Field(default=0)
    due_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=100)
    last_error: str | None = Field(default=None, max_length=300)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    updated_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    completed_at: int | None = Field(default=None, sa_column=Column(BigInteger))


class CallbackAttempt(SQLModel, table=True):
    """One POST of a delivery (or one refused before it was sent), as it went."""

    __tablename__ = "callback_attempt"
    __table_args__ = (Index("ix_callback_attempt_delivery", "delivery_id", "number"),)

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    delivery_id: str = Field(foreign_key="callback_delivery.id", max_length=40)
    number: int
    started_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    latency_ms: int | None = None
    status_code: int | None = None
    # What went wrong when no status tells it: refused, timeout, connect, ...
    error: str | None = Field(default=None, max_length=300)
    response_excerpt: str | None = Field(default=None, sa_column=Column(Text))
