"""Seed 001's promotion report (`skillstage report NAME`), filled from the store.

The shape is seed 001's "Output/Deliverables → Promotion Report": component, stages, date,
quality gates, promotion criteria, deployment, validation. Each part is filled from what the store
and the disk hold about the skill's latest promotion attempt:

- the `promote` event (who, when, from/to, forced gates, reason, approver);
- its gate results (the event's details keep every gate's status and message);
- the deploy hook's outbox item (delivered or failed, deployment id, attempts);
- validation re-run now on the live copy (`check_skill`; `test.sh` as the smoke test when asked).

Seed 001's quality gates are built in for Python components (coverage, tests via pytest, lint via
ruff, types, secrets via detect-secrets); a skill's are structure, schema, spec, tests (test.sh),
security and command gates. `quality_gates` maps both onto seed 001's keys (coverage as the
coverage gate's measured "NN%") and says "not run" for what no gate measured, rather than
inventing a number. `promotion_issue.py` turns the report into seed 001's promotion issue.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillstage.arguments import checked
from skillstage.config import Project
from skillstage.errors import UsageError
from skillstage.lifecycle.leftovers import in_project
from skillstage.skill.checks import SkillReport, check_skill, run_skill_tests
from skillstage.store import Event, Store
from skillstage.store import stats as queries
from skillstage.store.outbox import DELIVERED, FAILED, OutboxItem

# Seed 001's quality gates, and which of our gates answer each. Command gates are named by the
# project ([gates.<name>]); these are the names seed 001's tools usually get.
LINT_GATES = ("structure", "schema", "spec", "ruff", "lint", "linting")
TYPE_GATES = ("pyright", "mypy", "types", "type_checking")
SECURITY_GATES = ("security", "detect-secrets", "secrets")
COVERAGE_GATES = ("coverage",)


@dataclass(frozen=True)
class PromotionReport:
    """Seed 001's report for one promotion attempt, as a JSON-able document."""

    document: dict[str, Any]

    @property
    def success(self) -> bool:
        return bool(self.document["success"])

    def to_dict(self) -> dict[str, Any]:
        return self.document


def _gate_summary(gates: Sequence[Mapping[str, Any]], names: Iterable[str]) -> str:
    """ "clean", "warnings", "failed" or "failed (forced)" over the gates with these names."""
    wanted = set(names)
    statuses = [g.get("status") for g in gates if g.get("gate") in wanted]
    ran = [s for s in statuses if s != "skip"]
    if not ran:
        return "not run"
    if "fail" in ran:
        return "failed"
    return "warnings" if "warn" in ran else "clean"


def _tests_passing(gates: Sequence[Mapping[str, Any]]) -> bool | None:
    statuses = [g.get("status") for g in gates if g.get("gate") == "tests"]
    if not statuses or statuses == ["skip"]:
        return None  # no test.sh: nothing passed or failed
    return all(s == "pass" for s in statuses)


def coverage_percent(actual: float) -> str:
    """Seed 001's "{coverage}%" of the coverage gate's measured percentage (kept to two
    decimals): 75 → "75%", 74.56 → "74.56%"."""
    return f"{round(actual, 2):g}%"


def _coverage(gates: Sequence[Mapping[str, Any]]) -> str | None:
    for gate in gates:
        if gate.get("gate") not in COVERAGE_GATES or gate.get("status") == "skip":
            continue
        measured = [
            c.get("actual") for c in gate.get("criteria") or [] if c.get("name") == "coverage"
        ]
        if measured and isinstance(measured[0], int | float):
            return coverage_percent(measured[0])
        return None  # the gate ran but measured nothing (a missing tool, a broken run)
    return None  # no coverage gate in this transition


def quality_gates(gates: Sequence[Mapping[str, Any]], forced: Sequence[str]) -> dict[str, Any]:
    """Seed 001's `quality_gates` from our gate results. A gate that failed and was forced past
    says so."""

    def summary(names: Iterable[str]) -> str:
        names = list(names)
        verdict = _gate_summary(gates, names)
        if verdict == "failed" and any(name in forced for name in names):
            return "failed (forced)"
        return verdict

    return {
        "coverage": _coverage(gates),
        "tests_passing": _tests_passing(gates),
        "linting": summary(LINT_GATES),
        "type_checking": summary(TYPE_GATES),
        "security": summary(SECURITY_GATES),
    }


def _deployment(event: Event, items: Sequence[OutboxItem]) -> dict[str, Any]:
    environment, version = event.to_stage, event.version
    if not event.success:
        return {
            "success": None,
            "status": "not promoted",
            "environment": environment,
            "version": version,
        }
    if not items:
        return {
            "success": None,
            "status": "not requested",  # promoted without --deploy, or no deploy hook configured
            "environment": environment,
            "version": version,
        }
    item = items[0]
    return {
        "success": True if item.status == DELIVERED else False if item.status == FAILED else None,
        "status": item.status,
        "environment": environment,
        "version": version,
        "deployment_id": item.output,
        "attempts": item.attempts,
        "last_error": item.last_error if item.status != DELIVERED else None,
    }


