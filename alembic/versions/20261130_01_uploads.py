"""uploads: a media file may belong to an upload instead of a task, and expire

Revision ID: 20261130_uploads
Revises: 20261121_jobs
Create Date: 2026-11-30 16:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261130_uploads"
down_revision: str | None = "20261121_jobs"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("media_file", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column(
                "kind",
                sqlmodel.sql.sqltypes.AutoString(length=16),
                nullable=False,
                server_default="result",
            )
        )
        batch_op.add_column(sa.Column("expires_at", sa.BigInteger(), nullable=True))
        batch_op.alter_column(
            "task_id", existing_type=sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True
        )
        batch_op.create_index("ix_media_file_expires_at", ["expires_at"], unique=False)
    # The default only filled the existing rows; new rows always name their kind.
    with op.batch_alter_table("media_file", schema=None) as batch_op:
        batch_op.alter_column(
            "kind",
            existing_type=sqlmodel.sql.sqltypes.AutoString(length=16),
            server_default=None,
        )


def downgrade() -> None:
    op.execute("DELETE FROM media_file WHERE task_id IS NULL")
    with op.batch_alter_table("media_file", schema=None) as batch_op:
        batch_op.drop_index("ix_media_file_expires_at")
        batch_op.alter_column(
            "task_id", existing_type=sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False
        )
        batch_op.drop_column("expires_at")
        batch_op.drop_column("kind")
