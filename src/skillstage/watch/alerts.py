"""Alert levels (seed 003's thresholds: error rate 5 %/10 %, performance 1.2x/1.5x, memory
75/100 MB; seed 002 §7: metrics lag over an hour), announced once per episode.

A condition that goes bad opens an episode and queues its notification in the same transaction
(so of two watchers one announces it); while it stays bad, nothing more is sent, unless it rises
from warning to critical; when it is good again the episode closes and the recovery is announced
to the same targets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from skillstage.config import AlertsConfig, Project, Severity
from skillstage.store import Store, Transaction
from skillstage.store import controls as store_controls
from skillstage.store.outbox import enqueue
from skillstage.watch.triggers import Baseline, LiveVersion, sample


@dataclass(frozen=True)
class Condition:
    """One alert condition as seen this pass: bad at `severity`, or good (None)."""

    key: str
    name: str | None
    kind: str
    severity: Severity | None
    message: str
    details: dict[str, Any]


@dataclass(frozen=True)
class Announcement:
    """An alert opened, risen or recovered this pass (its notification is queued)."""

    key: str
    name: str | None
    kind: str
    severity: str
    change: str  # opened | rose | recovered
    message: str
    outbox_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        data = dict(self.__dict__)
        data["outbox_ids"] = list(self.outbox_ids)
        return data


def _level(value: float | None, warning: float | None, critical: float | None) -> Severity | None:
    if value is None:
        return None
    if critical is not None and value > critical:
        return "critical"
    if warning is not None and value > warning:
        return "warning"
    return None


def version_conditions(
    tx: Transaction,
    live: LiveVersion,
    config: AlertsConfig,
    base: Baseline | None,
) -> list[Condition]:
    """Error rate, performance against the baseline and memory of one live version."""
    where = f"{live.name}:{live.stage}"
    recent = sample(tx, live, limit=config.window)
    found: list[Condition] = []
    if recent.count < config.min_executions:
        return found  # too few to say: an open episode stays open until there is evidence
    errors = sum(e or m for e, m in zip(recent.exception, recent.false_negative, strict=True))
    rate = errors / recent.count
    level = _level(rate, config.error_rate_warning, config.error_rate_critical)
    found.append(
        Condition(
            f"error_rate:{where}",
            live.name,
            "error_rate",
            level,
            f"{live.name} {live.version} in {live.stage}: error rate {rate:.0%} "
            f"({errors}/{recent.count} executions with an exception or a miss)",
            {"error_rate": round(rate, 4), "executions": recent.count},
        )
    )
    if base is not None and base.mean_ms and base.complete and recent.time_ms:
        mean = sum(recent.time_ms) / len(recent.time_ms)
        ratio = mean / base.mean_ms
        level = _level(ratio, config.performance_warning, config.performance_critical)
        found.append(
            Condition(
                f"performance:{where}",
                live.name,
                "performance_degradation",
                level,
                f"{live.name} {live.version} in {live.stage}: mean execution time {mean:.0f} ms"
                f" is {ratio:.2f}x its baseline {base.mean_ms:.0f} ms",
                {"ratio": round(ratio, 3), "mean_ms": mean, "baseline_ms": base.mean_ms},
            )
        )
    if config.memory_warning_mb is not None or config.memory_critical_mb is not None:
        memory = _memory(tx, live, config.window)
        if memory is not None:
            level = _level(memory, config.memory_warning_mb, config.memory_critical_mb)
            found.append(
                Condition(
                    f"memory:{where}",
                    live.name,
                    "memory",
                    level,
                    f"{live.name} {live.version} in {live.stage}: mean memory {memory:.0f} MB",
                    {"memory_mb": memory},
                )
            )
    return found


def _memory(tx: Transaction, live: LiveVersion, window: int) -> float | None:
    """The mean of the tag memory_mb over the version's latest executions, if hosts record it."""
    tag = f"CAST({tx.dialect.json_text('tags', 'memory_mb')} AS REAL)"
    value = tx.scalar(
        f"SELECT AVG(m) FROM (SELECT {tag} AS m FROM execution WHERE skill_id = :skill_id"
        ' AND digest = :digest AND "timestamp" >= :since AND benchmark = :benchmark'
        ' ORDER BY "timestamp" DESC LIMIT :limit) recent WHERE m IS NOT NULL',
        {
            "skill_id": live.skill_id,
            "digest": live.digest,
            "since": tx.dialect.time(live.entered_at),
            "benchmark": False,
            "limit": window,
        },
    )
    return float(value) if value is not None else None


