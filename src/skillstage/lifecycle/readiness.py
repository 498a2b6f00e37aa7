"""Seed 002's promotion criteria as gates: `metrics` (§2's automated checks) and `approval`
(§4's human sign-off), and the comparisons they rest on.

`metrics` reads one of two kinds of evidence, per transition (`thresholds.evidence`):
- `evals` (prototype → staged): the latest benchmark run of this exact content
  (`skillstage eval`): fidelity, outcome quality, false positives, critical false negatives,
  every case executed;
- `executions` (staged → production): the live executions of this digest: a minimum sample,
  sustained fidelity and quality, no critical failure in the last N, mean time under the skill's
  threshold, and no regression against the prototype baseline.

Both ingest the metrics inbox first (seed 002: "on-demand before promotion decisions").
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from skillstage.config import Project, Thresholds, TransitionConfig
from skillstage.errors import UsageError
from skillstage.lifecycle.gates import GateContext, GateResult
from skillstage.metrics.compare import Comparison, at_least, below, compare_samples
from skillstage.metrics.summary import MetricsSummary, as_sample, summarise
from skillstage.skill.model import SkillVersion
from skillstage.store import Store, Transaction
from skillstage.store import metrics as store_metrics

# Seed 002 §4.2's human_review items: every transition's, then production's own.
REVIEW_ITEMS = {
    "wsp_50_approval": "No duplication, existing code checked",
    "test_coverage": "Edge cases covered",
    "instruction_clarity": "Unambiguous for AI agent",
    "pattern_completeness": "All patterns defined",
    "dependency_validation": "All deps exist and tested",
    "security_review": "No credential leaks",
    "performance_review": "No bottlenecks",
}
PRODUCTION_REVIEW_ITEMS = {
    "production_readiness": "Skill behavior stable and predictable",
    "integration_approval": "Dependencies won't break production",
    "capacity_planning": "Resource usage acceptable",
    "monitoring_approval": "Alerting configured correctly",
    "rollback_plan_tested": "Rollback procedure tested",
    "documentation_updated": "Module README updated with skill reference",
}
DECISIONS = ("APPROVED", "REJECTED", "NEEDS_ITERATION")


def review_items(project: Project, to_stage: str) -> dict[str, str]:
    """The checklist a sign-off for a move into `to_stage` must answer YES to."""
    last = list(project.config.stages)[-1]
    return {**REVIEW_ITEMS, **(PRODUCTION_REVIEW_ITEMS if to_stage == last else {})}


@dataclass(frozen=True)
class Criterion:
    """One promotion criterion: what was measured, what is required, and what is missing."""

    name: str
    actual: Any
    required: str
    passed: bool
    missing: str | None = None

    def line(self) -> str:
        mark = "ok" if self.passed else "FAIL"
        shown = _show(self.actual)
        text = f"[{mark}] {self.name}: {shown} (required {self.required})"
        return text + (f" — {self.missing}" if self.missing and not self.passed else "")

    def to_dict(self) -> dict[str, Any]:
        actual = round(self.actual, 6) if isinstance(self.actual, float) else self.actual
        return {
            "name": self.name,
            "actual": actual,
            "required": self.required,
            "passed": self.passed,
            "missing": None if self.passed else self.missing,
        }


def _show(value: Any) -> str:
    if value is None:
        return "no data"
    if isinstance(value, float):
        return f"{value:.3f}"
    return str(value)


def _at_least(name: str, actual: float | None, minimum: float, what: str) -> Criterion:
    passed = actual is not None and at_least(actual, minimum)
    missing = f"no {what} recorded" if actual is None else f"{minimum - actual:.3f} short"
    return Criterion(name, actual, f">= {minimum:g}", passed, missing)


def _below(name: str, actual: float | None, maximum: float, what: str) -> Criterion:
    passed = actual is not None and below(actual, maximum)
    missing = f"no {what} recorded" if actual is None else f"must drop below {maximum:g}"
    return Criterion(name, actual, f"< {maximum:g}", passed, missing)


def _result(gate: str, criteria: list[Criterion], summary: str) -> GateResult:
    failed = [c for c in criteria if not c.passed]
    if failed:
        return GateResult(
            gate,
            "fail",
            f"{len(failed)} of {len(criteria)} criteria not met: "
            + "; ".join(f"{c.name} {_show(c.actual)}" for c in failed),
            [c.line() for c in criteria],
            [c.to_dict() for c in criteria],
        )
    return GateResult(
        gate, "pass", summary, [c.line() for c in criteria], [c.to_dict() for c in criteria]
    )


def ingest_on_demand(project: Project, store: Store) -> None:
    """Seed 002 §5.4: ingest the inbox before a promotion decision reads the store."""
    from skillstage.metrics.ingest import ingest

    metrics = project.config.metrics
    ingest(
        store,
        project.metrics_inbox,
        batch_size=metrics.batch_size,
        max_clock_skew=metrics.max_clock_skew,
    )


# -- evidence: benchmark evals -----------------------------------------------------------------


def eval_criteria(tx: Transaction, skill: SkillVersion, thresholds: Thresholds) -> list[Criterion]:
    """Seed 002 §2.1 over the latest eval run of this content."""
    skill_id, digest = tx.skill_id(skill.name), skill.digest
    run = store_metrics.latest_eval_run(tx, skill_id, digest) if skill_id is not None else None
    if run is None:
        return [
            Criterion(
                "benchmark run",
                None,
                "an eval run of this content",
                False,
                f"no eval run of digest {digest[:12]}: run `skillstage eval {skill.name}`",
            )
        ]
    summary = run.summary
    criteria = []
    if thresholds.require_all_benchmark_cases:
        criteria.append(
            Criterion(
                "benchmark cases executed",
                f"{run.cases_executed}/{run.cases_total}",
                "all",
                run.cases_total > 0 and run.cases_executed == run.cases_total,
                f"{run.cases_total - run.cases_executed} case(s) did not run"
                if run.cases_total
                else "no benchmark cases: add evals/evals.json",
            )
        )
    criteria += [
        _at_least(
            "pattern fidelity",
            summary.get("pattern_fidelity"),
            thresholds.min_pattern_fidelity,
            "pattern fidelity (declare patterns.yaml)",
        ),
        _at_least(
            "outcome quality",
            summary.get("outcome_quality"),
            thresholds.min_outcome_quality,
            "outcome quality",
        ),
        Criterion(
            "critical false negatives",
            int(summary.get("critical_false_negatives", 0)),
            f"<= {thresholds.max_critical_false_negatives}",
            int(summary.get("critical_false_negatives", 0))
            <= thresholds.max_critical_false_negatives,
            "a critical case was missed",
        ),
        _below(
            "false positive rate",
            summary.get("false_positive_rate"),
            thresholds.max_false_positive_rate,
            "false positive rate",
        ),
    ]
    return criteria


# -- evidence: live executions ------------------------------------------------------------------


def _time_threshold(context: GateContext, thresholds: Thresholds) -> float | None:
    """The skill's own limit (`metadata.max_execution_time_ms` in SKILL.md), else the
    transition's `max_mean_execution_time_ms`."""
    metadata = context.skill.frontmatter.metadata or {}
    declared = metadata.get("max_execution_time_ms")
    if declared is not None:
        try:
            return float(declared)
        except ValueError:
            pass
    return thresholds.max_mean_execution_time_ms


