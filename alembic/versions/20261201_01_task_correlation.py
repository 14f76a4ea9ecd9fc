"""task correlation id: the creating request's, for the task's log lines

Revision ID: 20261201_task_correlation
Revises: 20261130_imagine
Create Date: 2026-12-01 04:30:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261201_task_correlation"
down_revision: str | None = "20261130_imagine"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Nullable with no default: tasks created before it have none, and on PostgreSQL the
    # column is added without rewriting the table.
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("correlation_id", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=True)
        )


def downgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_column("correlation_id")
