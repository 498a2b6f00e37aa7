"""Seed 000's key metrics (`skillstage stats`): each with its target, its alert threshold and a
status — ok (target met), warn (target missed) or alert (past the alert threshold).

| Metric                   | Target | Alert Threshold |
|--------------------------|--------|-----------------|
| Staged Skills Count      | < 10   | > 20            |
| Average Time in Staging  | < 24h  | > 36h           |
| SLA Breach Count         | 0      | > 2             |
| Promotion Success Rate   | > 95%  | < 90%           |
| Auto-Deploy Success Rate | > 90%  | < 85%           |

A metric with nothing to measure (no skill waiting, no promotion or deployment in the window) is
"n/a", never a division by zero and never a reassuring 100 %.

The promotion success rate is of the promotions that passed their gates (or were forced past
them): how many of those moves succeeded. A refusal (a gate said no: the skill is not ready) is
counted apart, not as a failure; a failure is a move that did not happen (stopped by a full disk,
a permission, a crash or Ctrl-C, and undone).
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from skillstage.config import Project
from skillstage.store import Store
from skillstage.store import stats as queries
from skillstage.store.outbox import DELIVERED, FAILED

WINDOW_DAYS = 30  # seed 000: "Promotion Success Rate (Last 30 Days)"

Status = Literal["ok", "warn", "alert", "n/a"]
Comparison = Literal["<", ">", "=="]

_COMPARE: dict[Comparison, Callable[[float, float], bool]] = {
    "<": operator.lt,
    ">": operator.gt,
    "==": operator.eq,
}


@dataclass(frozen=True)
class Bound:
    """One side of an objective: `value <op> limit`."""

    op: Comparison
    limit: float
    unit: str = ""

    def holds(self, value: float) -> bool:
        return _COMPARE[self.op](value, self.limit)

    def __str__(self) -> str:
        number = f"{self.limit:g}{self.unit}"
        return number if self.op == "==" else f"{self.op} {number}"


@dataclass(frozen=True)
class Objective:
    """A key metric's target (met: ok) and alert threshold (crossed: alert)."""

    key: str
    label: str
    unit: str
    target: Bound
    alert: Bound

    def status(self, value: float | None) -> Status:
        if value is None:
            return "n/a"
        if self.alert.holds(value):
            return "alert"
        return "ok" if self.target.holds(value) else "warn"


# Seed 000, "Monitoring" → "Key Metrics", as data.
STAGED_SKILLS_COUNT = Objective(
    "staged_skills_count", "Staged Skills Count", "", Bound("<", 10), Bound(">", 20)
)
AVERAGE_TIME_IN_STAGING = Objective(
    "average_time_in_staging",
    "Average Time in Staging",
    "h",
    Bound("<", 24, "h"),
    Bound(">", 36, "h"),
)
SLA_BREACH_COUNT = Objective(
    "sla_breach_count", "SLA Breach Count", "", Bound("==", 0), Bound(">", 2)
)
PROMOTION_SUCCESS_RATE = Objective(
    "promotion_success_rate",
    "Promotion Success Rate",
    "%",
    Bound(">", 95, "%"),
    Bound("<", 90, "%"),
)
AUTO_DEPLOY_SUCCESS_RATE = Objective(
    "auto_deploy_success_rate",
    "Auto-Deploy Success Rate",
    "%",
    Bound(">", 90, "%"),
    Bound("<", 85, "%"),
)
OBJECTIVES = (
    STAGED_SKILLS_COUNT,
    AVERAGE_TIME_IN_STAGING,
    SLA_BREACH_COUNT,
    PROMOTION_SUCCESS_RATE,
    AUTO_DEPLOY_SUCCESS_RATE,
)


@dataclass(frozen=True)
class Metric:
    """One key metric now: its value (None: nothing to measure), status and the numbers behind
    it."""

    objective: Objective
    value: float | None
    detail: str
    numbers: dict[str, Any] = field(default_factory=dict)

    @property
    def status(self) -> Status:
        return self.objective.status(self.value)

    @property
    def display(self) -> str:
        if self.value is None:
            return "n/a"
        unit = self.objective.unit
        if unit == "%":
            return f"{self.value:.2f}%"
        if unit == "h":
            return f"{self.value:.1f}h"
        return f"{self.value:g}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "key": self.objective.key,
            "metric": self.objective.label,
            "value": self.value,
            "display": self.display,
            "target": str(self.objective.target),
            "alert_threshold": str(self.objective.alert),
            "status": self.status,
            "detail": self.detail,
            **self.numbers,
        }


