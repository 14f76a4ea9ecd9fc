from sqlalchemy import BigInteger, Column, UniqueConstraint
from sqlmodel import Field, SQLModel


class MediaFile(SQLModel, table=True):
    """A result file kept in gengate's own storage, served through signed URLs."""

    __tablename__ = "media_file"
    __table_args__ = (UniqueConstraint("task_id", "position", name="uq_media_file_task_position"),)

    id: str = Field(primary_key=True, max_length=40)
    task_id: str = Field(foreign_key="task.id", index=True, max_length=40)
    account_id: str = Field(foreign_key="account.id", max_length=40)
    position: int
    path: str = Field(max_length=500, description="relative to the media root")
    content_type: str = Field(max_length=100)
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
