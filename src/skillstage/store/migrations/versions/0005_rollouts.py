"""Gradual rollouts (a candidate serving a share of a stage's traffic, step by step) and the
routing generation that loaders poll to see a change to what serves.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0005"
down_revision: str | None = "0004"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    # Naive UTC; see UTCDateTime in store/tables.py.
    return sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "rollout",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("candidate_version", sa.String(128), nullable=False),
        sa.Column("candidate_digest", sa.String(64), nullable=False),
        sa.Column("candidate_stage", sa.String(64), nullable=False),
        sa.Column("stable_version", sa.String(128), nullable=False),
        sa.Column("stable_digest", sa.String(64), nullable=False),
        sa.Column("group_id", sa.Text(), nullable=False),
        sa.Column("steps", _json(), nullable=False),
        sa.Column("step_index", sa.Integer(), nullable=False),
        sa.Column("step_started_at", _timestamp(), nullable=False),
        sa.Column("step_min_duration_s", sa.Float(), nullable=False),
        sa.Column("step_min_executions", sa.Integer(), nullable=False),
        sa.Column("segments", _json(), nullable=False),
        sa.Column("on_failure", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("verdict", _json(), nullable=True),
        sa.Column("retry_of", sa.Integer(), nullable=True),
        sa.Column("started_at", _timestamp(), nullable=False),
        sa.Column("ended_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_rollout"),
        sa.ForeignKeyConstraint(["skill_id"], ["skill.id"], name="fk_rollout_skill_id_skill"),
    )
    where = sa.text("state IN ('active', 'paused')")
    op.create_index(
        "uq_rollout_open",
        "rollout",
        ["skill_id", "stage"],
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )
    op.create_table(
        "routing_generation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("generation", sa.BigInteger(), nullable=False),
        sa.Column("changed_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_routing_generation"),
    )
    op.execute(
        "INSERT INTO routing_generation (id, generation, changed_at)"
        " VALUES (1, 0, CURRENT_TIMESTAMP)"
    )


def downgrade() -> None:
    op.drop_table("routing_generation")
    op.drop_index("uq_rollout_open", table_name="rollout")
    op.drop_table("rollout")