@dataclass(frozen=True)
class KeyMetrics:
    """Seed 000's key metrics at one instant."""

    at: dt.datetime
    staging_stages: list[str]
    window_days: int
    metrics: list[Metric]

    @property
    def alerts(self) -> list[Metric]:
        return [m for m in self.metrics if m.status == "alert"]

    def metric(self, key: str) -> Metric:
        return next(m for m in self.metrics if m.objective.key == key)

    def to_dict(self) -> dict[str, Any]:
        return {
            "at": self.at.isoformat(),
            "staging_stages": self.staging_stages,
            "window_days": self.window_days,
            "metrics": [metric.to_dict() for metric in self.metrics],
        }


def staging_stages(project: Project) -> list[str]:
    """The stages seed 000 calls "staging": those with an SLA; without any, the stage before the
    last (a version waits there before production)."""
    stages = project.config.stages
    with_sla = [name for name, config in stages.items() if config.sla_hours is not None]
    if with_sla:
        return with_sla
    names = list(stages)
    return [names[-2]] if len(names) > 1 else names


def sla_exempt(frontmatter: dict[str, Any], today: dt.date) -> bool:
    """Seed 000's manual override: `sla_override: true` with an `sla_override_reason`, through
    `sla_override_expires` (inclusive) when set. No reason, or expired: no exemption (the rule of
    `skillstage sla`)."""
    if frontmatter.get("sla_override") is not True:
        return False
    if not str(frontmatter.get("sla_override_reason") or "").strip():
        return False
    expires = frontmatter.get("sla_override_expires")
    if expires is None:
        return True
    try:
        return today <= dt.date.fromisoformat(str(expires)[:10])
    except ValueError:
        return False  # an unreadable date grants nothing (validation reports it)


def _hours(delta: dt.timedelta) -> float:
    return delta.total_seconds() / 3600


def _rate(good: int, total: int) -> float | None:
    return round(100.0 * good / total, 2) if total else None


def key_metrics(project: Project, store: Store, *, now: dt.datetime | None = None) -> KeyMetrics:
    """Seed 000's key metrics from the store, at `now` (default: the current time)."""
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(days=WINDOW_DAYS)
    stages = staging_stages(project)
    waiting = queries.residents(store, stages)
    metrics = [
        _staged_count(waiting, stages),
        _average_time(waiting, queries.finished_stays(store, stages, since=since), now),
        _sla_breaches(project, stages, waiting, now),
        _promotion_success(promotion_outcomes(store, since=since)),
        _auto_deploy(queries.outbox_status_counts(store, queries.DEPLOY_KIND, since=since)),
    ]
    return KeyMetrics(now, stages, WINDOW_DAYS, metrics)


def collect(project: Project, *, now: dt.datetime | None = None) -> KeyMetrics:
    """`key_metrics` on the project's store (what `skillstage stats` shows)."""
    with Store.open(project.database_url) as store:
        return key_metrics(project, store, now=now)


def _staged_count(waiting: Sequence[queries.Resident], stages: Sequence[str]) -> Metric:
    return Metric(
        STAGED_SKILLS_COUNT,
        len(waiting),
        f"{len(waiting)} skill(s) waiting in {', '.join(stages) or 'no stage'}",
        {"skills": [r.name for r in waiting]},
    )


def _average_time(
    waiting: Sequence[queries.Resident], finished: Sequence[queries.Stay], now: dt.datetime
) -> Metric:
    # The metric is the mean age of the skills waiting now (what the "Skills in Staging"
    # dashboard shows and what an alert is about); finished stays are context.
    ages = [_hours(now - r.entered_at) for r in waiting]
    stays = [_hours(s.left_at - s.entered_at) for s in finished]
    value = round(sum(ages) / len(ages), 1) if ages else None
    finished_mean = round(sum(stays) / len(stays), 1) if stays else None
    detail = (
        f"mean age of {len(ages)} waiting skill(s)" if ages else "no skill is waiting in staging"
    )
    if finished_mean is not None:
        detail += f"; {len(stays)} stay(s) ended in {WINDOW_DAYS} days, mean {finished_mean:.1f}h"
    return Metric(
        AVERAGE_TIME_IN_STAGING,
        value,
        detail,
        {
            "oldest_hours": round(max(ages), 1) if ages else None,
            "finished_stays": len(stays),
            "finished_mean_hours": finished_mean,
        },
    )


