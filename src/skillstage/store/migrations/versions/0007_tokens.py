"""API tokens of `skillstage serve` (name, role, public id, salted digest of the secret; never the
secret) and the record of each token's creation and revocation.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision: str | None = "0006"
branch_labels: str | None = None
depends_on: str | None = None


def _timestamp() -> sa.DateTime:
    # Naive UTC; see UTCDateTime in store/tables.py.
    return sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "token",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.String(32), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("salt", sa.String(32), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("revoked_at", _timestamp(), nullable=True),
        sa.Column("revoked_by", sa.Text(), nullable=True),
        sa.Column("last_used_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_token"),
        sa.UniqueConstraint("token_id", name="uq_token_token_id"),
    )
    # One live token per name; revoked tokens keep their rows (and their names) for the record.
    where = sa.text("revoked_at IS NULL")
    op.create_index(
        "uq_token_live_name",
        "token",
        ["name"],
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )
    op.create_table(
        "token_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("token_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_token_event"),
        sa.ForeignKeyConstraint(["token_id"], ["token.id"], name="fk_token_event_token_id_token"),
    )
    op.create_index("ix_token_event_at", "token_event", ["at"])


def downgrade() -> None:
    op.drop_index("ix_token_event_at", table_name="token_event")
    op.drop_table("token_event")
    op.drop_index("uq_token_live_name", table_name="token")
    op.drop_table("token")