def execution_criteria(
    project: Project,
    tx: Transaction,
    context: GateContext,
    thresholds: Thresholds,
) -> list[Criterion]:
    """Seed 002 §2.2 over the executions of this digest."""
    skill = context.skill
    skill_id = tx.skill_id(skill.name)
    # Only the executions since this content entered the stage it leaves: its benchmark runs
    # and earlier trials are the baseline, not evidence of how it behaves here.
    since = stay_start(tx, skill_id, context.from_stage, skill.digest)
    rows = (
        store_metrics.execution_rows(tx, skill_id, digest=skill.digest, since=since, in_use=True)
        if skill_id is not None
        else store_metrics.Rows({n: [] for n in store_metrics.SAMPLE_COLUMNS}, None, None)
    )
    summary = summarise(rows)
    needed = thresholds.min_executions
    criteria = [
        Criterion(
            "executions",
            summary.count,
            f">= {needed}",
            summary.count >= needed,
            f"{summary.count}/{needed} executions",
        ),
        _at_least(
            "pattern fidelity",
            summary.pattern_fidelity,
            thresholds.min_pattern_fidelity,
            "pattern fidelity",
        ),
        _at_least(
            "outcome quality", summary.outcome_quality, thresholds.min_outcome_quality, "quality"
        ),
        # Live records do not say which outcome was expected, so the rate is over every
        # execution; the benchmark's (`eval_criteria`) is over the cases expecting a negative.
        _below(
            "false positives per execution",
            summary.false_positive_rate,
            thresholds.max_false_positive_rate,
            "executions",
        ),
    ]
    window = thresholds.critical_failure_window
    recent = sum(rows.columns["critical"][-window:])
    criteria.append(
        Criterion(
            f"critical failures in the last {window}",
            recent,
            f"<= {thresholds.max_critical_false_negatives}",
            recent <= thresholds.max_critical_false_negatives,
            f"{recent} critical failure(s) among the last {min(window, summary.count)}",
        )
    )
    limit = _time_threshold(context, thresholds)
    if limit is not None:
        criteria.append(
            _below("mean execution time ms", summary.execution_time_ms, limit, "execution times")
        )
    if thresholds.forbid_regression and skill_id is not None:
        criteria.append(
            regression(
                project,
                tx,
                skill_id,
                skill.version,
                skill.digest,
                thresholds,
                entered=since,
                known=rows,
            )
        )
    return criteria


