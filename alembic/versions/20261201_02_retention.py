"""retention: the maintenance_job row that one process claims, and the indexes pruning reads

Revision ID: 20261201_retention
Revises: 20261201_task_correlation
Create Date: 2026-12-01 05:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261201_retention"
down_revision: str | None = "20261201_task_correlation"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Finished tasks oldest first, and old X-Request-Id groups: each batch reads a range of one.
_INDEXES = {
    "ix_task_completed": ("task", ["completed_at"]),
    "ix_task_group_created": ("task_group", ["created_at"]),
}


def upgrade() -> None:
    op.create_table(
        "maintenance_job",
        sa.Column("name", sqlmodel.sql.sqltypes.AutoString(length=40), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("lease_owner", sqlmodel.sql.sqltypes.AutoString(length=100), nullable=True),
        sa.PrimaryKeyConstraint("name"),
    )
    for name, (table, columns) in _INDEXES.items():
        _create_index_online(name, table, columns)


def _create_index_online(name: str, table: str, columns: list[str]) -> None:
    """On PostgreSQL built CONCURRENTLY, outside the migration's transaction: a running
    gateway's task table keeps taking writes while the index builds."""
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index(name, table, columns, unique=False)
        return
    with context.autocommit_block():
        op.create_index(name, table, columns, unique=False, postgresql_concurrently=True)


def downgrade() -> None:
    for name, (table, _columns) in reversed(_INDEXES.items()):
        op.drop_index(name, table_name=table)
    op.drop_table("maintenance_job")
