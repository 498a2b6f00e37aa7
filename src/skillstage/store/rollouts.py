"""The store's rollouts and the routing table loaders read (seed 002 §3.3, §6 "One Loader").

A rollout row says which candidate serves which share of a stage's traffic; the routing query
joins the stage pointers with the open rollouts, so a loader builds its whole table from one read.
`routing_generation` is bumped in the transaction of every change to what serves (a stage pointer
moved, a rollout started, stepped, paused or ended), so a loader polls one integer to know when to
read the table again.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skillstage.store.store import ROUTING_CHANNEL, Transaction

OPEN_STATES = ("active", "paused")


@dataclass(frozen=True)
class RolloutRecord:
    """One rollout: `candidate` serving `weight`% of `stage`'s traffic beside `stable`."""

    id: int
    name: str
    skill_id: int
    stage: str
    candidate_version: str
    candidate_digest: str
    candidate_stage: str
    stable_version: str
    stable_digest: str
    group_id: str
    steps: list[int]
    step_index: int
    step_started_at: dt.datetime
    step_min_duration_s: float
    step_min_executions: int
    segments: dict[str, list[str]]
    on_failure: str
    state: str
    actor: str
    reason: str | None
    verdict: dict[str, Any] | None
    retry_of: int | None
    started_at: dt.datetime
    ended_at: dt.datetime | None

    @property
    def weight(self) -> int:
        """The candidate's share of the traffic now, in percent (0 while paused)."""
        return self.steps[self.step_index] if self.state == "active" else 0

    @property
    def last_step(self) -> bool:
        return self.step_index == len(self.steps) - 1

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        for key in ("step_started_at", "started_at", "ended_at"):
            value = data[key]
            data[key] = value.isoformat() if value is not None else None
        data["weight"] = self.weight
        return data


_COLUMNS = (
    "r.id, s.name, r.skill_id, r.stage, r.candidate_version, r.candidate_digest,"
    " r.candidate_stage, r.stable_version, r.stable_digest, r.group_id, r.steps, r.step_index,"
    " r.step_started_at, r.step_min_duration_s, r.step_min_executions, r.segments, r.on_failure,"
    " r.state, r.actor, r.reason, r.verdict, r.retry_of, r.started_at, r.ended_at"
)


def _record(tx: Transaction, row: Sequence[Any]) -> RolloutRecord:
    d = tx.dialect
    return RolloutRecord(
        id=row[0],
        name=row[1],
        skill_id=row[2],
        stage=row[3],
        candidate_version=row[4],
        candidate_digest=row[5],
        candidate_stage=row[6],
        stable_version=row[7],
        stable_digest=row[8],
        group_id=row[9],
        steps=[int(step) for step in d.read_json(row[10])],
        step_index=row[11],
        step_started_at=d.read_time(row[12]),  # type: ignore[arg-type]
        step_min_duration_s=float(row[13]),
        step_min_executions=int(row[14]),
        segments=d.read_json(row[15]) or {},
        on_failure=row[16],
        state=row[17],
        actor=row[18],
        reason=row[19],
        verdict=d.read_json(row[20]),
        retry_of=row[21],
        started_at=d.read_time(row[22]),  # type: ignore[arg-type]
        ended_at=d.read_time(row[23]),
    )


def bump_generation(tx: Transaction, at: dt.datetime) -> None:
    """What serves changed: loaders rebuild their routing table on their next poll."""
    tx.bump_routing(at)


def generation(tx: Transaction) -> int:
    """The routing generation now."""
    value = tx.scalar("SELECT generation FROM routing_generation WHERE id = 1")
    return int(value or 0)