def stay_start(
    tx: Transaction, skill_id: int | None, stage: str, digest: str
) -> dt.datetime | None:
    """When this content entered `stage` (its current stay there), or None if not on record."""
    if skill_id is None:
        return None
    for stay in store_metrics.tenures(tx, skill_id, stage):
        if stay.left_at is None and stay.digest == digest:
            return stay.entered_at
    return None


INSUFFICIENT = "insufficient data to compare"


def baseline_side(
    tx: Transaction, skill_id: int, stage: str, digest: str, entered: dt.datetime | None
) -> Side | None:
    """The baseline of a version in a later stage: this content's own last stay in `stage` (the
    first stage) when it had one, else the stay there that began last before the version entered
    the stage it is in now (`entered`), else the latest stay there. A version put into the first
    stage later never becomes an earlier version's baseline."""
    stays = store_metrics.tenures(tx, skill_id, stage)  # newest first
    own = [s for s in stays if s.digest == digest and s.left_at is not None]
    before = [s for s in stays if entered is not None and s.entered_at <= entered]
    chosen = next(iter(own or before or stays), None)
    if chosen is None:
        return None
    return Side(
        f"{stage} ({chosen.version})",
        chosen.version,
        chosen.digest,
        chosen.entered_at,
        chosen.left_at,
        benchmark=True,
    )