_SMOKE_VERDICTS = {DELIVERED: "passed", FAILED: "failed"}


def _validation(
    project: Project,
    store: Store,
    event: Event,
    *,
    run_tests: bool,
) -> dict[str, Any]:
    stage = event.to_stage
    live = store.current_assignments(stage=stage, name=event.name) if stage else []
    rollbacks = [
        e
        for e in store.events(event.name, limit=1000, kind="rollback")
        if e.at > event.at and e.from_stage == stage
    ]
    monitoring = "rolled back" if rollbacks else "normal"
    # Seed 001 Step 6: the stage's smoke check after the promotion ([stages.<stage>] smoke).
    checks = (
        queries.deploy_items(store, event.name, version=event.version, since=event.at, kind="smoke")
        if event.success and event.version is not None
        else []
    )
    smoke = _SMOKE_VERDICTS.get(checks[-1].status, "pending") if checks else "not run"
    notes = (
        [f"rolled back on {rollbacks[-1].at:%Y-%m-%d %H:%M}: {rollbacks[-1].reason}"]
        if rollbacks
        else ["no rollback since the promotion; execution metrics are not evaluated here"]
    )
    if not live:
        return {
            "smoke_tests": smoke,
            "health_checks": "not live",
            "monitoring": monitoring,
            "live_version": None,
            "live_digest": None,
            "matches_promoted": False,
            "findings": [],
            "notes": [*notes, f"{event.name} is not in {stage} now"],
        }
    assignment = in_project(project, live[0])
    path = Path(assignment.path)
    report = check_skill(path, project.config.validation, expected_name=event.name)
    if run_tests:
        if (path / "test.sh").is_file():
            probe = SkillReport(path)
            run_skill_tests(probe, project.config.validation)
            smoke = "failed" if any(f.severity == "error" for f in probe.findings) else "passed"
            report.findings.extend(probe.findings)
        else:
            smoke = "no test.sh"
    if assignment.version != event.version:
        notes.append(f"{stage} now holds {assignment.version}, not the promoted {event.version}")
    if report.digest != assignment.digest:
        notes.append(
            f"the live copy at {path} differs from the registered {assignment.version} "
            f"(digest {(report.digest or 'unreadable')[:12]}, registered "
            f"{assignment.digest[:12]}); `skillstage doctor` explains"
        )
    return {
        "smoke_tests": smoke,
        "health_checks": "passed" if report.ok else "failed",
        "monitoring": monitoring,
        "live_version": assignment.version,
        "live_digest": report.digest,
        "matches_promoted": report.digest == event.digest,
        "findings": [
            {"id": f.id, "severity": f.severity, "message": f.message, "file": f.file}
            for f in report.findings
            if f.severity in ("error", "warning")
        ],
        "notes": notes,
    }


def promotion_report(
    project: Project, store: Store, name: str, *, run_tests: bool = False
) -> PromotionReport:
    """Seed 001's report for the latest promotion attempt of `name` (successful or refused).

    `run_tests` runs the live copy's test.sh as the smoke test. Raises `UsageError` when no
    promotion of `name` is recorded.
    """
    latest = store.events(name, limit=1, kind="promote")
    if not latest:
        raise UsageError(
            f"no promotion of {name!r} is recorded",
            hint=f"`skillstage history {name}` shows what happened to it",
        )
    event = latest[0]
    details = event.details or {}
    gates: list[dict[str, Any]] = list(details.get("gates") or [])
    forced: list[str] = list(details.get("forced") or [])
    blocking = [g for g in gates if g.get("status") == "fail"]
    items = (
        queries.deploy_items(store, name, version=event.version, since=event.at)
        if event.success and event.version is not None
        else []
    )
    document: dict[str, Any] = {
        "component": name,
        "from_stage": event.from_stage,
        "to_stage": event.to_stage,
        "date": event.at.isoformat(),
        "quality_gates": quality_gates(gates, forced),
        "promotion_criteria": {
            # None: an event from before gate results were stored with promotions.
            "all_met": not blocking if "gates" in details else None,
            "details": gates,
            "forced": forced,
            "reason": event.reason,
            "approver": event.approver,
            "approval_ticket": event.approval_ticket,
        },
        "deployment": _deployment(event, items),
        "validation": _validation(project, store, event, run_tests=run_tests),
        # Beyond seed 001: which attempt this is.
        "success": event.success,
        "version": event.version,
        "digest": event.digest,
        "promoted_by": event.actor,
        "event_id": event.id,
    }
    return PromotionReport(document)


@checked
def report(project: Project, name: str, *, run_tests: bool = False) -> PromotionReport:
    """`promotion_report` on the project's store (what `skillstage report NAME` shows)."""
    with Store.open(project.database_url) as store:
        return promotion_report(project, store, name, run_tests=run_tests)
