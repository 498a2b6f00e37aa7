"""The store's aggregate queries behind the Prometheus exposition (`server/prometheus.py`).

Every query here returns one row per label set, never one row per execution: the database
counts, sums and buckets, and Python only renames. Portable SQL over the tables (not the seed
views), run on SQLite and PostgreSQL alike; booleans are tested as conditions (`WHEN exception`),
which both databases read the same way.

Cost: the execution query reads every execution once (a full scan: the counters and the histogram
are over the whole history); the live-version query reads the live versions' executions since
they entered their stage, from the (skill_id, digest, timestamp, …) index alone. Everything else
reads small tables (events, stage pointers, rollouts, the outbox).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Final

from skillstage.store.store import Transaction

# The execution-time histogram's upper bounds, in milliseconds (the column's unit). Agent skills
# take from a few milliseconds (a cached lookup) to minutes (a long tool run); seed 003 reports
# p50/p95/p99, which these bounds bracket to within a factor of about 2.5.
DURATION_BUCKETS_MS: Final = (
    5,
    10,
    25,
    50,
    100,
    250,
    500,
    1_000,
    2_500,
    5_000,
    10_000,
    30_000,
    60_000,
    300_000,
)

# One outcome per execution, the worst first: an exception, a missed critical case (the two the
# loader's breaker counts as failures), a miss, a false alarm; else a success.
OUTCOMES: Final = ("exception", "critical_miss", "false_negative", "false_positive", "success")
_OUTCOME_SQL: Final = (
    "CASE WHEN exception THEN 'exception'"
    " WHEN false_negative AND critical THEN 'critical_miss'"
    " WHEN false_negative THEN 'false_negative'"
    " WHEN false_positive THEN 'false_positive'"
    " ELSE 'success' END"
)

# Why a rollback or an abort happened, as a label: an automated one's reason is its trigger's
# code (seed 002's `pattern_fidelity_drop_below_85`, a rollout verdict's `critical_false_negative`,
# a few values); a demotion's says so; a person's reason is free text, so it is only "manual"
# (a label per sentence typed would be a new time series per rollback).
MANUAL: Final = "manual"
DEMOTION: Final = "demotion"


@dataclass(frozen=True)
class ExecutionGroup:
    """The executions in use (not benchmark runs) of one skill, version, arm and outcome."""

    name: str
    version: str  # "" when the record named none
    arm: str  # the loader's arm tag (stable, candidate, fallback, …), "" when untagged
    outcome: str
    count: int
    timed: int  # how many have an execution time
    time_sum_ms: float
    buckets: tuple[int, ...]  # cumulative: how many timed ones took <= each bound


def execution_groups(tx: Transaction) -> list[ExecutionGroup]:
    """Counts and execution-time buckets of every execution in use, per (skill, version, arm,
    outcome), in one pass over the table."""
    arm = f"COALESCE(CAST({tx.dialect.json_text('tags', 'arm')} AS TEXT), '')"
    bounds = range(len(DURATION_BUCKETS_MS))
    buckets = "".join(
        f", SUM(CASE WHEN x.execution_time_ms <= {bound} THEN 1 ELSE 0 END) AS b{index}"
        for index, bound in enumerate(DURATION_BUCKETS_MS)
    )
    # Grouped by skill id in the scan; the names are joined to the few groups afterwards.
    rows = tx.query(
        "SELECT s.name, g.version, g.arm, g.outcome, g.n, g.timed, g.total"
        + "".join(f", g.b{index}" for index in bounds)
        + " FROM (SELECT x.skill_id, x.version, x.arm, x.outcome, COUNT(*) AS n,"
        " COUNT(x.execution_time_ms) AS timed, COALESCE(SUM(x.execution_time_ms), 0) AS total"
        + buckets
        + " FROM (SELECT skill_id, COALESCE(version, '') AS version,"
        f" {arm} AS arm, {_OUTCOME_SQL} AS outcome, execution_time_ms"
        " FROM execution WHERE benchmark = :benchmark) x"
        # (outcome first: grouped by skill_id first, SQLite walks the execution index in its
        # order and visits the table row by row at random; this way it reads the table through)
        " GROUP BY x.outcome, x.arm, x.skill_id, x.version) g"
        " JOIN skill s ON s.id = g.skill_id ORDER BY s.name, g.version, g.arm, g.outcome",
        {"benchmark": False},
    )
    return [
        ExecutionGroup(
            name=row[0],
            version=row[1],
            arm=row[2],
            outcome=row[3],
            count=int(row[4]),
            timed=int(row[5]),
            time_sum_ms=float(row[6]),
            buckets=tuple(int(value or 0) for value in row[7:]),
        )
        for row in rows
    ]


@dataclass(frozen=True)
class LiveSample:
    """What a live version's executions in use say since it entered its stage: the sample the
    `status` command's metrics gate reads (readiness.execution_criteria)."""

    name: str
    stage: str
    version: str
    digest: str
    entered_at: dt.datetime
    count: int
    fidelity_count: int
    fidelity_sum: float
    quality_count: int
    quality_sum: float
    exceptions: int