def regression(
    project: Project,
    tx: Transaction,
    skill_id: int,
    version: str,
    digest: str,
    thresholds: Thresholds,
    *,
    entered: dt.datetime | None,
    known: store_metrics.Rows | None = None,
) -> Criterion:
    """Seed 002 §2.2 "no worse than prototype baseline": the executions of the baseline
    (`baseline_side`) during its stay in the first stage against this digest's since it entered
    its stage (`entered`; `known`: those rows, when the caller has read them)."""
    first = next(iter(project.config.stages))
    baseline = baseline_side(tx, skill_id, first, digest, entered)
    if baseline is None:
        return Criterion(
            f"no regression against the {first} baseline",
            "no baseline",
            "no metric significantly worse",
            True,
            None,
        )
    candidate = Side(f"{version} ({digest[:12]})", version, digest, entered, None)
    if baseline.digest == digest and baseline.until is not None and entered is None:
        # (a stay in the current stage not on record: its executions after the baseline's)
        candidate = Side(candidate.label, version, digest, baseline.until, None)
    candidate_rows = (
        known
        if known is not None and candidate.since == entered
        else sample_rows(tx, skill_id, candidate)
    )
    comparison = compare_samples(
        as_sample(sample_rows(tx, skill_id, baseline)),
        as_sample(candidate_rows),
        **thresholds.comparing(),
    )
    worse = comparison.regressions
    if comparison.insufficient:
        minimum = thresholds.min_comparison_sample
        if comparison.count_a < minimum:
            why = (
                f": the {first} baseline is {baseline.label}'s executions there; give the "
                f"benchmark >= {minimum} cases, or run `skillstage eval` more than once before "
                f"it leaves {first} (each run records every case)"
            )
        elif comparison.count_b >= minimum:
            why = ": " + ", ".join(
                f"{m.metric} has {m.n_b} value(s) among the candidate's executions"
                for m in comparison.unmeasured
            )
        else:
            why = ""
        return Criterion(
            f"no regression against the {first} baseline",
            f"{comparison.count_a} baseline / {comparison.count_b} candidate executions",
            f">= {minimum} on each side, of every metric the baseline has",
            False,
            INSUFFICIENT + why,
        )
    return Criterion(
        f"no regression against the {first} baseline",
        ", ".join(f"{m.metric} p={m.p_value:.3g}" for m in worse) or "none worse",
        f"no metric worse at p < {thresholds.regression_p_value:g} and beyond its margin",
        not worse,
        "significantly worse: " + ", ".join(m.metric for m in worse),
    )


# -- the gates --------------------------------------------------------------------------------


def _transition(context: GateContext) -> TransitionConfig:
    for transition in context.project.config.transitions:
        if (transition.from_stage, transition.to_stage) == (context.from_stage, context.to_stage):
            return transition
    raise UsageError(f"no transition from {context.from_stage} to {context.to_stage}")


class MetricsGate:
    """Seed 002 §2's automated checks, from the transition's thresholds."""

    name = "metrics"

    def check(self, context: GateContext) -> GateResult:
        thresholds = _transition(context).thresholds
        ingest_on_demand(context.project, context.store)
        with context.store.reading() as tx:
            if thresholds.evidence == "evals":
                criteria = eval_criteria(tx, context.skill, thresholds)
                what = "benchmark evals"
            else:
                criteria = execution_criteria(context.project, tx, context, thresholds)
                what = "live executions"
        return _result(self.name, criteria, f"{what}: all {len(criteria)} criteria met")