def rollouts(
    tx: Transaction,
    *,
    name: str | None = None,
    stage: str | None = None,
    open_only: bool = False,
    rollout_id: int | None = None,
    limit: int = 1000,
) -> list[RolloutRecord]:
    """Rollouts, newest first (optionally of one skill, one stage, only those still open)."""
    sql = f"SELECT {_COLUMNS} FROM rollout r JOIN skill s ON s.id = r.skill_id WHERE 1 = 1"
    params: dict[str, Any] = {"limit": limit}
    if name is not None:
        sql += " AND s.name = :name"
        params["name"] = name
    if stage is not None:
        sql += " AND r.stage = :stage"
        params["stage"] = stage
    if open_only:
        sql += " AND r.state IN ('active', 'paused')"
    if rollout_id is not None:
        sql += " AND r.id = :id"
        params["id"] = rollout_id
    sql += " ORDER BY r.id DESC LIMIT :limit"
    return [_record(tx, row) for row in tx.query(sql, params)]


def open_rollout(tx: Transaction, name: str, stage: str) -> RolloutRecord | None:
    """The active or paused rollout of `name` in `stage`, if any."""
    found = rollouts(tx, name=name, stage=stage, open_only=True, limit=1)
    return found[0] if found else None


def insert_rollout(tx: Transaction, fields: Mapping[str, Any]) -> int:
    """A new rollout row; its id."""
    d = tx.dialect
    values = dict(fields)
    for key in ("steps", "segments", "verdict"):
        values[key] = d.json(values.get(key))
    for key in ("step_started_at", "started_at", "ended_at"):
        values[key] = d.time(values.get(key))
    columns = ", ".join(values)
    placeholders = ", ".join(f":{key}" for key in values)
    found = tx.insert_returning_id(
        f"INSERT INTO rollout ({columns}) VALUES ({placeholders})", values
    )
    assert found is not None
    return found


def update_rollout(
    tx: Transaction, rollout_id: int, *, expect: tuple[str, int] | None = None, **changes: Any
) -> bool:
    """Change some of a rollout's columns; with `expect` (state, step index), only if it is
    still there (False when another writer changed it first)."""
    d = tx.dialect
    values = {}
    for key, value in changes.items():
        if key in ("steps", "segments", "verdict"):
            value = d.json(value)
        elif key in ("step_started_at", "started_at", "ended_at"):
            value = d.time(value)
        values[key] = value
    assignments = ", ".join(f"{key} = :{key}" for key in values)
    where = " AND state = :expect_state AND step_index = :expect_step" if expect else ""
    changed = tx.execute(
        f"UPDATE rollout SET {assignments} WHERE id = :rollout_id{where}",
        {
            **values,
            "rollout_id": rollout_id,
            **({"expect_state": expect[0], "expect_step": expect[1]} if expect else {}),
        },
    )
    return changed == 1


@dataclass(frozen=True)
class RoutingRow:
    """What serves one skill in one stage: the live version, and an open rollout's candidate."""

    name: str
    stage: str
    version: str
    digest: str
    path: str
    frontmatter: dict[str, Any]
    rollout: RolloutRecord | None


def routing_rows(tx: Transaction) -> list[RoutingRow]:
    """Every live version in every stage, with the open rollout of each, in one read."""
    d = tx.dialect
    live = tx.query(
        "SELECT s.name, a.stage, v.version, v.digest, a.path, v.frontmatter FROM stage_assignment a"
        " JOIN skill s ON s.id = a.skill_id JOIN skill_version v ON v.id = a.version_id"
        " WHERE a.left_at IS NULL ORDER BY s.name, a.stage"
    )
    open_ = {(r.name, r.stage): r for r in rollouts(tx, open_only=True, limit=1_000_000)}
    return [
        RoutingRow(
            name=row[0],
            stage=row[1],
            version=row[2],
            digest=row[3],
            path=row[4],
            frontmatter=d.read_json(row[5]) or {},
            rollout=open_.get((row[0], row[1])),
        )
        for row in live
    ]


