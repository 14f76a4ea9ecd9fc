"""callback deliveries by account: the console lists an account's deliveries newest first

Revision ID: 20261201_delivery_account
Revises: 20261201_oauth
Create Date: 2026-12-01 07:40:00
"""

from collections.abc import Sequence

from alembic import op

revision: str = "20261201_delivery_account"
down_revision: str | None = "20261201_oauth"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NAME, _TABLE = "ix_callback_delivery_account", "callback_delivery"
_COLUMNS = ["account_id", "created_at"]


def upgrade() -> None:
    # On PostgreSQL built CONCURRENTLY, outside the migration's transaction: deliveries keep
    # being written while the index builds.
    context = op.get_context()
    if context.dialect.name != "postgresql":
        op.create_index(_NAME, _TABLE, _COLUMNS, unique=False)
        return
    with context.autocommit_block():
        op.create_index(_NAME, _TABLE, _COLUMNS, unique=False, postgresql_concurrently=True)


def downgrade() -> None:
    op.drop_index(_NAME, table_name=_TABLE)
