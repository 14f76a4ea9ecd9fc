from sqlalchemy import BigInteger, CheckConstraint, Column
from sqlmodel import Field, SQLModel


class Account(SQLModel, table=True):
    """Who pays: owns the credit balance and the API keys."""

    __tablename__ = "account"
    __table_args__ = (CheckConstraint("balance >= 0", name="ck_account_balance_nonnegative"),)

    id: str = Field(primary_key=True, max_length=40)
    name: str = Field(max_length=200)
    # Credits available to spend; held credits are already subtracted (see credits.service).
    balance: int = Field(default=0, sa_column=Column(BigInteger, nullable=False, default=0))
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