def _sla_breaches(
    project: Project, stages: Sequence[str], waiting: Sequence[queries.Resident], now: dt.datetime
) -> Metric:
    limits = {s: project.config.stages[s].sla_hours for s in stages}
    if all(hours is None for hours in limits.values()):
        return Metric(
            SLA_BREACH_COUNT,
            None,
            f"no SLA configured for {', '.join(stages) or 'any stage'} (stages.<name>.sla_hours)",
        )
    breaching: list[dict[str, Any]] = []
    exempt: list[str] = []
    for resident in waiting:
        hours = limits.get(resident.stage)
        if hours is None:
            continue
        over = _hours(now - resident.entered_at) - hours
        if over <= 0:
            continue
        if sla_exempt(resident.frontmatter, now.astimezone(dt.UTC).date()):
            exempt.append(resident.name)
        else:
            breaching.append({"name": resident.name, "breach_hours": round(over, 1)})
    detail = f"{len(breaching)} skill(s) past their staging SLA"
    if exempt:
        detail += f"; {len(exempt)} more exempt by sla_override ({', '.join(exempt)})"
    return Metric(
        SLA_BREACH_COUNT, len(breaching), detail, {"breaches": breaching, "exempt": exempt}
    )


@dataclass(frozen=True)
class PromotionOutcomes:
    """Promotion attempts in a window, by outcome."""

    successful: int
    refused: int  # a gate said no: recorded as a refused `promote` event with its gates
    failed: int  # the move failed and was undone; or a failed attempt that names no gate

    @property
    def moves(self) -> int:
        """The attempts that passed their gates (or were forced past them): what the success
        rate is of."""
        return self.successful + self.failed

    @property
    def total(self) -> int:
        return self.moves + self.refused


def promotion_outcomes(store: Store, *, since: dt.datetime) -> PromotionOutcomes:
    """Promotions attempted after `since`: succeeded, refused by a gate, failed moving.

    Every attempt that reached its gates is a `promote` event (seed 000's `skill_promotions`);
    a refused one records its gates. A move that stopped half-way and was undone records no
    event: its journal entry was closed as rolled back."""
    attempts = queries.promotion_attempts(store, since=since)
    with store.reading() as tx:
        d = tx.dialect
        refused = tx.scalar(
            "SELECT COUNT(*) FROM event WHERE kind = 'promote' AND at > :since"
            f" AND NOT success AND {d.json_text('details', 'gates')} IS NOT NULL",
            {"since": d.time(since)},
        )
        undone = tx.scalar(
            "SELECT COUNT(*) FROM journal WHERE operation = 'promote' AND state = 'closed'"
            f" AND closed_at > :since AND {d.json_text('details', 'outcome')} = 'rolled_back'",
            {"since": d.time(since)},
        )
    refused = int(refused or 0)
    failed = attempts.total - attempts.successful - refused + int(undone or 0)
    return PromotionOutcomes(attempts.successful, refused, failed)


def _promotion_success(outcomes: PromotionOutcomes) -> Metric:
    successful, failed, refused = outcomes.successful, outcomes.failed, outcomes.refused
    if outcomes.moves:
        detail = (
            f"{successful} of {outcomes.moves} promotion(s) that passed their gates in "
            f"{WINDOW_DAYS} days moved, {failed} failed moving"
        )
    elif refused:
        detail = f"no promotion passed its gates in {WINDOW_DAYS} days"
    else:
        detail = f"no promotion attempted in {WINDOW_DAYS} days"
    if refused:
        counting = _rate(successful, outcomes.total)
        detail += (
            f"; {refused} more refused by their gates, not counted in the rate "
            f"({counting:.2f}% of all {outcomes.total} attempt(s) counting refusals)"
        )
    return Metric(
        PROMOTION_SUCCESS_RATE,
        _rate(successful, outcomes.moves),
        detail,
        {
            "total_promotions": outcomes.total,
            "successful": successful,
            "refused": refused,
            "failed": failed,
            "rate_of": "promotions that passed their gates (refusals by a gate are not counted)",
            "rate_counting_refusals": _rate(successful, outcomes.total),
        },
    )


def _auto_deploy(counts: dict[str, int]) -> Metric:
    # Only settled deployments count: an item still pending may yet succeed on its next retry.
    delivered, failed = counts.get(DELIVERED, 0), counts.get(FAILED, 0)
    unsettled = sum(n for status, n in counts.items() if status not in (DELIVERED, FAILED))
    settled = delivered + failed
    detail = (
        f"{delivered} of {settled} deployment(s) in {WINDOW_DAYS} days delivered, {failed} failed"
        if settled
        else f"no settled deployment in {WINDOW_DAYS} days"
    )
    if unsettled:
        detail += f"; {unsettled} still being retried"
    return Metric(
        AUTO_DEPLOY_SUCCESS_RATE,
        _rate(delivered, settled),
        detail,
        {"delivered": delivered, "failed": failed, "unsettled": unsettled},
    )
