"""oauth: registered MCP clients, pending authorizations, grants, codes and tokens (hashed)

Revision ID: 20261201_oauth
Revises: 20261201_console_sessions
Create Date: 2026-12-01 08:00:00
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel

from alembic import op

revision: str = "20261201_oauth"
down_revision: str | None = "20261201_console_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_String = sqlmodel.sql.sqltypes.AutoString


def upgrade() -> None:
    op.create_table(
        "oauth_client",
        sa.Column("id", _String(length=64), nullable=False),
        sa.Column("name", _String(length=200), nullable=True),
        sa.Column("registration", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "oauth_request",
        sa.Column("id", _String(length=64), nullable=False),
        sa.Column("client_id", _String(length=64), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("redirect_uri_explicit", sa.Boolean(), nullable=False),
        sa.Column("scopes", _String(length=200), nullable=True),
        sa.Column("code_challenge", _String(length=128), nullable=False),
        sa.Column("state", sa.Text(), nullable=True),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(["client_id"], ["oauth_client.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_oauth_request_expires_at", "oauth_request", ["expires_at"])
    op.create_table(
        "oauth_grant",
        sa.Column("id", _String(length=40), nullable=False),
        sa.Column("client_id", _String(length=64), nullable=False),
        sa.Column("key_id", _String(length=40), nullable=False),
        sa.Column("scopes", _String(length=200), nullable=False),
        sa.Column("resource", sa.Text(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["client_id"], ["oauth_client.id"]),
        sa.ForeignKeyConstraint(["key_id"], ["api_key.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_oauth_grant_client_id", "oauth_grant", ["client_id"])
    op.create_index("ix_oauth_grant_key_id", "oauth_grant", ["key_id"])
    op.create_table(
        "oauth_code",
        sa.Column("id", _String(length=64), nullable=False),
        sa.Column("grant_id", _String(length=40), nullable=False),
        sa.Column("redirect_uri", sa.Text(), nullable=False),
        sa.Column("redirect_uri_explicit", sa.Boolean(), nullable=False),
        sa.Column("code_challenge", _String(length=128), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["grant_id"], ["oauth_grant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_oauth_code_grant_id", "oauth_code", ["grant_id"])
    op.create_table(
        "oauth_token",
        sa.Column("id", _String(length=64), nullable=False),
        sa.Column("grant_id", _String(length=40), nullable=False),
        sa.Column("kind", _String(length=8), nullable=False),
        sa.Column("scopes", _String(length=200), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("used_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["grant_id"], ["oauth_grant.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_oauth_token_grant_id", "oauth_token", ["grant_id"])


def downgrade() -> None:
    op.drop_index("ix_oauth_token_grant_id", table_name="oauth_token")
    op.drop_table("oauth_token")
    op.drop_index("ix_oauth_code_grant_id", table_name="oauth_code")
    op.drop_table("oauth_code")
    op.drop_index("ix_oauth_grant_key_id", table_name="oauth_grant")
    op.drop_index("ix_oauth_grant_client_id", table_name="oauth_grant")
    op.drop_table("oauth_grant")
    op.drop_index("ix_oauth_request_expires_at", table_name="oauth_request")
    op.drop_table("oauth_request")
    op.drop_table("oauth_client")
