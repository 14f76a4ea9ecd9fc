"""imagine: the caller's request on a task, and idempotent groups of tasks

Revision ID: 20261130_imagine
Revises: 20261130_v1_tasks
Create Date: 2026-11-30 21:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261130_imagine"
down_revision: str | None = "20261130_v1_tasks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(sa.Column("request_json", sa.Text(), nullable=True))
    op.create_table(
        "task_group",
        sa.Column("api_key_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("request_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=False),
        sa.Column("request_hash", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("task_ids", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["api_key_id"], ["api_key.id"]),
        sa.PrimaryKeyConstraint("api_key_id", "request_id"),
    )


def downgrade() -> None:
    op.drop_table("task_group")
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_column("request_json")
