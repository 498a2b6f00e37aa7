"""Execution metrics: ingestion checkpoints, the quarantine of bad lines, benchmark eval runs.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    # Naive UTC; see UTCDateTime in store/tables.py.
    return sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "ingest_checkpoint",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("device", sa.BigInteger(), nullable=False),
        sa.Column("inode", sa.BigInteger(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("offset", sa.BigInteger(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("head_length", sa.Integer(), nullable=False),
        sa.Column("updated_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_checkpoint"),
        sa.UniqueConstraint("device", "inode", name="uq_ingest_checkpoint_device_inode"),
    )
    op.create_table(
        "ingest_quarantine",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("line", sa.BigInteger(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_ingest_quarantine"),
    )
    op.create_table(
        "eval_run",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("cases_total", sa.Integer(), nullable=False),
        sa.Column("cases_executed", sa.Integer(), nullable=False),
        sa.Column("summary", _json(), nullable=False),
        sa.Column("cases", _json(), nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_eval_run"),
        sa.ForeignKeyConstraint(["skill_id"], ["skill.id"], name="fk_eval_run_skill_id_skill"),
    )
    op.create_index("ix_eval_run_skill_id_digest_at", "eval_run", ["skill_id", "digest", "at"])


def downgrade() -> None:
    op.drop_table("eval_run")
    op.drop_table("ingest_quarantine")
    op.drop_table("ingest_checkpoint")
