"""Holds and kill switches on skills, alert episodes, and the timeline of automated actions.

- A control (`skill_control`) is a hand on a skill: a `hold` keeps automation off it (set by
  every automated rollback, cleared only by a person), `disabled` is the kill switch (loaders and
  sync stop serving it). One set control of a kind per skill and stage (a partial unique index),
  so two writers setting the same hold make one row.
- An alert episode opens once when a condition goes bad and closes when it recovers: the
  notification goes out at the opening and the closing, never at every pass.
- An action step is one timestamped step of an automated rollback after its commit (seed 002
  §3.2: alert sent, failed version archived, re-index done, report written), written once.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skillstage.store.store import Transaction

HOLD = "hold"
DISABLED = "disabled"
EVERY_STAGE = "*"


@dataclass(frozen=True)
class Control:
    """A hold or a kill switch on one skill, in one stage or every stage ("*")."""

    id: int
    name: str
    kind: str
    stage: str
    digest: str | None
    actor: str
    reason: str
    details: dict[str, Any] | None
    set_at: dt.datetime
    cleared_at: dt.datetime | None
    cleared_by: str | None
    clear_reason: str | None

    def covers(self, stage: str) -> bool:
        return self.stage in (EVERY_STAGE, stage)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("set_at", "cleared_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


_CONTROL_COLUMNS = (
    "c.id, s.name, c.kind, c.stage, c.digest, c.actor, c.reason, c.details, c.set_at,"
    " c.cleared_at, c.cleared_by, c.clear_reason"
)


def _control(tx: Transaction, row: Sequence[Any]) -> Control:
    d = tx.dialect
    return Control(
        id=row[0],
        name=row[1],
        kind=row[2],
        stage=row[3],
        digest=row[4],
        actor=row[5],
        reason=row[6],
        details=d.read_json(row[7]),
        set_at=d.read_time(row[8]),  # type: ignore[arg-type]
        cleared_at=d.read_time(row[9]),
        cleared_by=row[10],
        clear_reason=row[11],
    )


def controls(
    tx: Transaction,
    *,
    kind: str | None = None,
    name: str | None = None,
    set_only: bool = True,
    limit: int = 100_000,
) -> list[Control]:
    """Controls, newest first: those set now (or every one, with `set_only=False`)."""
    sql = (
        f"SELECT {_CONTROL_COLUMNS} FROM skill_control c JOIN skill s ON s.id = c.skill_id"
        " WHERE 1 = 1"
    )
    params: dict[str, Any] = {"limit": limit}
    if kind is not None:
        sql += " AND c.kind = :kind"
        params["kind"] = kind
    if name is not None:
        sql += " AND s.name = :name"
        params["name"] = name
    if set_only:
        sql += " AND c.cleared_at IS NULL"
    sql += " ORDER BY c.id DESC LIMIT :limit"
    return [_control(tx, row) for row in tx.query(sql, params)]


def control_on(tx: Transaction, kind: str, name: str, stage: str) -> Control | None:
    """The set control of `kind` that covers `name` in `stage` (its own stage's, or "*")."""
    for found in controls(tx, kind=kind, name=name):
        if found.covers(stage):
            return found
    return None


def set_control(
    tx: Transaction,
    kind: str,
    name: str,
    *,
    stage: str,
    actor: str,
    reason: str,
    at: dt.datetime,
    digest: str | None = None,
    details: Mapping[str, Any] | None = None,
) -> Control | None:
    """Set a control; None when the same one is set already (its row is kept as it was)."""
    d = tx.dialect
    skill_id = tx.ensure_skill(name, at)
    found = tx.insert_returning_id(
        "INSERT INTO skill_control (skill_id, kind, stage, digest, actor, reason, details,"
        " set_at) VALUES (:skill_id, :kind, :stage, :digest, :actor, :reason, :details, :at)"
        " ON CONFLICT (skill_id, kind, stage) WHERE cleared_at IS NULL DO NOTHING",
        {
            "skill_id": skill_id,
            "kind": kind,
            "stage": stage,
            "digest": digest,
            "actor": actor,
            "reason": reason,
            "details": d.json(dict(details) if details is not None else None),
            "at": d.time(at),
        },
    )
    if found is None:
        return None
    row = tx.one(
        f"SELECT {_CONTROL_COLUMNS} FROM skill_control c JOIN skill s ON s.id = c.skill_id"
        " WHERE c.id = :id",
        {"id": found},
    )
    assert row is not None
    return _control(tx, row)


def clear_control(
    tx: Transaction,
    kind: str,
    name: str,
    *,
    stage: str | None,
    actor: str,
    reason: str,
    at: dt.datetime,
) -> list[Control]:
    """Clear the set controls of `kind` on `name` (in `stage`, or every one): those cleared."""
    cleared = [c for c in controls(tx, kind=kind, name=name) if stage is None or c.stage == stage]
    for found in cleared:
        tx.execute(
            "UPDATE skill_control SET cleared_at = :at, cleared_by = :actor,"
            " clear_reason = :reason WHERE id = :id AND cleared_at IS NULL",
            {"at": tx.dialect.time(at), "actor": actor, "reason": reason, "id": found.id},
        )
    return cleared


def disabled_routes(tx: Transaction) -> dict[str, set[str]]:
    """{skill name: stages its kill switch covers ("*" for every stage)}."""
    found: dict[str, set[str]] = {}
    for name, stage in tx.query(
        "SELECT s.name, c.stage FROM skill_control c JOIN skill s ON s.id = c.skill_id"
        " WHERE c.kind = :kind AND c.cleared_at IS NULL",
        {"kind": DISABLED},
    ):
        found.setdefault(name, set()).add(stage)
    return found


# -- alert episodes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Episode:
    """One alert episode: `key` went bad at `opened_at`; still open while `closed_at` is None."""

    id: int
    key: str
    name: str | None
    kind: str
    severity: str
    message: str
    details: dict[str, Any] | None
    opened_at: dt.datetime
    last_seen_at: dt.datetime
    closed_at: dt.datetime | None

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("opened_at", "last_seen_at", "closed_at"):
            data[key] = data[key].isoformat() if data[key] is not None else None
        return data


_EPISODE_COLUMNS = (
    "id, key, name, kind, severity, message, details, opened_at, last_seen_at, closed_at"
)


def _episode(tx: Transaction, row: Sequence[Any]) -> Episode:
    d = tx.dialect
    return Episode(
        id=row[0],
        key=row[1],
        name=row[2],
        kind=row[3],
        severity=row[4],
        message=row[5],
        details=d.read_json(row[6]),
        opened_at=d.read_time(row[7]),  # type: ignore[arg-type]
        last_seen_at=d.read_time(row[8]),  # type: ignore[arg-type]
        closed_at=d.read_time(row[9]),
    )


def episodes(
    tx: Transaction, *, open_only: bool = True, name: str | None = None, limit: int = 10_000
) -> list[Episode]:
    """Alert episodes, newest first (those open now, by default)."""
    sql = f"SELECT {_EPISODE_COLUMNS} FROM alert_episode WHERE 1 = 1"
    params: dict[str, Any] = {"limit": limit}
    if open_only:
        sql += " AND closed_at IS NULL"
    if name is not None:
        sql += " AND name = :name"
        params["name"] = name
    sql += " ORDER BY id DESC LIMIT :limit"
    return [_episode(tx, row) for row in tx.query(sql, params)]


def open_episode(
    tx: Transaction,
    key: str,
    *,
    name: str | None,
    kind: str,
    severity: str,
    message: str,
    at: dt.datetime,
    details: Mapping[str, Any] | None = None,
) -> tuple[Episode, bool]:
    """The open episode of `key`, opened now if there was none: (episode, whether it is new, or
    its severity rose — both are announced)."""
    d = tx.dialect
    found = tx.one(
        f"SELECT {_EPISODE_COLUMNS} FROM alert_episode WHERE key = :key AND closed_at IS NULL",
        {"key": key},
    )
    if found is not None:
        episode = _episode(tx, found)
        rose = episode.severity != severity and severity == "critical"
        tx.execute(
            "UPDATE alert_episode SET last_seen_at = :at, message = :message, details = :details"
            + (", severity = :severity" if rose else "")
            + " WHERE id = :id",
            {
                "at": d.time(at),
                "message": message,
                "details": d.json(dict(details) if details is not None else None),
                "severity": severity,
                "id": episode.id,
            },
        )
        return dataclasses.replace(
            episode, severity=severity if rose else episode.severity, message=message
        ), rose
    new_id = tx.insert_returning_id(
        "INSERT INTO alert_episode (key, name, kind, severity, message, details, opened_at,"
        " last_seen_at) VALUES (:key, :name, :kind, :severity, :message, :details, :at, :at)"
        " ON CONFLICT (key) WHERE closed_at IS NULL DO NOTHING",
        {
            "key": key,
            "name": name,
            "kind": kind,
            "severity": severity,
            "message": message,
            "details": d.json(dict(details) if details is not None else None),
            "at": d.time(at),
        },
    )
    row = tx.one(
        f"SELECT {_EPISODE_COLUMNS} FROM alert_episode WHERE key = :key AND closed_at IS NULL",
        {"key": key},
    )
    assert row is not None
    return _episode(tx, row), new_id is not None


def close_episode(tx: Transaction, episode_id: int, at: dt.datetime) -> bool:
    """Close an open episode (the condition recovered); False if it was closed already."""
    return (
        tx.execute(
            "UPDATE alert_episode SET closed_at = :at WHERE id = :id AND closed_at IS NULL",
            {"at": tx.dialect.time(at), "id": episode_id},
        )
        == 1
    )


# -- the timeline of an automated action ---------------------------------------------------------


@dataclass(frozen=True)
class Step:
    step: str
    at: dt.datetime
    ok: bool
    detail: str | None

    def to_dict(self) -> dict[str, Any]:
        return {"step": self.step, "at": self.at.isoformat(), "ok": self.ok, "detail": self.detail}


def record_step(
    tx: Transaction,
    event_id: int,
    step: str,
    *,
    at: dt.datetime,
    ok: bool = True,
    detail: str | None = None,
) -> bool:
    """Record one step of event `event_id`'s timeline; False if it was recorded already."""
    found = tx.insert_returning_id(
        "INSERT INTO action_step (event_id, step, at, ok, detail)"
        " VALUES (:event_id, :step, :at, :ok, :detail)"
        " ON CONFLICT (event_id, step) DO NOTHING",
        {"event_id": event_id, "step": step, "at": tx.dialect.time(at), "ok": ok, "detail": detail},
    )
    return found is not None


def steps(tx: Transaction, event_ids: Sequence[int]) -> dict[int, list[Step]]:
    """{event id: its steps in time order}."""
    if not event_ids:
        return {}
    found: dict[int, list[Step]] = {}
    ids = list(dict.fromkeys(event_ids))
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ", ".join(f":e{i}" for i in range(len(chunk)))
        for event_id, step, at, ok, detail in tx.query(
            f"SELECT event_id, step, at, ok, detail FROM action_step WHERE event_id IN ({marks})"
            " ORDER BY at, id",
            {f"e{i}": value for i, value in enumerate(chunk)},
        ):
            found.setdefault(event_id, []).append(
                Step(step, tx.dialect.read_time(at), bool(ok), detail)  # type: ignore[arg-type]
            )
    return found
