from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel


class ConsoleSession(SQLModel, table=True):
    """A signed-in browser. Only the SHA-256 of the cookie's token is stored, never the key
    that signed in: the session follows its key (revoking the key ends it)."""

    __tablename__ = "console_session"

    id: str = Field(primary_key=True, max_length=64, description="SHA-256 of the cookie token")
    key_id: str = Field(foreign_key="api_key.id", index=True, max_length=40)
    account_id: str = Field(foreign_key="account.id", max_length=40)
    csrf_token: str = Field(max_length=64)
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    expires_at: int = Field(sa_column=Column(BigInteger, nullable=False, index=True))
