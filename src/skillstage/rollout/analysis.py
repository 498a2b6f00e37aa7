"""Whether a rollout's step succeeded, failed or must wait (Argo Rollouts' analysis, Kayenta's
verdicts), from the executions recorded per arm.

- *failed*: a critical failure on the candidate (Kayenta's critical metric: it short-circuits,
  whatever the sample size), or, with enough executions, a stage threshold missed or the candidate
  significantly worse than the stable version (`compare`'s tests and margins);
- *successful*: the step lasted its minimum duration, each arm has its minimum executions, every
  threshold is met and nothing is worse;
- *inconclusive*: too little data, said with what is missing ("42/100 candidate executions");
- *no-data*: the candidate has no execution in this step at all. Its own outcome, never a pass.

Only *successful* ever advances a rollout: waiting never drifts into a promotion.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from skillstage.config import Project, Thresholds
from skillstage.metrics.compare import at_least, below, compare_samples, more_than
from skillstage.metrics.summary import MetricsSummary, as_sample, summarise
from skillstage.store import Transaction
from skillstage.store import metrics as store_metrics
from skillstage.store.rollouts import RolloutRecord

SUCCESSFUL = "successful"
FAILED = "failed"
INCONCLUSIVE = "inconclusive"
NO_DATA = "no-data"


@dataclass(frozen=True)
class Verdict:
    """The analysis of a rollout's current step."""

    outcome: str  # successful, failed, inconclusive, no-data
    reasons: list[str]  # why it failed, or what it waits for
    candidate: MetricsSummary
    stable: MetricsSummary
    step_elapsed_s: float
    trigger: str | None = None  # seed 002's reason code of a failure
    trigger_metric: str | None = None  # "fidelity=0.83"
    comparison: dict[str, Any] | None = None
    analysed_at: dt.datetime | None = None
    thresholds: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "reasons": self.reasons,
            "trigger": self.trigger,
            "trigger_metric": self.trigger_metric,
            "step_elapsed_s": round(self.step_elapsed_s, 3),
            "candidate": self.candidate.to_dict(),
            "stable": self.stable.to_dict(),
            "comparison": self.comparison,
            "analysed_at": self.analysed_at.isoformat() if self.analysed_at else None,
            "thresholds": self.thresholds,
        }


def thresholds_for(project: Project, from_stage: str, to_stage: str) -> Thresholds:
    """The thresholds of the move a completed rollout makes (the stage's metric gate)."""
    for transition in project.config.transitions:
        if (transition.from_stage, transition.to_stage) == (from_stage, to_stage):
            return transition.thresholds
    return Thresholds()


