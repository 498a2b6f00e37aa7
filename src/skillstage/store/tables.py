"""The store's tables, in SQLAlchemy Core, shared by SQLite and PostgreSQL.

This is the schema the code reads and writes. Migrations under `migrations/versions/` create it; a
test compares the two, so a change here without a migration fails the suite.

Timestamps are stored as naive UTC (`UTCDateTime`): on SQLite that is the text form
`YYYY-MM-DD HH:MM:SS.ffffff`, which SQLite's own date functions read, so the seeds' dashboard SQL
(`julianday(created_at)`, `created_at < datetime('now', '-48 hours')`) works on our columns.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.types import TypeDecorator, TypeEngine


class UTCDateTime(TypeDecorator[dt.datetime]):
    """An aware datetime in Python, naive UTC in the database.

    Naive datetimes are refused on write: a naive value's zone is a guess, and a wrong guess
    shifts every SLA age by hours.
    """

    impl = DateTime(timezone=False)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value!r}: pass an aware datetime (e.g. in UTC)")
        return value.astimezone(dt.UTC).replace(tzinfo=None)

    def process_result_value(
        self, value: dt.datetime | None, dialect: Dialect
    ) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC)
        return value.replace(tzinfo=dt.UTC)


def _json() -> TypeEngine[Any]:
    # JSONB on PostgreSQL so later queries can index and compare documents; text JSON on SQLite.
    return JSON().with_variant(JSONB(), "postgresql")


# Deterministic constraint names on both dialects, so migrations can name what they alter.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

metadata = MetaData(naming_convention=NAMING_CONVENTION)

skill = Table(
    "skill",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("created_at", UTCDateTime, nullable=False),
)

skill_version = Table(
    "skill_version",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("version", String(128), nullable=False),
    Column("digest", String(64), nullable=False),  # sha256, hex
    Column("path", Text, nullable=False),  # where it was first seen
    Column("frontmatter", _json(), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    UniqueConstraint("skill_id", "version"),
)

stage_assignment = Table(
    "stage_assignment",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("version_id", Integer, ForeignKey("skill_version.id"), nullable=False),
    Column("stage", String(64), nullable=False),
    Column("path", Text, nullable=False),
    Column("entered_at", UTCDateTime, nullable=False),
    Column("left_at", UTCDateTime, nullable=True),
)
# A skill holds at most one version in a stage at a time: the open row is the stage pointer.
Index(
    "uq_stage_assignment_open",
    stage_assignment.c.skill_id,
    stage_assignment.c.stage,
    unique=True,
    sqlite_where=stage_assignment.c.left_at.is_(None),
    postgresql_where=stage_assignment.c.left_at.is_(None),
)
Index(None, stage_assignment.c.stage, stage_assignment.c.left_at)

event = Table(
    "event",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),  # register, promote, rollback, approval, ...
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("version_id", Integer, ForeignKey("skill_version.id"), nullable=True),
    # The version and digest as the event saw them, kept even when no version row matches
    # (e.g. a promotion refused before the version was registered).
    Column("version", String(128), nullable=True),
    Column("digest", String(64), nullable=True),
    Column("from_stage", String(64), nullable=True),
    Column("to_stage", String(64), nullable=True),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=True),
    Column("approver", Text, nullable=True),
    Column("approval_ticket", Text, nullable=True),
    Column("trigger_metric", Text, nullable=True),
    Column("success", Boolean, nullable=False),
    Column("path", Text, nullable=True),
    Column("details", _json(), nullable=True),
    Column("at", UTCDateTime, nullable=False),
)
Index(None, event.c.skill_id, event.c.at)
Index(None, event.c.kind, event.c.at)

approval = Table(
    "approval",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("version_id", Integer, ForeignKey("skill_version.id"), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("from_stage", String(64), nullable=False),
    Column("to_stage", String(64), nullable=False),
    Column("ticket", Text, nullable=False),
    Column("decision", String(32), nullable=False),  # APPROVED, REJECTED, NEEDS_ITERATION
    Column("approver", Text, nullable=False),
    Column("checklist", _json(), nullable=False),
    Column("notes", Text, nullable=True),
    Column("at", UTCDateTime, nullable=False),
)
Index(None, approval.c.skill_id, approval.c.version_id, approval.c.to_stage)

execution = Table(
    "execution",
    metadata,
    Column("execution_id", Text, primary_key=True),
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("version", String(128), nullable=True),
    Column("digest", String(64), nullable=True),
    Column("timestamp", UTCDateTime, nullable=False),
    Column("pattern_fidelity", Float, nullable=True),
    Column("outcome_quality", Float, nullable=True),
    Column("execution_time_ms", Float, nullable=True),
    Column("patterns_followed", Integer, nullable=True),
    Column("patterns_missed", Integer, nullable=True),
    Column("exception", Boolean, nullable=False, default=False),
    Column("false_positive", Boolean, nullable=False, default=False),
    Column("false_negative", Boolean, nullable=False, default=False),
    Column("critical", Boolean, nullable=False, default=False),
    Column("subject", Text, nullable=True),
    Column("tags", _json(), nullable=True),
    # A benchmark run (`skillstage eval`, tagged source=eval): the baseline in the first stage,
    # never evidence of how the version behaves in use.
    Column("benchmark", Boolean, nullable=False, default=False, server_default=false()),
)
# Gates and rollouts ask "this version of this skill, in this time window" over millions of rows.
# The index also holds every value a readiness check reads, so the check never visits the table
# (10,000 rows of one version: ~60 ms through the table, ~12 ms from the index alone).
Index(
    "ix_execution_sample",
    execution.c.skill_id,
    execution.c.digest,
    execution.c.timestamp,
    execution.c.pattern_fidelity,
    execution.c.outcome_quality,
    execution.c.execution_time_ms,
    execution.c.exception,
    execution.c.false_positive,
    execution.c.false_negative,
    execution.c.critical,
    execution.c.benchmark,
)

# Only the critical misses (any one rolls a live version back): the watcher counts them per
# version at every pass without reading the version's other executions.
Index(
    "ix_execution_critical_miss",
    execution.c.skill_id,
    execution.c.digest,
    execution.c.timestamp,
    execution.c.benchmark,
    sqlite_where=text("false_negative AND critical"),
    postgresql_where=text("false_negative AND critical"),
)

# Ingestion's place in each inbox file, keyed by the file's identity (device, inode) so that a
# rotated (renamed) file is finished where it was left and its successor starts at 0. The head
# hash tells a truncated-and-rewritten file, or a reused inode, from the file that was read.
ingest_checkpoint = Table(
    "ingest_checkpoint",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("device", BigInteger, nullable=False),
    Column("inode", BigInteger, nullable=False),
    Column("path", Text, nullable=False),  # where the file was last seen
    Column("offset", BigInteger, nullable=False),  # bytes consumed: always just after a newline
    Column("line", BigInteger, nullable=False),  # lines consumed
    Column("head_hash", String(64), nullable=False),  # sha256 of the first head_length bytes
    Column("head_length", Integer, nullable=False),
    Column("updated_at", UTCDateTime, nullable=False),
    UniqueConstraint("device", "inode"),
)

# Lines that could not be ingested, with why; they never stop a batch.
ingest_quarantine = Table(
    "ingest_quarantine",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("path", Text, nullable=False),
    Column("line", BigInteger, nullable=False),
    Column("reason", Text, nullable=False),
    Column("content", Text, nullable=False),  # the line, cut to 4 KiB
    Column("at", UTCDateTime, nullable=False),
)

# One run of a skill version's benchmark cases (`skillstage eval`), read by the metric gate of
# prototype → staged.
eval_run = Table(
    "eval_run",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("version", String(128), nullable=False),
    Column("digest", String(64), nullable=False),
    Column("cases_total", Integer, nullable=False),
    Column("cases_executed", Integer, nullable=False),
    Column("summary", _json(), nullable=False),
    Column("cases", _json(), nullable=False),
    Column("at", UTCDateTime, nullable=False),
)
Index(None, eval_run.c.skill_id, eval_run.c.digest, eval_run.c.at)

journal = Table(
    "journal",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("operation", String(32), nullable=False),  # promote, rollback, ...
    Column("state", String(16), nullable=False),  # open, closed
    Column("details", _json(), nullable=False),
    Column("created_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
)
Index(None, journal.c.state, journal.c.skill_id)

outbox = Table(
    "outbox",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("kind", String(32), nullable=False),  # git_commit, deploy, reindex, notify, ...
    Column("payload", _json(), nullable=False),
    Column("status", String(16), nullable=False),  # pending, done, failed
    Column("attempts", Integer, nullable=False, default=0),
    Column("last_error", Text, nullable=True),
    Column("next_attempt_at", UTCDateTime, nullable=True),
    Column("created_at", UTCDateTime, nullable=False),
)
Index(None, outbox.c.status, outbox.c.next_attempt_at)

# A gradual rollout (seed 002 §3.3): a candidate version serving a share of one stage's traffic
# beside the stable version live there, step by step (`steps`, percentages). One active rollout
# per skill and stage (the partial unique index). State: active, paused, aborted, completed.
rollout = Table(
    "rollout",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("stage", String(64), nullable=False),
    Column("candidate_version", String(128), nullable=False),
    Column("candidate_digest", String(64), nullable=False),
    Column("candidate_stage", String(64), nullable=False),  # where the candidate waits
    Column("stable_version", String(128), nullable=False),
    Column("stable_digest", String(64), nullable=False),
    Column("group_id", Text, nullable=False),  # the bucketing group (Unleash's groupId)
    Column("steps", _json(), nullable=False),  # [10, 50, 100]
    Column("step_index", Integer, nullable=False),
    Column("step_started_at", UTCDateTime, nullable=False),
    Column("step_min_duration_s", Float, nullable=False),
    Column("step_min_executions", Integer, nullable=False),
    Column("segments", _json(), nullable=False),  # {"tier": ["internal"]}: all must match
    Column("on_failure", String(16), nullable=False),  # abort | pause
    Column("state", String(16), nullable=False),
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=True),  # why it was paused, aborted or forced on
    Column("verdict", _json(), nullable=True),  # the latest analysis
    Column("retry_of", Integer, nullable=True),  # the aborted rollout this one retries
    Column("started_at", UTCDateTime, nullable=False),
    Column("ended_at", UTCDateTime, nullable=True),
)
Index(
    "uq_rollout_open",
    rollout.c.skill_id,
    rollout.c.stage,
    unique=True,
    sqlite_where=rollout.c.state.in_(["active", "paused"]),
    postgresql_where=rollout.c.state.in_(["active", "paused"]),
)

# One row, bumped in the transaction of every change to what serves (a stage pointer moved, a
# rollout started, stepped or ended): loaders poll it to know when to rebuild their routing table.
routing_generation = Table(
    "routing_generation",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("generation", BigInteger, nullable=False),
    Column("changed_at", UTCDateTime, nullable=False),
)

# A person's or the watcher's hand on a skill: `hold` (automation leaves it alone: no automated
# rollback, demotion or rollout step, and no promotion or rollout of it until a person clears
# the hold; set by every automated rollback) and `disabled` (the kill switch: loaders and sync
# stop serving it). `stage` is one stage, or "*" for every stage. Set while `cleared_at` is NULL.
skill_control = Table(
    "skill_control",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("skill_id", Integer, ForeignKey("skill.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # hold | disabled
    Column("stage", String(64), nullable=False),
    Column("digest", String(64), nullable=True),  # the version a hold was set after, if any
    Column("actor", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("details", _json(), nullable=True),
    Column("set_at", UTCDateTime, nullable=False),
    Column("cleared_at", UTCDateTime, nullable=True),
    Column("cleared_by", Text, nullable=True),
    Column("clear_reason", Text, nullable=True),
)
Index(
    "uq_skill_control_set",
    skill_control.c.skill_id,
    skill_control.c.kind,
    skill_control.c.stage,
    unique=True,
    sqlite_where=skill_control.c.cleared_at.is_(None),
    postgresql_where=skill_control.c.cleared_at.is_(None),
)

# An alert episode: a condition (`key`, e.g. "error_rate:auth-v2:production") that went bad is
# announced once when it opens, not at every pass, and once more when it recovers (closed).
alert_episode = Table(
    "alert_episode",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("key", Text, nullable=False),
    Column("name", Text, nullable=True),  # the skill, when the alert is about one
    Column("kind", String(64), nullable=False),
    Column("severity", String(16), nullable=False),  # warning | critical
    Column("message", Text, nullable=False),
    Column("details", _json(), nullable=True),
    Column("opened_at", UTCDateTime, nullable=False),
    Column("last_seen_at", UTCDateTime, nullable=False),
    Column("closed_at", UTCDateTime, nullable=True),
)
Index(
    "uq_alert_episode_open",
    alert_episode.c.key,
    unique=True,
    sqlite_where=alert_episode.c.closed_at.is_(None),
    postgresql_where=alert_episode.c.closed_at.is_(None),
)

# The steps of an automated rollback or abort after its commit (seed 002 §3.2's timeline: alert
# sent, failed version archived, re-index done, report written), each once, with its time.
action_step = Table(
    "action_step",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("event_id", Integer, ForeignKey("event.id"), nullable=False),
    Column("step", String(32), nullable=False),
    Column("at", UTCDateTime, nullable=False),
    Column("ok", Boolean, nullable=False),
    Column("detail", Text, nullable=True),
    UniqueConstraint("event_id", "step"),
)

# An API token of `skillstage serve`: who holds it (`name`, the actor its requests record) and
# what it may do (`role`). The secret is never stored: `token_id` (the public part of the token,
# unique, the lookup key) finds the row, and `digest` is sha256(salt || secret). One token per name
# is live at a time (the partial unique index); a revoked token's row is kept, for the record.
token = Table(
    "token",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_id", String(32), nullable=False, unique=True),
    Column("name", String(64), nullable=False),
    Column("role", String(16), nullable=False),
    Column("salt", String(32), nullable=False),  # 16 random bytes, hex
    Column("digest", String(64), nullable=False),  # sha256(salt || secret), hex
    Column("created_at", UTCDateTime, nullable=False),
    Column("created_by", Text, nullable=False),
    Column("revoked_at", UTCDateTime, nullable=True),
    Column("revoked_by", Text, nullable=True),
    Column("last_used_at", UTCDateTime, nullable=True),
)
Index(
    "uq_token_live_name",
    token.c.name,
    unique=True,
    sqlite_where=token.c.revoked_at.is_(None),
    postgresql_where=token.c.revoked_at.is_(None),
)

# What was done to tokens, append-only: each creation and revocation, who did it and when. (The
# `event` table is a skill's history: every row names a skill, which a token is not.)
token_event = Table(
    "token_event",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("token_id", Integer, ForeignKey("token.id"), nullable=False),
    Column("kind", String(16), nullable=False),  # create | revoke
    Column("actor", Text, nullable=False),
    Column("at", UTCDateTime, nullable=False),
)
Index(None, token_event.c.at)

# The seeds' tables, kept as views over the tables above (created by the migrations).
SEED_VIEWS = (
    "staged_skills",
    "skill_promotions",
    "skills",
    "execution_metrics",
    "promotion_events",
    "rollback_events",
)
