"""The executions index covers what a readiness check reads (skill, digest, time, the scores, the
time taken and the flags), so the check never visits the table.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from alembic import op

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_SAMPLE = [
    "skill_id",
    "digest",
    "timestamp",
    "pattern_fidelity",
    "outcome_quality",
    "execution_time_ms",
    "exception",
    "false_positive",
    "false_negative",
    "critical",
]


def upgrade() -> None:
    op.create_index("ix_execution_sample", "execution", _SAMPLE)
    op.drop_index("ix_execution_skill_id_digest_timestamp", table_name="execution")


def downgrade() -> None:
    op.create_index(
        "ix_execution_skill_id_digest_timestamp", "execution", ["skill_id", "digest", "timestamp"]
    )
    op.drop_index("ix_execution_sample", table_name="execution")
