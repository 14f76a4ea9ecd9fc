"""v1 tasks: style and reimagine lineage columns, indexes for the /v1/tasks history

Revision ID: 20261130_v1_tasks
Revises: 20261130_channels
Create Date: 2026-11-30 20:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261130_v1_tasks"
down_revision: str | None = "20261130_channels"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each serves one filter of GET /v1/tasks in its newest-first order, so a page and its
# capped count read one index range of the key's tasks, whatever the key's history. The
# model index carries status last, so model + status is counted from the index alone.
_HISTORY_INDEXES = {
    "ix_task_key_created": ["api_key_id", "created_at", "id"],
    "ix_task_key_model_created": ["api_key_id", "model", "created_at", "id", "status"],
    "ix_task_key_status_created": ["api_key_id", "status", "created_at", "id"],
}


def upgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("style", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True)
        )
        batch_op.add_column(
            sa.Column("parent_task_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True)
        )
        batch_op.add_column(
            sa.Column("action", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=True)
        )
        batch_op.add_column(sa.Column("source_index", sa.Integer(), nullable=True))
        batch_op.create_index("ix_task_parent", ["parent_task_id"], unique=False)
        for name, columns in _HISTORY_INDEXES.items():
            batch_op.create_index(name, columns, unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        for name in reversed(list(_HISTORY_INDEXES)):
            batch_op.drop_index(name)
        batch_op.drop_index("ix_task_parent")
        batch_op.drop_column("source_index")
        batch_op.drop_column("action")
        batch_op.drop_column("parent_task_id")
        batch_op.drop_column("style")
