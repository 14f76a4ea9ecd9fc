from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel


class ApiKey(SQLModel, table=True):
    """An API key of an account. Only the SHA-256 of the key is stored."""

    __tablename__ = "api_key"

    id: str = Field(primary_key=True, max_length=40)
    account_id: str = Field(foreign_key="account.id", index=True, max_length=40)
    name: str = Field(max_length=200)
    prefix: str = Field(max_length=16)
    key_hash: str = Field(max_length=64, unique=True)
    tier: str = Field(max_length=40)
    scopes: str = Field(max_length=200, description="space-separated scope names")
    disabled: bool = Field(default=False)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    last_used_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
    revoked_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