class ApprovalGate:
    """Seed 002 §4: an APPROVED sign-off of this digest for this transition, every checklist item
    YES, by an approver who may approve it."""

    name = "approval"

    def check(self, context: GateContext) -> GateResult:
        skill = context.skill
        with context.store.reading() as tx:
            skill_id = tx.skill_id(skill.name)
            signoff = (
                store_metrics.latest_signoff(
                    tx, skill_id, skill.digest, context.from_stage, context.to_stage
                )
                if skill_id is not None
                else None
            )
        how = (
            f"skillstage approve {skill.name} --to {context.to_stage} --ticket APPROVAL_… "
            "--decision approved --checklist FILE"
        )
        if signoff is None:
            nobody = not context.project.config.approvals.approvers
            return GateResult(
                self.name,
                "fail",
                f"no sign-off of {skill.name} {skill.version} ({skill.digest[:12]}) for "
                f"{context.from_stage} → {context.to_stage}",
                [
                    "no approvers are configured: add [approvals] approvers = [...] to "
                    "skillstage.toml first"
                ]
                * nobody
                + [
                    f"`skillstage signoff template {skill.name} --to {context.to_stage}`,"
                    f" then `{how}`"
                ],
            )
        if signoff.decision != "APPROVED":
            return GateResult(
                self.name,
                "fail",
                f"{signoff.decision} by {signoff.approver} ({signoff.ticket}, "
                f"{signoff.at:%Y-%m-%d %H:%M})" + (f": {signoff.notes}" if signoff.notes else ""),
                ["a later approval of this content lifts it"],
            )
        problem = signoff_problem(context.project, skill.frontmatter.author, signoff.approver)
        if problem:
            return GateResult(self.name, "fail", problem)
        unanswered = [
            item
            for item in review_items(context.project, context.to_stage)
            if str(signoff.checklist.get(item, "")).upper() != "YES"
        ]
        if unanswered:
            return GateResult(
                self.name, "fail", f"checklist items not YES: {', '.join(unanswered)}"
            )
        if context.approval_ticket and context.approval_ticket != signoff.ticket:
            return GateResult(
                self.name,
                "fail",
                f"ticket {context.approval_ticket} is not the recorded sign-off ({signoff.ticket})",
            )
        if context.approver and context.approver != signoff.approver:
            return GateResult(
                self.name,
                "fail",
                f"{context.approver} did not sign this off ({signoff.approver} did)",
            )
        return GateResult(
            self.name,
            "pass",
            f"approved by {signoff.approver} ({signoff.ticket}, {signoff.at:%Y-%m-%d %H:%M})",
        )


@dataclass
class AskedApproval:
    """The `approval` gate on a transition that does not require it, run because the promotion
    named an approval (`options`: "--approver", "--approval-ticket" or both): what goes on
    record must be the recorded sign-off. Its message says that the option asked for it."""

    options: str
    name: str = "approval"

    def check(self, context: GateContext) -> GateResult:
        found = ApprovalGate().check(context)
        verb = "ask" if " and " in self.options else "asks"
        details = list(found.details)
        if found.blocks:
            details.append(
                f"{context.from_stage} → {context.to_stage} itself requires no sign-off: "
                f"without {self.options} the promotion needs none"
            )
        return dataclasses.replace(
            found, message=f"{self.options} {verb} for a sign-off: {found.message}", details=details
        )


def signoff_problem(project: Project, author: str | None, approver: str) -> str | None:
    """Why `approver` may not sign off a skill by `author`, or None."""
    approvers = project.config.approvals.approvers
    if not approvers:
        return "no approvers are configured: add [approvals] approvers = [...] to skillstage.toml"
    if approver not in approvers:
        return (
            f"{approver} is not an approver (approvers: {', '.join(approvers)}); "
            "name the approver with --by"
        )
    if (
        not project.config.approvals.allow_self_approval
        and author
        and author.strip().casefold() == approver.strip().casefold()
    ):
        return f"{approver} is the skill's author and cannot approve it (four-eyes rule)"
    return None


# -- comparing versions ---------------------------------------------------------------------


@dataclass(frozen=True)
class Side:
    """What a version reference stands for: a digest's executions, perhaps in a time window.

    Its executions in use only, unless it is a stay in the first stage (`benchmark`): there the
    benchmark runs of `skillstage eval` are the evidence, and the baseline of later stages."""

    label: str
    version: str
    digest: str
    since: dt.datetime | None
    until: dt.datetime | None
    benchmark: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "version": self.version,
            "digest": self.digest,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "benchmark_runs": self.benchmark,
        }