def live_versions(
    tx: Transaction, stages: Sequence[str]
) -> list[tuple[int, str, str, str, str, dt.datetime, dict[str, Any]]]:
    """(skill id, name, stage, version, digest, entered at, frontmatter) of every version live
    in `stages`, by name."""
    if not stages:
        return []
    d = tx.dialect
    marks = ", ".join(f":s{i}" for i in range(len(stages)))
    return [
        (row[0], row[1], row[2], row[3], row[4], d.read_time(row[5]), d.read_json(row[6]) or {})  # type: ignore[misc]
        for row in tx.query(
            "SELECT a.skill_id, s.name, a.stage, v.version, v.digest, a.entered_at,"
            " v.frontmatter FROM stage_assignment a JOIN skill s ON s.id = a.skill_id"
            " JOIN skill_version v ON v.id = a.version_id"
            f" WHERE a.left_at IS NULL AND a.stage IN ({marks}) ORDER BY s.name, a.stage",
            {f"s{i}": stage for i, stage in enumerate(stages)},
        )
    ]


def previous_versions(tx: Transaction) -> dict[tuple[str, str], tuple[str, str]]:
    """{(name, stage): (version, digest)} of the version live in each stage before the one live
    now, skipping versions rolled back as failed: where a loader's circuit breaker falls back to
    (seed 002 §3.3)."""
    d = tx.dialect
    failed: set[tuple[str, str]] = set()
    for name, details in tx.query(
        "SELECT s.name, e.details FROM event e JOIN skill s ON s.id = e.skill_id"
        " WHERE e.kind = 'rollback' AND e.success"
    ):
        found = d.read_json(details) or {}
        if found.get("failed_digest"):
            failed.add((name, found["failed_digest"]))
    live = {
        (name, stage): digest
        for name, stage, digest in tx.query(
            "SELECT s.name, a.stage, v.digest FROM stage_assignment a"
            " JOIN skill s ON s.id = a.skill_id JOIN skill_version v ON v.id = a.version_id"
            " WHERE a.left_at IS NULL"
        )
    }
    previous: dict[tuple[str, str], tuple[str, str]] = {}
    for name, stage, version, digest in tx.query(
        "SELECT s.name, a.stage, v.version, v.digest FROM stage_assignment a"
        " JOIN skill s ON s.id = a.skill_id JOIN skill_version v ON v.id = a.version_id"
        " WHERE a.left_at IS NOT NULL ORDER BY a.left_at DESC, a.id DESC"
    ):
        key = (name, stage)
        if key in previous or key not in live or live[key] == digest:
            continue
        if (name, digest) not in failed:
            previous[key] = (version, digest)
    return previous


def last_moves(tx: Transaction) -> dict[str, dict[str, dt.datetime]]:
    """Each skill's latest successful promotion and rollback: {name: {"promote": at, …}}."""
    found: dict[str, dict[str, dt.datetime]] = {}
    for name, kind, at in tx.query(
        "SELECT s.name, e.kind, MAX(e.at) FROM event e JOIN skill s ON s.id = e.skill_id"
        " WHERE e.kind IN ('promote', 'rollback') AND e.success GROUP BY s.name, e.kind"
    ):
        found.setdefault(name, {})[kind] = tx.dialect.read_time(at)  # type: ignore[assignment]
    return found


class RoutingListener:
    """PostgreSQL: a connection LISTENing on the routing channel, so a loader wakes the moment a
    change commits instead of at its next poll. `wait` returns True when one came."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    def wait(self, timeout: float) -> bool:
        """Block up to `timeout` seconds for a change; True if one was announced."""
        woke = False
        for _ in self._connection.notifies(timeout=timeout, stop_after=1):
            woke = True
        return woke

    def close(self) -> None:
        self._connection.close()


def listen_for_routing(url: str) -> RoutingListener | None:
    """A listener on the store at `url` when it is PostgreSQL; None for SQLite (poll it), or
    when the connection cannot be made (polling still sees every change)."""
    from skillstage.store.db import connect, parse_url

    parsed = parse_url(url)
    if parsed.backend != "postgresql":
        return None
    try:
        connection = connect(parsed)
        connection.execute(f"LISTEN {ROUTING_CHANNEL}")
    except Exception:
        return None
    return RoutingListener(connection)