def live_samples(tx: Transaction) -> list[LiveSample]:
    """Sums and counts of every live version's executions in use since it entered the stage it
    is live in (the summary's means are sum / count), one row per live version."""
    d = tx.dialect
    # Grouped by the stage pointer's id (the rows arrive in that order: no sort of the
    # executions), the names joined to the result.
    rows = tx.query(
        "SELECT s.name, a.stage, v.version, v.digest, a.entered_at, x.n, x.nf, x.sf, x.nq,"
        " x.sq, x.ne FROM (SELECT a.id AS id, COUNT(e.skill_id) AS n,"
        " COUNT(e.pattern_fidelity) AS nf, COALESCE(SUM(e.pattern_fidelity), 0) AS sf,"
        " COUNT(e.outcome_quality) AS nq, COALESCE(SUM(e.outcome_quality), 0) AS sq,"
        " COALESCE(SUM(CASE WHEN e.exception THEN 1 ELSE 0 END), 0) AS ne"
        " FROM stage_assignment a JOIN skill_version v ON v.id = a.version_id"
        " LEFT JOIN execution e ON e.skill_id = a.skill_id AND e.digest = v.digest"
        ' AND e."timestamp" >= a.entered_at AND e.benchmark = :benchmark'
        " WHERE a.left_at IS NULL GROUP BY a.id) x"
        " JOIN stage_assignment a ON a.id = x.id JOIN skill s ON s.id = a.skill_id"
        " JOIN skill_version v ON v.id = a.version_id ORDER BY s.name, a.stage",
        {"benchmark": False},
    )
    return [
        LiveSample(
            name=row[0],
            stage=row[1],
            version=row[2],
            digest=row[3],
            entered_at=d.read_time(row[4]),  # type: ignore[arg-type]
            count=int(row[5]),
            fidelity_count=int(row[6]),
            fidelity_sum=float(row[7]),
            quality_count=int(row[8]),
            quality_sum=float(row[9]),
            exceptions=int(row[10]),
        )
        for row in rows
    ]


def skills_per_stage(tx: Transaction) -> dict[str, int]:
    """{stage: how many skills have a version live there}."""
    return {
        stage: int(count)
        for stage, count in tx.query(
            "SELECT stage, COUNT(*) FROM stage_assignment WHERE left_at IS NULL GROUP BY stage"
        )
    }


@dataclass(frozen=True)
class FailureCount:
    """Rollbacks (or rollout aborts) of one skill in one stage for one reason."""

    name: str
    stage: str
    reason: str
    count: int