def _duration(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def analyse(project: Project, tx: Transaction, rollout: RolloutRecord, now: dt.datetime) -> Verdict:
    """The verdict of `rollout`'s current step at `now`."""
    thresholds = thresholds_for(project, rollout.candidate_stage, rollout.stage)
    # The candidate is judged on this step's executions (each step re-checks it at its new
    # share) in this rollout's stage: the same content may also serve in the stage it waits in,
    # and the loader tags each execution with its stage (a record that names no stage counts).
    # The stable version is judged on all of its executions since the rollout began, as at 100%
    # it serves nothing.
    candidate_rows = store_metrics.execution_rows(
        tx,
        rollout.skill_id,
        digest=rollout.candidate_digest,
        since=rollout.step_started_at,
        in_use=True,
        unless_tagged_otherwise={"stage": rollout.stage},
    )
    stable_rows = store_metrics.execution_rows(
        tx, rollout.skill_id, digest=rollout.stable_digest, since=rollout.started_at, in_use=True
    )
    candidate, stable = summarise(candidate_rows), summarise(stable_rows)
    elapsed = (now - rollout.step_started_at).total_seconds()
    needed = rollout.step_min_executions
    shown = {
        "min_pattern_fidelity": thresholds.min_pattern_fidelity,
        "min_outcome_quality": thresholds.min_outcome_quality,
        "max_false_positive_rate": thresholds.max_false_positive_rate,
        "max_critical_false_negatives": thresholds.max_critical_false_negatives,
        "step_min_executions": needed,
        "step_min_duration_s": rollout.step_min_duration_s,
    }

    def verdict(outcome: str, reasons: list[str], **extra: Any) -> Verdict:
        return Verdict(
            outcome, reasons, candidate, stable, elapsed, analysed_at=now, thresholds=shown, **extra
        )

    # Kayenta: a critical metric decides at once, however few executions there are.
    if candidate.critical_failures > thresholds.max_critical_false_negatives:
        return verdict(
            FAILED,
            [
                f"{candidate.critical_failures} critical failure(s) on the candidate "
                f"(at most {thresholds.max_critical_false_negatives} allowed)"
            ],
            trigger="critical_false_negative",
            trigger_metric=f"critical_failures={candidate.critical_failures}",
        )
    if candidate.count == 0:
        return verdict(NO_DATA, [f"0/{needed} candidate executions in this step"])
    failures = _threshold_failures(candidate, thresholds) if candidate.count >= needed else []
    if failures:
        reasons = [reason for reason, _, _ in failures]
        return verdict(FAILED, reasons, trigger=failures[0][1], trigger_metric=failures[0][2])
    waiting = []
    if elapsed < rollout.step_min_duration_s:
        waiting.append(
            f"the step has lasted {_duration(elapsed)} of {_duration(rollout.step_min_duration_s)}"
        )
    if candidate.count < needed:
        waiting.append(f"{candidate.count}/{needed} candidate executions")
    if stable.count < needed:
        waiting.append(f"{stable.count}/{needed} stable executions")
    comparison = None
    if candidate.count >= needed and stable.count >= needed:
        compared = compare_samples(
            as_sample(stable_rows), as_sample(candidate_rows), **thresholds.comparing()
        )
        comparison = compared.to_dict()
        if compared.regressions:
            worst = compared.regressions[0]
            return verdict(
                FAILED,
                [
                    f"the candidate is significantly worse than the stable version on "
                    f"{m.metric} ({_figure(m.b)} against {_figure(m.a)}, p={m.p_value:.3g})"
                    for m in compared.regressions
                ],
                trigger=f"{worst.metric}_regression",
                trigger_metric=f"{worst.metric}={_figure(worst.b)}",
                comparison=comparison,
            )
        if compared.insufficient:
            waiting += [
                f"{m.metric}: {m.n_b} candidate value(s), {m.n_a} stable"
                for m in compared.metrics
                if m.insufficient_data and (m.n_a or m.n_b)
            ]
    if waiting:
        return verdict(INCONCLUSIVE, waiting, comparison=comparison)
    return verdict(
        SUCCESSFUL,
        [f"{candidate.count} candidate executions meet every threshold; none worse than stable"],
        comparison=comparison,
    )


def _figure(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def _threshold_failures(
    summary: MetricsSummary, thresholds: Thresholds
) -> list[tuple[str, str, str]]:
    """(why, reason code, trigger metric) for each stage threshold the candidate misses."""
    found = []
    fidelity, quality = summary.pattern_fidelity, summary.outcome_quality
    if fidelity is not None and not at_least(fidelity, thresholds.min_pattern_fidelity):
        percent = round(thresholds.min_pattern_fidelity * 100)
        found.append(
            (
                f"pattern fidelity {fidelity:.3f} is below {thresholds.min_pattern_fidelity:g}",
                f"pattern_fidelity_below_{percent}",
                f"fidelity={fidelity:.2f}",
            )
        )
    if quality is not None and not at_least(quality, thresholds.min_outcome_quality):
        percent = round(thresholds.min_outcome_quality * 100)
        found.append(
            (
                f"outcome quality {quality:.3f} is below {thresholds.min_outcome_quality:g}",
                f"outcome_quality_below_{percent}",
                f"quality={quality:.2f}",
            )
        )
    rate = summary.false_positive_rate
    if rate is not None and not below(rate, thresholds.max_false_positive_rate):
        found.append(
            (
                f"false positives per execution {rate:.3f} reach "
                f"{thresholds.max_false_positive_rate:g}",
                "false_positive_rate_exceeded",
                f"false_positive_rate={rate:.3f}",
            )
        )
    limit = thresholds.max_mean_execution_time_ms
    mean = summary.execution_time_ms
    if limit is not None and mean is not None and more_than(mean, limit):
        found.append(
            (
                f"mean execution time {mean:.1f} ms is over {limit:g} ms",
                "execution_time_exceeded",
                f"execution_time_ms={mean:.1f}",
            )
        )
    return found
