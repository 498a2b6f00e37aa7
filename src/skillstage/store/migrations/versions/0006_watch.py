"""What the watcher and the people steering it record: holds and kill switches on a skill
(`skill_control`), alert episodes (one notification per episode, and its recovery), and the
timestamped steps of each automated rollback (`action_step`).

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-07
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0006"
down_revision: str | None = "0005"
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    # Naive UTC; see UTCDateTime in store/tables.py.
    return sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "skill_control",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("details", _json(), nullable=True),
        sa.Column("set_at", _timestamp(), nullable=False),
        sa.Column("cleared_at", _timestamp(), nullable=True),
        sa.Column("cleared_by", sa.Text(), nullable=True),
        sa.Column("clear_reason", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_skill_control"),
        sa.ForeignKeyConstraint(["skill_id"], ["skill.id"], name="fk_skill_control_skill_id_skill"),
    )
    where = sa.text("cleared_at IS NULL")
    op.create_index(
        "uq_skill_control_set",
        "skill_control",
        ["skill_id", "kind", "stage"],
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )
    op.create_table(
        "alert_episode",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", _json(), nullable=True),
        sa.Column("opened_at", _timestamp(), nullable=False),
        sa.Column("last_seen_at", _timestamp(), nullable=False),
        sa.Column("closed_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_alert_episode"),
    )
    where = sa.text("closed_at IS NULL")
    op.create_index(
        "uq_alert_episode_open",
        "alert_episode",
        ["key"],
        unique=True,
        sqlite_where=where,
        postgresql_where=where,
    )
    op.create_table(
        "action_step",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("event_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.String(32), nullable=False),
        sa.Column("at", _timestamp(), nullable=False),
        sa.Column("ok", sa.Boolean(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_action_step"),
        sa.ForeignKeyConstraint(["event_id"], ["event.id"], name="fk_action_step_event_id_event"),
        sa.UniqueConstraint("event_id", "step", name="uq_action_step_event_id_step"),
    )

    # The watcher counts each live version's critical misses at every pass: an index of only
    # those rows (there are few) answers without reading the version's other executions.
    critical = sa.text("false_negative AND critical")
    op.create_index(
        "ix_execution_critical_miss",
        "execution",
        ["skill_id", "digest", "timestamp", "benchmark"],
        sqlite_where=critical,
        postgresql_where=critical,
    )


def downgrade() -> None:
    op.drop_index("ix_execution_critical_miss", table_name="execution")
    op.drop_table("action_step")
    op.drop_index("uq_alert_episode_open", table_name="alert_episode")
    op.drop_table("alert_episode")
    op.drop_index("uq_skill_control_set", table_name="skill_control")
    op.drop_table("skill_control")
