"""channels: the channel holding a task, poll counts, upstream queue and cost, attempts

Revision ID: 20261130_channels
Revises: 20261130_callbacks
Create Date: 2026-11-30 19:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261130_channels"
down_revision: str | None = "20261130_callbacks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=True)
        )
        batch_op.add_column(sa.Column("polls", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("queue_position", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("upstream_cost", sa.Text(), nullable=True))
        batch_op.create_index("ix_task_upstream", ["upstream_id"], unique=False)
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.alter_column("polls", existing_type=sa.Integer(), server_default=None)
    op.create_table(
        "task_attempt",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("task_id", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("channel", sqlmodel.sql.sqltypes.AutoString(length=80), nullable=False),
        sa.Column("adapter", sqlmodel.sql.sqltypes.AutoString(length=20), nullable=False),
        sa.Column("kind", sqlmodel.sql.sqltypes.AutoString(length=10), nullable=False),
        sa.Column("outcome", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("fail_code", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=True),
        sa.Column("upstream_id", sqlmodel.sql.sqltypes.AutoString(length=200), nullable=True),
        sa.Column("message", sqlmodel.sql.sqltypes.AutoString(length=300), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["task_id"], ["task.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("task_attempt", schema=None) as batch_op:
        batch_op.create_index("ix_task_attempt_task", ["task_id", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("task_attempt", schema=None) as batch_op:
        batch_op.drop_index("ix_task_attempt_task")
    op.drop_table("task_attempt")
    with op.batch_alter_table("task", schema=None) as batch_op:
        batch_op.drop_index("ix_task_upstream")
        batch_op.drop_column("upstream_cost")
        batch_op.drop_column("queue_position")
        batch_op.drop_column("polls")
        batch_op.drop_column("channel")
