from sqlalchemy import BigInteger, Column, Index, UniqueConstraint
from sqlmodel import Field, SQLModel

# What a media file is for: a task's result, or an image a user uploaded to use as an input.
KIND_RESULT = "result"
KIND_UPLOAD = "upload"


class MediaFile(SQLModel, table=True):
    """A file kept in gengate's own storage, served through signed URLs.

    A result belongs to its task (`task_id`, `position`); an upload belongs only to its
    account and is deleted once `expires_at` has passed.
    """

    __tablename__ = "media_file"
    __table_args__ = (
        UniqueConstraint("task_id", "position", name="uq_media_file_task_position"),
        Index("ix_media_file_expires_at", "expires_at"),
    )

    id: str = Field(primary_key=True, max_length=40)
    task_id: str | None = Field(default=None, foreign_key="task.id", index=True, max_length=40)
    account_id: str = Field(foreign_key="account.id", max_length=40)
    kind: str = Field(default=KIND_RESULT, max_length=16)
    position: int
    path: str = Field(max_length=500, description="relative to the media root")
    content_type: str = Field(max_length=100)
    size_bytes: int = Field(sa_column=Column(BigInteger, nullable=False))
    sha256: str = Field(max_length=64)
    width: int | None = None
    height: int | None = None
    duration_ms: int | None = None
    created_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    # Epoch ms after which the file is gone (uploads); None: kept as long as its task.
    expires_at: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))