def failure_counts(tx: Transaction, kind: str) -> list[FailureCount]:
    """Successful `rollback` or `rollout_abort` events per skill, stage and reason (see
    `MANUAL`): the stage is the one the version was rolled back in (a rollback's `from_stage`,
    an abort's `to_stage`, the stage whose traffic the candidate had a share of)."""
    d = tx.dialect
    stage = "e.from_stage" if kind == "rollback" else "e.to_stage"
    reason = (
        f"CASE WHEN {d.json_text('e.details', 'automated')} IS NOT NULL"
        " THEN COALESCE(e.reason, '')"
        " WHEN e.reason LIKE :demotion THEN :demotion_label ELSE :manual END"
    )
    rows = tx.query(
        f"SELECT s.name, COALESCE({stage}, ''), {reason}, COUNT(*) FROM event e"
        " JOIN skill s ON s.id = e.skill_id WHERE e.kind = :kind AND e.success"
        f" GROUP BY s.name, COALESCE({stage}, ''), {reason} ORDER BY s.name",
        {"kind": kind, "demotion": "demotion:%", "demotion_label": DEMOTION, "manual": MANUAL},
    )
    return [FailureCount(name, stage_, why, int(n)) for name, stage_, why, n in rows]


@dataclass(frozen=True)
class BreakerCount:
    """Breakers of one version in one stage: how many loaders have it open now, as far as their
    events tell, and how many times any loader opened it."""

    name: str
    version: str
    stage: str
    open: int
    openings: int


def breaker_counts(tx: Transaction, *, opened: str, closed: str) -> list[BreakerCount]:
    """Per (skill, version, stage): loaders (event actors) whose latest breaker event on that
    digest is an opening (`opened`), and every opening on record."""
    rows = tx.query(
        "SELECT s.name, COALESCE(e.version, ''), COALESCE(e.from_stage, ''),"
        " SUM(CASE WHEN e.kind = :opened AND e.id = latest.id THEN 1 ELSE 0 END),"
        " SUM(CASE WHEN e.kind = :opened THEN 1 ELSE 0 END)"
        " FROM event e JOIN skill s ON s.id = e.skill_id"
        " JOIN (SELECT skill_id, COALESCE(digest, '') AS digest,"
        " COALESCE(from_stage, '') AS stage, actor, MAX(id) AS id FROM event"
        " WHERE kind IN (:opened, :closed)"
        " GROUP BY skill_id, COALESCE(digest, ''), COALESCE(from_stage, ''), actor) latest"
        " ON latest.skill_id = e.skill_id AND latest.digest = COALESCE(e.digest, '')"
        " AND latest.stage = COALESCE(e.from_stage, '') AND latest.actor = e.actor"
        " WHERE e.kind IN (:opened, :closed)"
        " GROUP BY s.name, COALESCE(e.version, ''), COALESCE(e.from_stage, '') ORDER BY s.name",
        {"opened": opened, "closed": closed},
    )
    return [
        BreakerCount(name, version, stage, int(open_), int(openings))
        for name, version, stage, open_, openings in rows
    ]


@dataclass(frozen=True)
class OutboxCount:
    """Outbox items of one kind in one status, and when the oldest of them was queued."""

    kind: str
    status: str
    count: int
    oldest: dt.datetime | None


def outbox_counts(tx: Transaction) -> list[OutboxCount]:
    """{(kind, status)}: how many items, and the oldest one's queueing time."""
    d = tx.dialect
    return [
        OutboxCount(kind, status, int(count), d.read_time(oldest))
        for kind, status, count, oldest in tx.query(
            "SELECT kind, status, COUNT(*), MIN(created_at) FROM outbox"
            " GROUP BY kind, status ORDER BY kind, status"
        )
    ]


def sla_breach_events(tx: Transaction, kind: str) -> list[tuple[str, str, int]]:
    """(skill, stage, count) of the SLA breach events on record (at most one per version, stage
    and UTC day: the enforcer's daily record)."""
    return [
        (name, stage, int(count))
        for name, stage, count in tx.query(
            "SELECT s.name, COALESCE(e.from_stage, ''), COUNT(*) FROM event e"
            " JOIN skill s ON s.id = e.skill_id WHERE e.kind = :kind"
            " GROUP BY s.name, COALESCE(e.from_stage, '') ORDER BY s.name",
            {"kind": kind},
        )
    ]
