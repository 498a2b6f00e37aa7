"""The store's queries behind readiness, comparisons, evals and sign-offs (seed 002 §2, §4).

Samples are fetched as plain columns in time order and summarised in Python (`metrics/summary`):
a version's executions are thousands of rows at most per query, reached through the
(skill_id, digest, timestamp) index, and Python's arithmetic gives the same answer on both
databases.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skillstage.store.store import Transaction

# Columns of an execution sample, in order.
SAMPLE_COLUMNS = (
    "pattern_fidelity",
    "outcome_quality",
    "execution_time_ms",
    "exception",
    "false_positive",
    "false_negative",
    "critical",
)


@dataclass(frozen=True)
class Rows:
    """Executions as columns, oldest first; `first`/`last` are the first and last timestamps."""

    columns: dict[str, list[Any]]
    first: dt.datetime | None
    last: dt.datetime | None

    @property
    def count(self) -> int:
        return len(self.columns["exception"])


def execution_rows(
    tx: Transaction,
    skill_id: int,
    *,
    digest: str | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    in_use: bool = False,
    unless_tagged_otherwise: Mapping[str, str] | None = None,
) -> Rows:
    """The executions of a skill (optionally of one digest, in a time window; with `in_use`,
    not its benchmark runs; with `unless_tagged_otherwise`, not those whose tags give another
    value for one of its keys), oldest first."""
    sql = (
        "SELECT pattern_fidelity, outcome_quality, execution_time_ms, exception, false_positive,"
        ' false_negative, critical, "timestamp" FROM execution WHERE skill_id = :skill_id'
    )
    params: dict[str, Any] = {"skill_id": skill_id}
    if digest is not None:
        sql += " AND digest = :digest"
        params["digest"] = digest
    if since is not None:
        sql += ' AND "timestamp" >= :since'
        params["since"] = tx.dialect.time(since)
    if until is not None:
        sql += ' AND "timestamp" < :until'
        params["until"] = tx.dialect.time(until)
    if in_use:
        sql += " AND benchmark = :benchmark"
        params["benchmark"] = False
    for number, (key, value) in enumerate((unless_tagged_otherwise or {}).items()):
        # As text on both stores (SQLite's json_extract gives 5 for {"rollout_id": 5}).
        tag = f"CAST({tx.dialect.json_text('tags', key)} AS TEXT)"
        sql += f" AND (tags IS NULL OR {tag} IS NULL OR {tag} = :tag_{number})"
        params[f"tag_{number}"] = str(value)
    rows = tx.query(sql + ' ORDER BY "timestamp"', params)
    columns: dict[str, list[Any]] = {name: [] for name in SAMPLE_COLUMNS}
    if rows:
        transposed = list(zip(*rows, strict=True))
        for index, name in enumerate(SAMPLE_COLUMNS):
            values = list(transposed[index])
            columns[name] = [bool(v) for v in values] if index >= 3 else values
        return Rows(
            columns, tx.dialect.read_time(transposed[7][0]), tx.dialect.read_time(transposed[7][-1])
        )
    return Rows(columns, None, None)


@dataclass(frozen=True)
class Tenure:
    """A version's stay in a stage (`left_at` None: it is there now)."""

    stage: str
    version: str
    digest: str
    entered_at: dt.datetime
    left_at: dt.datetime | None


def tenures(tx: Transaction, skill_id: int, stage: str | None = None) -> list[Tenure]:
    """A skill's stays in stages, newest first."""
    sql = (
        "SELECT a.stage, v.version, v.digest, a.entered_at, a.left_at FROM stage_assignment a"
        " JOIN skill_version v ON v.id = a.version_id WHERE a.skill_id = :skill_id"
    )
    if stage is not None:
        sql += " AND a.stage = :stage"
    d = tx.dialect
    return [
        Tenure(row[0], row[1], row[2], d.read_time(row[3]), d.read_time(row[4]))  # type: ignore[arg-type]
        for row in tx.query(
            sql + " ORDER BY a.entered_at DESC, a.id DESC", {"skill_id": skill_id, "stage": stage}
        )
    ]


def version_by_digest(tx: Transaction, skill_id: int, prefix: str) -> list[tuple[str, str]]:
    """(version, digest) of the registered versions whose digest starts with `prefix`."""
    rows = tx.query(
        "SELECT version, digest FROM skill_version WHERE skill_id = :skill_id"
        " AND digest LIKE :prefix",
        {"skill_id": skill_id, "prefix": prefix.lower() + "%"},
    )
    return [(row[0], row[1]) for row in rows]


