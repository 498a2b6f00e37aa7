"""The store's queries behind `skillstage stats` and `skillstage report` (seed 000 "Monitoring").

Portable SQLAlchemy Core over the tables, not the seed views: the views' SQL (`julianday`,
`datetime('now', …)`) is SQLite's, and these numbers must come out the same on PostgreSQL. Ages
and averages are computed by the caller in Python from the timestamps returned here, for the same
reason. A test runs the seed's own dashboard SQL on SQLite and checks it agrees with these.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select

from skillstage.store import tables as t
from skillstage.store.outbox import OutboxItem, _item
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


def residents(store: Store, stages: Sequence[str]) -> list[Resident]:
    """The skill versions now in any of `stages`, oldest arrival first."""
    if not stages:
        return []
    a, s, v = t.stage_assignment, t.skill, t.skill_version
    query = (
        select(s.c.name, a.c.stage, v.c.version, v.c.digest, a.c.entered_at, v.c.frontmatter)
        .join(s, s.c.id == a.c.skill_id)
        .join(v, v.c.id == a.c.version_id)
        .where(a.c.left_at.is_(None), a.c.stage.in_(list(stages)))
        .order_by(a.c.entered_at, s.c.name)
    )
    with store._reading() as tx:
        return [
            Resident(
                name=row.name,
                stage=row.stage,
                version=row.version,
                digest=row.digest,
                entered_at=row.entered_at,
                frontmatter=dict(row.frontmatter or {}),
            )
            for row in tx.connection.execute(query)
        ]


def finished_stays(store: Store, stages: Sequence[str], *, since: dt.datetime) -> list[Stay]:
    """Stays in any of `stages` that ended after `since` (promoted, rolled back or replaced)."""
    if not stages:
        return []
    a, s = t.stage_assignment, t.skill
    query = (
        select(s.c.name, a.c.stage, a.c.entered_at, a.c.left_at)
        .join(s, s.c.id == a.c.skill_id)
        .where(a.c.left_at.is_not(None), a.c.left_at > since, a.c.stage.in_(list(stages)))
        .order_by(a.c.left_at)
    )
    with store._reading() as tx:
        return [
            Stay(name=row.name, stage=row.stage, entered_at=row.entered_at, left_at=row.left_at)
            for row in tx.connection.execute(query)
        ]


@dataclass(frozen=True)
class PromotionAttempts:
    """Promotion attempts in a window: every `promote` event, successful or refused."""

    total: int
    successful: int


def promotion_attempts(store: Store, *, since: dt.datetime) -> PromotionAttempts:
    """How many promotions were attempted after `since`, and how many succeeded (seed 000's
    "Promotion Success Rate" query, over the same rows as its `skill_promotions` view)."""
    e = t.event
    query = select(
        func.count(),
        func.coalesce(func.sum(case((e.c.success, 1), else_=0)), 0),
    ).where(e.c.kind == "promote", e.c.at > since)
    with store._reading() as tx:
        total, successful = tx.connection.execute(query).one()
    return PromotionAttempts(total=int(total), successful=int(successful))


def outbox_status_counts(
    store: Store, kind: str = DEPLOY_KIND, *, since: dt.datetime
) -> dict[str, int]:
    """How many outbox items of `kind` created after `since` are in each status."""
    o = t.outbox
    query = (
        select(o.c.status, func.count())
        .where(o.c.kind == kind, o.c.created_at > since)
        .group_by(o.c.status)
    )
    with store._reading() as tx:
        return {status: int(count) for status, count in tx.connection.execute(query)}


def deploy_items(
    store: Store, name: str, *, version: str, since: dt.datetime, limit: int = 10
) -> list[OutboxItem]:
    """Deploy items of one skill version queued at or after `since`, oldest first.

    The outbox does not link an item to its event, so a promotion's deploy is found by what its
    payload names (skill, version) and when it was queued (in the promotion's transaction, so
    not before the event's time).
    """
    o = t.outbox
    query = (
        select(o)
        .where(
            o.c.kind == DEPLOY_KIND,
            o.c.created_at >= since,
            o.c.payload["skill"].as_string() == name,
            o.c.payload["version"].as_string() == version,
        )
        .order_by(o.c.id)
        .limit(limit)
    )
    with store._reading() as tx:
        return [_item(row) for row in tx.connection.execute(query)]
