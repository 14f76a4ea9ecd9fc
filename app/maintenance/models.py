from sqlalchemy import BigInteger, Column
from sqlmodel import Field, SQLModel


class MaintenanceJob(SQLModel, table=True):
    """A periodic job of the whole deployment (retention), claimed like due work so that
    one process at a time runs it, whatever the number of workers.

    `due_at` is, as on a task, when the row next needs a process: its next run, or the lease
    expiry while a process runs it (so a job whose process died comes due again by itself).
    """

    __tablename__ = "maintenance_job"

    name: str = Field(primary_key=True, max_length=40)
    due_at: int = Field(sa_column=Column(BigInteger, nullable=False))
    lease_owner: str | None = Field(default=None, max_length=100)