# -- eval runs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvalRunRecord:
    id: int
    version: str
    digest: str
    cases_total: int
    cases_executed: int
    summary: dict[str, Any]
    cases: list[dict[str, Any]]
    at: dt.datetime


def add_eval_run(
    tx: Transaction,
    skill_id: int,
    *,
    version: str,
    digest: str,
    summary: Mapping[str, Any],
    cases: Sequence[Mapping[str, Any]],
    at: dt.datetime,
) -> int:
    found = tx.insert_returning_id(
        "INSERT INTO eval_run (skill_id, version, digest, cases_total, cases_executed, summary,"
        " cases, at) VALUES (:skill_id, :version, :digest, :total, :executed, :summary, :cases,"
        " :at)",
        {
            "skill_id": skill_id,
            "version": version,
            "digest": digest,
            "total": int(summary["cases_total"]),
            "executed": int(summary["cases_executed"]),
            "summary": tx.dialect.json(dict(summary)),
            "cases": tx.dialect.json([dict(case) for case in cases]),
            "at": tx.dialect.time(at),
        },
    )
    assert found is not None
    return found


def latest_eval_run(tx: Transaction, skill_id: int, digest: str) -> EvalRunRecord | None:
    row = tx.one(
        "SELECT id, version, digest, cases_total, cases_executed, summary, cases, at"
        " FROM eval_run WHERE skill_id = :skill_id AND digest = :digest"
        " ORDER BY at DESC, id DESC LIMIT 1",
        {"skill_id": skill_id, "digest": digest},
    )
    if row is None:
        return None
    d = tx.dialect
    return EvalRunRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        d.read_json(row[5]),
        d.read_json(row[6]),
        d.read_time(row[7]),  # type: ignore[arg-type]
    )


# -- sign-offs -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SignOff:
    id: int
    digest: str
    version: str
    from_stage: str
    to_stage: str
    ticket: str
    decision: str
    approver: str
    checklist: dict[str, Any]
    notes: str | None
    at: dt.datetime


def add_signoff(
    tx: Transaction,
    *,
    skill_id: int,
    version_id: int,
    digest: str,
    from_stage: str,
    to_stage: str,
    ticket: str,
    decision: str,
    approver: str,
    checklist: Mapping[str, Any],
    notes: str | None,
    at: dt.datetime,
) -> int:
    found = tx.insert_returning_id(
        "INSERT INTO approval (skill_id, version_id, digest, from_stage, to_stage, ticket,"
        " decision, approver, checklist, notes, at) VALUES (:skill_id, :version_id, :digest,"
        " :from_stage, :to_stage, :ticket, :decision, :approver, :checklist, :notes, :at)",
        {
            "skill_id": skill_id,
            "version_id": version_id,
            "digest": digest,
            "from_stage": from_stage,
            "to_stage": to_stage,
            "ticket": ticket,
            "decision": decision,
            "approver": approver,
            "checklist": tx.dialect.json(dict(checklist)),
            "notes": notes,
            "at": tx.dialect.time(at),
        },
    )
    assert found is not None
    return found


def latest_signoff(
    tx: Transaction, skill_id: int, digest: str, from_stage: str, to_stage: str
) -> SignOff | None:
    """The newest sign-off of this content for this transition: a later decision replaces an
    earlier one."""
    row = tx.one(
        "SELECT a.id, a.digest, v.version, a.from_stage, a.to_stage, a.ticket, a.decision,"
        " a.approver, a.checklist, a.notes, a.at FROM approval a"
        " JOIN skill_version v ON v.id = a.version_id"
        " WHERE a.skill_id = :skill_id AND a.digest = :digest AND a.from_stage = :from_stage"
        " AND a.to_stage = :to_stage ORDER BY a.at DESC, a.id DESC LIMIT 1",
        {"skill_id": skill_id, "digest": digest, "from_stage": from_stage, "to_stage": to_stage},
    )
    if row is None:
        return None
    d = tx.dialect
    return SignOff(
        row[0],
        row[1],
        row[2],
        row[3],
        row[4],
        row[5],
        row[6],
        row[7],
        d.read_json(row[8]),
        row[9],
        d.read_time(row[10]),  # type: ignore[arg-type]
    )