def resolve_side(project: Project, tx: Transaction, skill_id: int, name: str, ref: str) -> Side:
    """A version (`1.2.0`), a digest or its prefix (≥ 7 hex digits), or a stage name (the version
    in that stage now, else the last one that was: its executions during its stay there)."""
    if ref in project.config.stages:
        stays = store_metrics.tenures(tx, skill_id, ref)
        if not stays:
            raise UsageError(f"{name} has never been in {ref}")
        stay = stays[0]
        return Side(
            f"{ref} ({stay.version})",
            stay.version,
            stay.digest,
            stay.entered_at,
            stay.left_at,
            benchmark=ref == next(iter(project.config.stages)),
        )
    registered = dict(store_metrics.version_by_digest(tx, skill_id, ""))
    if ref in registered:
        return Side(ref, ref, registered[ref], None, None)
    hexdigits = set("0123456789abcdef")
    if 7 <= len(ref) <= 64 and set(ref.lower()) <= hexdigits:
        found = store_metrics.version_by_digest(tx, skill_id, ref)
        if len(found) == 1:
            version, digest = found[0]
            return Side(f"{version} ({digest[:12]})", version, digest, None, None)
        if len(found) > 1:
            raise UsageError(f"digest prefix {ref} is ambiguous for {name}: give more digits")
    shown = ref if len(ref) <= 80 else f"{ref[:60]}… ({len(ref)} characters)"
    raise UsageError(
        f"{shown!r} is not a version, digest or stage of {name}",
        hint=f"versions: {', '.join(sorted(registered)) or 'none'}; stages: "
        + ", ".join(project.config.stages)
        + "; or a digest (its first 7 or more hex digits)",
    )


def sample_rows(tx: Transaction, skill_id: int, side: Side) -> store_metrics.Rows:
    return store_metrics.execution_rows(
        tx,
        skill_id,
        digest=side.digest,
        since=side.since,
        until=side.until,
        in_use=not side.benchmark,
    )


@dataclass(frozen=True)
class VersionComparison:
    name: str
    a: Side
    b: Side
    summary_a: MetricsSummary
    summary_b: MetricsSummary
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        return {
            "skill_name": self.name,
            "a": {**self.a.to_dict(), "metrics": self.summary_a.to_dict()},
            "b": {**self.b.to_dict(), "metrics": self.summary_b.to_dict()},
            **self.comparison.to_dict(),
        }


def compare_versions(
    project: Project, store: Store, name: str, ref_a: str, ref_b: str, *, thresholds: Thresholds
) -> VersionComparison:
    """Compare two versions of a skill metric by metric (seed 002's A/B comparison), with the
    sample size, significance level and margins of `thresholds`."""
    ingest_on_demand(project, store)
    with store.reading() as tx:
        skill_id = tx.skill_id(name)
        if skill_id is None:
            raise UsageError(
                f"no skill named {name!r} in the store",
                hint="`skillstage list` registers the skills on disk and shows them",
            )
        a = resolve_side(project, tx, skill_id, name, ref_a)
        b = resolve_side(project, tx, skill_id, name, ref_b)
        rows_a, rows_b = sample_rows(tx, skill_id, a), sample_rows(tx, skill_id, b)
    return VersionComparison(
        name,
        a,
        b,
        summarise(rows_a),
        summarise(rows_b),
        compare_samples(as_sample(rows_a), as_sample(rows_b), **thresholds.comparing()),
    )


@dataclass
class Readiness:
    """Whether a skill may move now, gate by gate (seed 002 `status`)."""

    name: str
    version: str | None
    digest: str | None
    from_stage: str | None
    to_stage: str | None
    gates: list[GateResult] = field(default_factory=list)
    error: str | None = None

    @property
    def ready(self) -> bool:
        return self.error is None and not any(g.blocks for g in self.gates)

    def to_dict(self) -> dict[str, Any]:
        return {
            "skill_name": self.name,
            "version": self.version,
            "digest": self.digest,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "ready": self.ready,
            "error": self.error,
            "gates": [g.to_dict() for g in self.gates],
        }
