"""Executions say whether they are benchmark runs (`skillstage eval`): those are a version's
baseline in the first stage, never evidence of how it behaves in use. The sample index covers the
flag, so a readiness check that leaves benchmark runs out still never visits the table.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision: str | None = "0003"
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
    op.add_column(
        "execution",
        sa.Column("benchmark", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    # `skillstage eval` has always tagged its executions {"source": "eval", "case": …}.
    tagged = (
        "tags ->> 'source' = 'eval'"
        if op.get_bind().dialect.name == "postgresql"
        else "json_valid(tags) AND json_extract(tags, '$.source') = 'eval'"
    )
    op.execute(f"UPDATE execution SET benchmark = TRUE WHERE tags IS NOT NULL AND {tagged}")
    op.drop_index("ix_execution_sample", table_name="execution")
    op.create_index("ix_execution_sample", "execution", [*_SAMPLE, "benchmark"])


def downgrade() -> None:
    op.drop_index("ix_execution_sample", table_name="execution")
    op.create_index("ix_execution_sample", "execution", _SAMPLE)
    op.drop_column("execution", "benchmark")