def lag_condition(project: Project, store: Store) -> Condition:
    """Seed 002 §7: ingestion behind by more than `metrics.lag_alert_hours` (or an inbox file
    it cannot read)."""
    from skillstage.metrics.ingest import lag

    hours = project.config.metrics.lag_alert_hours
    report = lag(store, project.metrics_inbox, alert_hours=hours)
    behind = dt.timedelta(seconds=round(report.lag_seconds))
    unreadable = f"; {len(report.unreadable)} inbox file(s) cannot be read" * bool(
        report.unreadable
    )
    return Condition(
        "metrics_lag",
        None,
        "metrics_lag",
        "critical" if report.alert else None,
        f"metrics ingestion is {behind} behind (alert over {hours:g} h){unreadable}"
        if report.alert
        else "metrics ingestion is up to date",
        {"lag_seconds": round(report.lag_seconds, 3), "unreadable": len(report.unreadable)},
    )


def announce(
    project: Project,
    store: Store,
    conditions: Iterable[Condition],
    *,
    at: dt.datetime,
    judged: Sequence[str] | None = None,
) -> list[Announcement]:
    """Open, raise or close the episode of each condition; queue the notifications. Episodes of
    keys in `judged` that no condition reported bad are closed (recovered)."""
    from skillstage.integrations.notify import notification_items

    bad = {c.key: c for c in conditions if c.severity is not None}
    seen = set(judged or []) | {c.key for c in conditions}
    done: list[Announcement] = []
    with store.atomic() as tx:
        for condition in bad.values():
            assert condition.severity is not None
            episode, news = store_controls.open_episode(
                tx,
                condition.key,
                name=condition.name,
                kind=condition.kind,
                severity=condition.severity,
                message=condition.message,
                details=condition.details,
                at=at,
            )
            if not news:
                continue
            change = "opened" if episode.opened_at == at else "rose"
            ids = [
                enqueue(tx, "notify", item)
                for item in notification_items(
                    project.config.notifications,
                    "alert",
                    title=f"{condition.severity.upper()}: {condition.message}",
                    body=condition.message,
                    skill=condition.name or "",
                    severity=condition.severity,
                )
            ]
            done.append(
                Announcement(
                    condition.key,
                    condition.name,
                    condition.kind,
                    condition.severity,
                    change,
                    condition.message,
                    tuple(ids),
                )
            )
        for episode in store_controls.episodes(tx):
            if episode.key in bad or episode.key not in seen:
                continue
            if not store_controls.close_episode(tx, episode.id, at):
                continue
            message = next(
                (c.message for c in conditions if c.key == episode.key), "the condition is gone"
            )
            ids = [
                enqueue(tx, "notify", item)
                for item in notification_items(
                    project.config.notifications,
                    "recovered",
                    title=f"Recovered: {episode.message}",
                    body=f"Recovered since {episode.opened_at:%Y-%m-%d %H:%M} UTC: {message}",
                    skill=episode.name or "",
                    severity=episode.severity,  # type: ignore[arg-type]
                )
            ]
            done.append(
                Announcement(
                    episode.key,
                    episode.name,
                    episode.kind,
                    episode.severity,
                    "recovered",
                    message,
                    tuple(ids),
                )
            )
    return done
