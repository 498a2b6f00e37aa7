"""The initial schema: skills, versions, stage assignments, events, approvals, executions, the
journal, the outbox, and the seeds' tables as views.

Revision ID: 0001
Revises:
Create Date: 2025-11-21
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _json() -> sa.types.TypeEngine[Any]:
    return sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def _timestamp() -> sa.DateTime:
    # Naive UTC; see UTCDateTime in store/tables.py.
    return sa.DateTime(timezone=False)


def upgrade() -> None:
    op.create_table(
        "skill",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_skill"),
        sa.UniqueConstraint("name", name="uq_skill_name"),
    )
    op.create_table(
        "skill_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(128), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("frontmatter", _json(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_skill_version"),
        sa.ForeignKeyConstraint(["skill_id"], ["skill.id"], name="fk_skill_version_skill_id_skill"),
        sa.UniqueConstraint("skill_id", "version", name="uq_skill_version_skill_id_version"),
    )
    op.create_table(
        "stage_assignment",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("entered_at", _timestamp(), nullable=False),
        sa.Column("left_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stage_assignment"),
        sa.ForeignKeyConstraint(
            ["skill_id"], ["skill.id"], name="fk_stage_assignment_skill_id_skill"
        ),
        sa.ForeignKeyConstraint(
            ["version_id"],
            ["skill_version.id"],
            name="fk_stage_assignment_version_id_skill_version",
        ),
    )
    op.create_index(
        "uq_stage_assignment_open",
        "stage_assignment",
        ["skill_id", "stage"],
        unique=True,
        sqlite_where=sa.text("left_at IS NULL"),
        postgresql_where=sa.text("left_at IS NULL"),
    )
    op.create_index("ix_stage_assignment_stage_left_at", "stage_assignment", ["stage", "left_at"])
    op.create_table(
        "event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=True),
        sa.Column("version", sa.String(128), nullable=True),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("from_stage", sa.String(64), nullable=True),
        sa.Column("to_stage", sa.String(64), nullable=True),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("approver", sa.Text(), nullable=True),
        sa.Column("approval_ticket", sa.Text(), nullable=True),
        sa.Column("trigger_metric", sa.Text(), nullable=True),
        sa.Column("success", sa.Boolean(), nullable=False),
        sa.Column("path", sa.Text(), nullable=True),
        sa.Column("details", _json(), nullable=True),
        sa.Column("at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_event"),
        sa.ForeignKeyConstraint(["skill_id"], ["skill.id"], name="fk_event_skill_id_skill"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["skill_version.id"], name="fk_event_version_id_skill_version"
        ),
    )
    op.create_index("ix_event_skill_id_at", "event", ["skill_id", "at"])
    op.create_index("ix_event_kind_at", "event", ["kind", "at"])
    op.create_table(
        "approval",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("version_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("from_stage", sa.String(64), nullable=False),
        sa.Column("to_stage", sa.String(64), nullable=False),
        sa.Column("ticket", sa.Text(), nullable=False),
        sa.Column("decision", sa.String(32), nullable=False),
        sa.Column("approver", sa.Text(), nullable=False),
        sa.Column("checklist", _json(), nullable=False),
        sa.Column("notes", sa.Text(), nullable=True),
        sa.Column("at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_approval"),
        sa.ForeignKeyConstraint(["skill_id"], ["skill.id"], name="fk_approval_skill_id_skill"),
        sa.ForeignKeyConstraint(
            ["version_id"], ["skill_version.id"], name="fk_approval_version_id_skill_version"
        ),
    )
    op.create_index(
        "ix_approval_skill_id_version_id_to_stage",
        "approval",
        ["skill_id", "version_id", "to_stage"],
    )
    op.create_table(
        "execution",
        sa.Column("execution_id", sa.Text(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("version", sa.String(128), nullable=True),
        sa.Column("digest", sa.String(64), nullable=True),
        sa.Column("timestamp", _timestamp(), nullable=False),
        sa.Column("pattern_fidelity", sa.Float(), nullable=True),
        sa.Column("outcome_quality", sa.Float(), nullable=True),
        sa.Column("execution_time_ms", sa.Float(), nullable=True),
        sa.Column("patterns_followed", sa.Integer(), nullable=True),
        sa.Column("patterns_missed", sa.Integer(), nullable=True),
        sa.Column("exception", sa.Boolean(), nullable=False),
        sa.Column("false_positive", sa.Boolean(), nullable=False),
        sa.Column("false_negative", sa.Boolean(), nullable=False),
        sa.Column("critical", sa.Boolean(), nullable=False),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("tags", _json(), nullable=True),
        sa.PrimaryKeyConstraint("execution_id", name="pk_execution"),
        sa.ForeignKeyConstraint(["skill_id"], ["skill.id"], name="fk_execution_skill_id_skill"),
    )
    op.create_index(
        "ix_execution_skill_id_digest_timestamp",
        "execution",
        ["skill_id", "digest", "timestamp"],
    )
    op.create_table(
        "journal",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("skill_id", sa.Integer(), nullable=False),
        sa.Column("operation", sa.String(32), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("details", _json(), nullable=False),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.Column("closed_at", _timestamp(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_journal"),
        sa.ForeignKeyConstraint(["skill_id"], ["skill.id"], name="fk_journal_skill_id_skill"),
    )
    op.create_index("ix_journal_state_skill_id", "journal", ["state", "skill_id"])
    op.create_table(
        "outbox",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("payload", _json(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", _timestamp(), nullable=True),
        sa.Column("created_at", _timestamp(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_outbox"),
    )
    op.create_index("ix_outbox_status_next_attempt_at", "outbox", ["status", "next_attempt_at"])

    for name, sql in _views(op.get_bind().dialect.name).items():
        op.execute(f"CREATE VIEW {name} AS {sql}")


def downgrade() -> None:
    for name in reversed(list(_views(op.get_bind().dialect.name))):
        op.execute(f"DROP VIEW {name}")
    for table in (
        "outbox",
        "journal",
        "execution",
        "approval",
        "event",
        "stage_assignment",
        "skill_version",
        "skill",
    ):
        op.drop_table(table)


# The seeds' tables (seed 000 "Monitoring", seed 002 §5.4) as views, so their SQL runs unchanged.
# Their columns come first, in the seeds' order; extra columns follow. Flags are 0/1 integers on
# both dialects because the seeds compare them with 1 and SUM them.

# Where a skill "is" when it is open in several stages: the latest stage in lifecycle order.
# Stage names are configurable; these are the defaults and seed 001's.
_STAGE_RANK = (
    "CASE {column} WHEN 'production' THEN 3 WHEN 'staged' THEN 2 WHEN 'staging' THEN 2 "
    "WHEN 'prototype' THEN 1 WHEN 'development' THEN 1 ELSE 0 END"
)


def _frontmatter_text(dialect: str, column: str, key: str) -> str:
    """A frontmatter string: the top-level key, else the same key under `metadata`."""
    if dialect == "postgresql":
        return f"COALESCE({column} ->> '{key}', {column} -> 'metadata' ->> '{key}')"
    return (
        f"COALESCE(json_extract({column}, '$.{key}'), json_extract({column}, '$.metadata.{key}'))"
    )


def _views(dialect: str) -> dict[str, str]:
    rank = _STAGE_RANK.format(column="a.stage")
    return {
        "staged_skills": """
            SELECT s.name AS name,
                   a.entered_at AS created_at,
                   CASE WHEN a.left_at IS NULL THEN 0 ELSE 1 END AS promoted,
                   v.version AS version,
                   a.path AS path,
                   a.stage AS stage,
                   v.digest AS digest,
                   a.left_at AS left_at
            FROM stage_assignment a
            JOIN skill s ON s.id = a.skill_id
            JOIN skill_version v ON v.id = a.version_id
            WHERE a.stage IN ('staged', 'staging')
        """,
        "skill_promotions": """
            SELECT e.id AS id,
                   s.name AS skill_name,
                   e.at AS promoted_at,
                   e.actor AS promoted_by,
                   e.path AS production_path,
                   CASE WHEN e.success THEN 1 ELSE 0 END AS success,
                   e.version AS version,
                   e.digest AS digest,
                   e.from_stage AS from_stage,
                   e.to_stage AS to_stage,
                   e.reason AS reason,
                   e.approver AS approver,
                   e.approval_ticket AS approval_ticket
            FROM event e
            JOIN skill s ON s.id = e.skill_id
            WHERE e.kind = 'promote'
        """,
        "skills": f"""
            SELECT s.name AS skill_id,
                   s.name AS skill_name,
                   cur.stage AS promotion_state,
                   {_frontmatter_text(dialect, "v.frontmatter", "primary_agent")} AS primary_agent,
                   {_frontmatter_text(dialect, "v.frontmatter", "intent_type")} AS intent_type,
                   s.created_at AS created_at,
                   (SELECT MAX(p.at) FROM event p
                     WHERE p.skill_id = s.id AND p.kind = 'promote' AND p.success)
                     AS last_promoted_at,
                   v.version AS version,
                   v.digest AS digest
            FROM skill s
            LEFT JOIN stage_assignment cur ON cur.id = (
                SELECT a.id FROM stage_assignment a
                WHERE a.skill_id = s.id AND a.left_at IS NULL
                ORDER BY {rank} DESC, a.entered_at DESC, a.id DESC
                LIMIT 1
            )
            LEFT JOIN skill_version v ON v.id = cur.version_id
        """,
        "execution_metrics": """
            SELECT x.execution_id AS execution_id,
                   s.name AS skill_id,
                   x."timestamp" AS "timestamp",
                   x.pattern_fidelity AS pattern_fidelity,
                   x.outcome_quality AS outcome_quality,
                   x.execution_time_ms AS execution_time_ms,
                   x.patterns_followed AS patterns_followed,
                   x.patterns_missed AS patterns_missed,
                   CASE WHEN x.exception THEN 1 ELSE 0 END AS exception,
                   x.version AS version,
                   x.digest AS digest,
                   CASE WHEN x.false_positive THEN 1 ELSE 0 END AS false_positive,
                   CASE WHEN x.false_negative THEN 1 ELSE 0 END AS false_negative,
                   CASE WHEN x.critical THEN 1 ELSE 0 END AS critical,
                   x.subject AS subject
            FROM execution x
            JOIN skill s ON s.id = x.skill_id
        """,
        "promotion_events": """
            SELECT CAST(e.id AS TEXT) AS event_id,
                   s.name AS skill_id,
                   e.from_stage AS from_state,
                   e.to_stage AS to_state,
                   e.approver AS approver,
                   e.approval_ticket AS approval_ticket,
                   e.at AS "timestamp",
                   e.reason AS reason,
                   e.actor AS actor,
                   e.version AS version,
                   e.digest AS digest
            FROM event e
            JOIN skill s ON s.id = e.skill_id
            WHERE e.kind = 'promote' AND e.success
        """,
        "rollback_events": """
            SELECT CAST(e.id AS TEXT) AS event_id,
                   s.name AS skill_id,
                   e.from_stage AS from_state,
                   e.to_stage AS to_state,
                   e.reason AS trigger_reason,
                   e.trigger_metric AS trigger_metric,
                   e.at AS "timestamp",
                   e.actor AS actor,
                   e.version AS version,
                   e.digest AS digest
            FROM event e
            JOIN skill s ON s.id = e.skill_id
            WHERE e.kind = 'rollback' AND e.success
        """,
    }
