"""The store's queries behind `skillstage stats` and `skillstage report` (seed 000 "Monitoring").

Portable SQL over the tables, not the seed views: the views' SQL (`julianday`,
`datetime('now', …)`) is SQLite's, and these numbers must come out the same on PostgreSQL. Ages
and averages are computed by the caller in Python from the timestamps returned here, for the same
reason. A test runs the seed's own dashboard SQL on SQLite and checks it agrees with these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from skillstage.store.outbox import _COLUMNS, OutboxItem, _item
from skillstage.store.store import Store

DEPLOY_KIND = "deploy"


@dataclass(frozen=True)
class Resident:
    """A skill version that is in a stage now, with the frontmatter it entered with (for its SLA
    override)."""

    name: str
    stage: str
    version: str
    digest: str
    entered_at: dt.datetime
    frontmatter: dict[str, Any]


@dataclass(frozen=True)
class Stay:
    """A finished stay of a skill version in a stage."""

    name: str
    stage: str
    entered_at: dt.datetime
    left_at: dt.datetime


def _in(name: str, values: Sequence[str]) -> tuple[str, dict[str, str]]:
    """`(:name_0, :name_1, …)` and its parameters, for `column IN …`."""
    params = {f"{name}_{index}": value for index, value in enumerate(values)}
    return "(" + ", ".join(":" + key for key in params) + ")", params


def residents(store: Store, stages: Sequence[str]) -> list[Resident]:
    """The skill versions now in any of `stages`, oldest arrival first."""
    if not stages:
        return []
    names, params = _in("stage", stages)
    with store.reading() as tx:
        d = tx.dialect
        rows = tx.query(
            "SELECT s.name, a.stage, v.version, v.digest, a.entered_at, v.frontmatter"
            " FROM stage_assignment a JOIN skill s ON s.id = a.skill_id"
            " JOIN skill_version v ON v.id = a.version_id"
            f" WHERE a.left_at IS NULL AND a.stage IN {names} ORDER BY a.entered_at, s.name",
            params,
        )
        return [
            Resident(
                name=name,
                stage=stage,
                version=version,
                digest=digest,
                entered_at=d.read_time(entered_at),  # type: ignore[arg-type]
                frontmatter=dict(d.read_json(frontmatter) or {}),
            )
            for name, stage, version, digest, entered_at, frontmatter in rows
        ]


def finished_stays(store: Store, stages: Sequence[str], *, since: dt.datetime) -> list[Stay]:
    """Stays in any of `stages` that ended after `since` (promoted, rolled back or replaced)."""
    if not stages:
        return []
    names, params = _in("stage", stages)
    with store.reading() as tx:
        d = tx.dialect
        rows = tx.query(
            "SELECT s.name, a.stage, a.entered_at, a.left_at"
            " FROM stage_assignment a JOIN skill s ON s.id = a.skill_id"
            f" WHERE a.left_at IS NOT NULL AND a.left_at > :since AND a.stage IN {names}"
            " ORDER BY a.left_at",
            {**params, "since": d.time(since)},
        )
        return [
            Stay(
                name=name,
                stage=stage,
                entered_at=d.read_time(entered_at),  # type: ignore[arg-type]
                left_at=d.read_time(left_at),  # type: ignore[arg-type]
            )
            for name, stage, entered_at, left_at in rows
        ]


@dataclass(frozen=True)
class PromotionAttempts:
    """Promotion attempts in a window: every `promote` event, successful or refused."""

    total: int
    successful: int


def promotion_attempts(store: Store, *, since: dt.datetime) -> PromotionAttempts:
    """How many promotions were attempted after `since`, and how many succeeded (seed 000's
    "Promotion Success Rate" query, over the same rows as its `skill_promotions` view)."""
    with store.reading() as tx:
        row = tx.one(
            "SELECT COUNT(*), COALESCE(SUM(CASE WHEN success THEN 1 ELSE 0 END), 0)"
            " FROM event WHERE kind = 'promote' AND at > :since",
            {"since": tx.dialect.time(since)},
        )
    assert row is not None
    return PromotionAttempts(total=int(row[0]), successful=int(row[1]))


def outbox_status_counts(
    store: Store, kind: str = DEPLOY_KIND, *, since: dt.datetime
) -> dict[str, int]:
    """How many outbox items of `kind` created after `since` are in each status."""
    with store.reading() as tx:
        rows = tx.query(
            "SELECT status, COUNT(*) FROM outbox WHERE kind = :kind AND created_at > :since"
            " GROUP BY status",
            {"kind": kind, "since": tx.dialect.time(since)},
        )
    return {status: int(count) for status, count in rows}


def deploy_items(
    store: Store,
    name: str,
    *,
    version: str,
    since: dt.datetime,
    limit: int = 10,
    kind: str = DEPLOY_KIND,
) -> list[OutboxItem]:
    """Deploy items (or items of `kind`) of one skill version queued at or after `since`,
    oldest first.

    The outbox does not link an item to its event, so a promotion's deploy is found by what its
    payload names (skill, version) and when it was queued (in the promotion's transaction, so
    not before the event's time).
    """
    with store.reading() as tx:
        d = tx.dialect
        rows = tx.query(
            f"SELECT {_COLUMNS} FROM outbox WHERE kind = :kind AND created_at >= :since"
            f" AND {d.json_text('payload', 'skill')} = :name"
            f" AND {d.json_text('payload', 'version')} = :version ORDER BY id LIMIT :limit",
            {
                "kind": kind,
                "since": d.time(since),
                "name": name,
                "version": version,
                "limit": limit,
            },
        )
        return [_item(row, d) for row in rows]
