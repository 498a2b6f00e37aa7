"""Seed 002 §3.1's automatic demotion (staged → prototype): which versions waiting in a stage
have broken a rule, and moving them back through the promoter (atomic, audited)."""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass, field
from typing import Any

from skillstage.config import Project
from skillstage.lifecycle.readiness import INSUFFICIENT, ingest_on_demand, regression
from skillstage.metrics.compare import at_least
from skillstage.metrics.summary import summarise
from skillstage.store import Store
from skillstage.store import metrics as store_metrics


@dataclass
class Demotion:
    """A version that broke a demotion rule, and whether it was moved back."""

    name: str
    version: str
    digest: str
    stage: str
    to_stage: str
    rules: list[str]  # the rules broken, each with its numbers
    applied: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class DemoteCheck:
    checked: int = 0
    demotions: list[Demotion] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"checked": self.checked, "demotions": [d.to_dict() for d in self.demotions]}


def _best_window(values: list[float | None], size: int) -> float | None:
    """The highest mean fidelity over any `size` consecutive executions (all of them if fewer)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    if size < 1 or len(present) <= size:
        return math.fsum(present) / len(present)
    # A running sum finds the best window; its mean is then summed exactly (the running sum
    # drifts in the last bits: a window of mean 0.90 came out as 0.8999999999999991).
    total = best = sum(present[:size])
    start = 0
    for index in range(size, len(present)):
        total += present[index] - present[index - size]
        if total > best:
            best, start = total, index - size + 1
    return math.fsum(present[start : start + size]) / size


def check(project: Project, store: Store, *, now: dt.datetime | None = None) -> DemoteCheck:
    """Every version in a stage that a later transition leaves from (other than the first
    stage), against seed 002 §3.1's rules with that transition's thresholds."""
    now = now or dt.datetime.now(dt.UTC)
    stages = list(project.config.stages)
    ingest_on_demand(project, store)
    result = DemoteCheck()
    for transition in project.config.transitions:
        stage = transition.from_stage
        index = stages.index(stage)
        if index == 0:
            continue
        thresholds = transition.thresholds
        for live in store.current_assignments(stage=stage):
            result.checked += 1
            with store.reading() as tx:
                rows = store_metrics.execution_rows(
                    tx, live.skill_id, digest=live.digest, since=live.entered_at, in_use=True
                )
                summary = summarise(rows)
                rules = []
                days = (now - live.entered_at).total_seconds() / 86400
                within = thresholds.min_executions_within_days
                if days >= within and summary.count < thresholds.min_executions:
                    rules.append(
                        f"unable to reach {thresholds.min_executions} executions within "
                        f"{within:g} days "
                        f"({summary.count}/{thresholds.min_executions} after {days:.1f} days)"
                    )
                elif days >= within:
                    # Reached by now, but was it within the days? (Whether a version is demoted
                    # must not depend on the day the check runs.)
                    deadline = live.entered_at + dt.timedelta(days=within)
                    in_time = store_metrics.execution_rows(
                        tx,
                        live.skill_id,
                        digest=live.digest,
                        since=live.entered_at,
                        # `until` is exclusive; within the days includes their last instant
                        # (times are kept to the microsecond).
                        until=deadline + dt.timedelta(microseconds=1),
                        in_use=True,
                    ).count
                    if in_time < thresholds.min_executions:
                        rules.append(
                            f"unable to reach {thresholds.min_executions} executions within "
                            f"{within:g} days ({in_time}/{thresholds.min_executions} by "
                            f"{deadline:%Y-%m-%d %H:%M} UTC, {summary.count} after "
                            f"{days:.1f} days)"
                        )
                judged = summary.count >= thresholds.min_executions or (
                    days >= thresholds.min_executions_within_days
                    and summary.count >= thresholds.min_comparison_sample
                )
                best = _best_window(rows.columns["pattern_fidelity"], thresholds.min_executions)
                if judged and (best is None or not at_least(best, thresholds.min_pattern_fidelity)):
                    rules.append(
                        f"pattern fidelity never reached {thresholds.min_pattern_fidelity:g} "
                        f"(best {'none' if best is None else f'{best:.3f}'} over "
                        f"{summary.count} executions)"
                    )
                if thresholds.forbid_regression:
                    verdict = regression(
                        project,
                        tx,
                        live.skill_id,
                        live.version,
                        live.digest,
                        thresholds,
                        entered=live.entered_at,
                        known=rows,
                    )
                    if not verdict.passed and not (verdict.missing or "").startswith(INSUFFICIENT):
                        rules.append(f"regression against the baseline: {verdict.missing}")
            if rules:
                result.demotions.append(
                    Demotion(live.name, live.version, live.digest, stage, stages[index - 1], rules)
                )
    return result


def apply(project: Project, store: Store, found: DemoteCheck, *, actor: str) -> DemoteCheck:
    """Move each listed version back to the stage before, through the promoter."""
    from skillstage.errors import SkillstageError
    from skillstage.lifecycle.promote import rollback

    for demotion in found.demotions:
        try:
            rollback(
                project,
                store,
                demotion.name,
                reason="demotion: " + "; ".join(demotion.rules),
                actor=actor,
                stage=demotion.stage,
                trigger_metric=demotion.rules[0],
                demote=True,
            )
            demotion.applied = True
        except SkillstageError as exc:
            demotion.error = exc.message + (f" ({exc.hint})" if exc.hint else "")
    return found
