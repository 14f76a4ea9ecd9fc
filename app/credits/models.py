from enum import StrEnum

from sqlalchemy import BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel

from app.db.types import BigIntPK


class LedgerKind(StrEnum):
    GRANT = "grant"
    HOLD = "hold"
    SETTLE = "settle"
    REFUND = "refund"


class LedgerEntry(SQLModel, table=True):
    """One movement of credits. The account balance always equals the sum of `amount`."""

    __tablename__ = "ledger_entry"
    # A task is held, settled and refunded at most once each, whatever the races upstream.
    __table_args__ = (UniqueConstraint("task_id", "kind", name="uq_ledger_entry_task_kind"),)

    id: int | None = Field(default=None, sa_column=Column(BigIntPK, primary_key=True))
    account_id: str = Field(foreign_key="account.id", index=True, max_length=40)
    kind: str = Field(max_length=16)
    amount: int = Field(sa_column=Column(BigInteger, nullable=False))
    balance_after: int = Field(sa_column=Column(BigInteger, nullable=False))
    task_id: str | None = Field(default=None, max_length=40, index=True)
    note: str | None = Field(default=None, max_length=200)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
