"""The go/no-go decision for a production deployment (seed 003 "Decision Framework").

Seed 003 decides GO when runtime tests pass, monitoring is set up, the rollback plan is ready and
tested, no critical bugs are open and the documentation is updated; NO-GO when runtime testing
found critical bugs, integration tests fail or the rollback plan is untested; DELAY for minor bugs,
incomplete documentation, monitoring not fully ready. Each criterion here reads evidence
skillstage holds and gives its own verdict; the decision is the worst of them:

| criterion | GO when | otherwise |
| --- | --- | --- |
| runtime_checks | `check-runtime` passes on the production tree | fail: NO-GO; warn: DELAY |
| monitoring | a monitoring target is configured | DELAY |
| rollback_drill | the skill's latest drill passed within `drill_days` | NO-GO |
| failure_reports | no automated rollback of the skill is still open | NO-GO |
| tests | the candidate's latest promotion attempt had no failing test gate | NO-GO |
| docs_updated | a doc file of the candidate changed since the version before it | DELAY |
| sign_off | an approved sign-off of the candidate's content is recorded | DELAY (rejected: NO-GO) |

The candidate of a skill is the copy waiting in a stage that moves to production, else the version
live in production (what a deployment puts, or put, in front of users).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from skillstage.config import Project
from skillstage.errors import SkillReadError, UsageError
from skillstage.lifecycle.archive import archive_path
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import controls as store_controls
from skillstage.store import metrics as store_metrics
from skillstage.store import rollouts as store_rollouts
from skillstage.store.controls import Control

Verdict = Literal["GO", "NO-GO", "DELAY"]
_RANK: dict[Verdict, int] = {"GO": 0, "DELAY": 1, "NO-GO": 2}

# The files that document a skill; one of them must have changed since the version before.
DOC_FILES = ("README.md", "CHANGELOG.md")
DOC_DIRS = ("docs",)
TEST_GATES = ("tests", "integration-tests-exist")
DRILL_DAYS = 7


def worst(verdicts: Sequence[Verdict]) -> Verdict:
    """The decision over these verdicts: NO-GO beats DELAY beats GO."""
    return max(verdicts, key=_RANK.__getitem__, default="GO")


@dataclass(frozen=True)
class Criterion:
    """One go/no-go criterion: its verdict and the evidence behind it."""

    name: str
    verdict: Verdict
    evidence: str
    hint: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "verdict": self.verdict,
            "evidence": self.evidence,
            "hint": self.hint,
            "details": self.details,
        }


@dataclass(frozen=True)
class SkillDecision:
    """The criteria of one skill's candidate version."""

    name: str
    version: str
    digest: str
    stage: str
    criteria: list[Criterion]

    @property
    def decision(self) -> Verdict:
        return worst([c.verdict for c in self.criteria])

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "digest": self.digest,
            "stage": self.stage,
            "decision": self.decision,
            "criteria": [c.to_dict() for c in self.criteria],
        }


@dataclass(frozen=True)
class GoNoGo:
    """The decision for the project (or one skill): project-wide criteria and each skill's."""

    criteria: list[Criterion]
    skills: list[SkillDecision]
    at: dt.datetime

    @property
    def decision(self) -> Verdict:
        return worst([c.verdict for c in self.criteria] + [s.decision for s in self.skills])

    def to_dict(self) -> dict[str, Any]:
        return {
            "decision": self.decision,
            "at": self.at.isoformat(),
            "criteria": [c.to_dict() for c in self.criteria],
            "skills": [s.to_dict() for s in self.skills],
        }


# -- project-wide criteria ----------------------------------------------------------------------


def runtime_criterion(result: Mapping[str, Any], verdict: str) -> Criterion:
    """`check-runtime`'s verdict as a criterion: fail is NO-GO, warn is DELAY."""
    failing = [
        f"{c.get('name')} ({c.get('summary')})" if c.get("summary") else str(c.get("name"))
        for c in result.get("criteria", [])
        if isinstance(c, Mapping) and c.get("status") in ("fail", "warn")
    ]
    shown = f": {', '.join(failing)}" if failing else ""
    if verdict == "fail":
        return Criterion(
            "runtime_checks",
            "NO-GO",
            f"the runtime checks failed{shown}",
            "`skillstage check-runtime` shows each failure",
            {"check_runtime": dict(result)},
        )
    if verdict == "warn":
        return Criterion(
            "runtime_checks",
            "DELAY",
            f"the runtime checks passed with warnings{shown}",
            "`skillstage check-runtime` shows each warning",
            {"check_runtime": dict(result)},
        )
    return Criterion(
        "runtime_checks", "GO", "the runtime checks passed", None, {"check_runtime": dict(result)}
    )


def monitoring_criterion(configured: bool, evidence: str) -> Criterion:
    if configured:
        return Criterion("monitoring", "GO", evidence)
    return Criterion(
        "monitoring",
        "DELAY",
        evidence,
        "configure a monitoring target: [monitoring] in skillstage.toml (docs/readiness.md)",
    )


# -- a skill's criteria -------------------------------------------------------------------------


@dataclass(frozen=True)
class Candidate:
    """The version of a skill a deployment is about, and the version before it."""

    skill: SkillVersion
    stage: str
    previous: Path | None  # the directory of the version before it, when there is one


def _read(project: Project, path: Path) -> SkillVersion | None:
    try:
        return read_skill(path, project.config.validation)
    except SkillReadError:
        return None


def candidates(project: Project, store: Store, name: str | None = None) -> list[Candidate]:
    """Each skill's candidate: the copy waiting to move into production, else the live one."""
    production = list(project.config.stages)[-1]
    sources = [t.from_stage for t in project.config.transitions if t.to_stage == production]
    names: set[str] = set()
    for stage in sources:
        root = project.stage_path(stage, "x").parent
        if root.is_dir():
            names.update(p.name for p in root.iterdir() if p.is_dir() and p.name[0] != ".")
    live = {a.name: a for a in store.current_assignments(stage=production)}
    names.update(live)
    if name is not None:
        if name not in names:
            raise UsageError(
                f"{name} is neither in {production} nor waiting to move there",
                hint="`skillstage list` shows where each skill is",
            )
        names = {name}
    with store.reading() as tx:
        previous = store_rollouts.previous_versions(tx)
    found: list[Candidate] = []
    for skill_name in sorted(names):
        waiting = [
            project.stage_path(s, skill_name)
            for s in sources
            if project.stage_path(s, skill_name).is_dir()
        ]
        production_path = project.stage_path(production, skill_name)
        if waiting:
            skill = _read(project, waiting[0])
            stage = next(s for s in sources if project.stage_path(s, skill_name) == waiting[0])
            before = production_path if production_path.is_dir() else None
        else:
            skill = _read(project, production_path)
            stage = production
            earlier = previous.get((skill_name, production))
            before = archive_path(project, skill_name, *earlier) if earlier else None
        if skill is None:
            continue  # unreadable: the runtime checks and `skillstage validate` name it
        found.append(Candidate(skill, stage, before if before and before.is_dir() else None))
    return found


def drill_criterion(drill: Any, now: dt.datetime, days: float, name: str) -> Criterion:
    """The latest rollback drill of the skill: passed, and within `days`."""
    how = f"`skillstage drill {name}`"
    if drill is None:
        return Criterion("rollback_drill", "NO-GO", "no rollback drill is recorded", f"run {how}")
    age_days = (now - drill.at).total_seconds() / 86400
    when = f"{drill.at:%Y-%m-%d %H:%M} ({age_days:.1f} days ago)"
    details = {"drill": drill.to_dict(), "age_days": round(age_days, 2), "max_days": days}
    if not drill.passed:
        return Criterion(
            "rollback_drill", "NO-GO", f"the latest rollback drill failed, {when}", how, details
        )
    if age_days > days:
        return Criterion(
            "rollback_drill",
            "NO-GO",
            f"the latest rollback drill passed {when}, longer ago than {days:g} days",
            f"run {how} again",
            details,
        )
    return Criterion("rollback_drill", "GO", f"a rollback drill passed {when}", None, details)


def open_hold(store: Store, name: str, event_id: Any) -> Control | None:
    """The hold the failure `event_id` set on `name`, if nobody has cleared it (the store's word:
    a report's copy of it is as of when the report was written)."""
    with store.reading() as tx:
        held = store_controls.controls(tx, kind=store_controls.HOLD, name=name)
    return next((c for c in held if (c.details or {}).get("event_id") == event_id), None)


def failure_criterion(
    report: Mapping[str, Any] | None, digest: str, path: Path | None, hold: Control | None
) -> Criterion:
    """Open when the automated rollback's hold is still set, or the candidate is the content
    that failed."""
    if report is None:
        return Criterion("failure_reports", "GO", "no automated rollback or abort on record")
    failed = report.get("failed") or {}
    what = (
        f"{report.get('what', 'automated rollback')} of {failed.get('version')} on "
        f"{str(report.get('at', ''))[:16].replace('T', ' ')}"
        + (
            f" ({report['trigger']['reason']})"
            if (report.get("trigger") or {}).get("reason")
            else ""
        )
    )
    where = f"; report: {path}" if path else ""
    details = {"event_id": report.get("event_id"), "report": str(path) if path else None}
    if hold is not None:
        return Criterion(
            "failure_reports",
            "NO-GO",
            f"{what} is still open: its hold on {hold.stage or 'every stage'} is set{where}",
            f"read the report, fix the cause, then `skillstage hold clear {report.get('skill')} "
            "--reason …`",
            details,
        )
    if failed.get("digest") == digest:
        return Criterion(
            "failure_reports",
            "NO-GO",
            f"the candidate is the content that failed: {what}{where}",
            "deploy a fixed version (a new digest)",
            details,
        )
    return Criterion("failure_reports", "GO", f"{what} is closed{where}", None, details)


def tests_criterion(store: Store, skill: SkillVersion) -> Criterion:
    """The test gates of the candidate's latest promotion attempt (what it was promoted with, or
    refused for)."""
    for event in store.events(skill.name, limit=50, kind="promote"):
        if event.digest != skill.digest:
            continue
        gates = [g for g in (event.details or {}).get("gates") or [] if g.get("gate") in TEST_GATES]
        failing = [g for g in gates if g.get("status") == "fail"]
        if failing:
            first = failing[0]
            return Criterion(
                "tests",
                "NO-GO",
                f"{first['gate']} failed in the promotion attempt of "
                f"{event.at:%Y-%m-%d %H:%M}: {first.get('message')}",
                f"`skillstage status {skill.name}` runs the gates again",
                {"event_id": event.id},
            )
        if gates:
            return Criterion(
                "tests",
                "GO",
                f"{', '.join(g['gate'] for g in gates)} passed in the promotion attempt of "
                f"{event.at:%Y-%m-%d %H:%M}",
                None,
                {"event_id": event.id},
            )
    return Criterion("tests", "GO", "no test gate ran on this content (nothing failed)")


def _doc_files(directory: Path) -> dict[str, bytes]:
    found: dict[str, bytes] = {}
    for name in DOC_FILES:
        path = directory / name
        if path.is_file():
            found[name] = path.read_bytes()
    for name in DOC_DIRS:
        root = directory / name
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                if path.is_file():
                    found[path.relative_to(directory).as_posix()] = path.read_bytes()
    return found


def docs_criterion(candidate: Candidate) -> Criterion:
    """A doc file of the candidate is new or changed since the version before it."""
    docs = _doc_files(Path(candidate.skill.path))
    wanted = " or ".join([*DOC_FILES, *(f"{d}/" for d in DOC_DIRS)])
    if not docs:
        return Criterion(
            "docs_updated",
            "DELAY",
            f"{candidate.skill.name} {candidate.skill.version} has no {wanted}",
            "write a README.md that says what this version does and what changed",
        )
    if candidate.previous is None:
        return Criterion(
            "docs_updated",
            "GO",
            f"the first version: documented in {', '.join(sorted(docs))}",
        )
    before = _doc_files(candidate.previous)
    changed = sorted(name for name, text in docs.items() if before.get(name) != text)
    if not changed:
        return Criterion(
            "docs_updated",
            "DELAY",
            f"{', '.join(sorted(docs))} did not change since the version before "
            f"({candidate.previous})",
            "say in the README or CHANGELOG what this version changes",
        )
    return Criterion(
        "docs_updated", "GO", f"updated since the version before: {', '.join(changed)}"
    )


def signoff_criterion(project: Project, store: Store, candidate: Candidate) -> Criterion:
    """The newest sign-off of the candidate's content for a transition into production."""
    production = list(project.config.stages)[-1]
    skill = candidate.skill
    sources = [t.from_stage for t in project.config.transitions if t.to_stage == production]
    with store.reading() as tx:
        skill_id = tx.skill_id(skill.name)
        signoffs = [
            found
            for source in sources
            if skill_id is not None
            and (
                found := store_metrics.latest_signoff(
                    tx, skill_id, skill.digest, source, production
                )
            )
            is not None
        ]
    if not signoffs:
        return Criterion(
            "sign_off",
            "DELAY",
            f"no sign-off of {skill.name} {skill.version} ({skill.digest[:12]}) for production",
            f"`skillstage signoff template {skill.name} --to {production}`, then "
            f"`skillstage approve {skill.name} --to {production} …`",
        )
    signoff = max(signoffs, key=lambda s: s.at)
    said = (
        f"{signoff.decision} by {signoff.approver} ({signoff.ticket}, {signoff.at:%Y-%m-%d %H:%M})"
    )
    details = {"ticket": signoff.ticket, "approver": signoff.approver}
    if signoff.decision == "APPROVED":
        return Criterion("sign_off", "GO", said, None, details)
    return Criterion(
        "sign_off",
        "NO-GO" if signoff.decision == "REJECTED" else "DELAY",
        said + (f": {signoff.notes}" if signoff.notes else ""),
        "a later approval of this content lifts it",
        details,
    )


def decide(
    project: Project,
    store: Store,
    *,
    name: str | None,
    runtime: Callable[[], tuple[str, Mapping[str, Any]]],
    monitoring: tuple[bool, str],
    latest_drill: Callable[[Store, str], Any],
    latest_failure: Callable[[str], tuple[Mapping[str, Any] | None, Path | None]],
    drill_days: float = DRILL_DAYS,
    now: dt.datetime | None = None,
) -> GoNoGo:
    """The decision for the project's production candidates (or the one named)."""
    now = now or dt.datetime.now(dt.UTC)
    found = candidates(project, store, name)
    if not found:
        raise UsageError(
            "no skill is in production or waiting to move there: there is nothing to decide",
            hint="`skillstage list` shows where each skill is",
        )
    verdict, result = runtime()
    project_criteria = [runtime_criterion(result, verdict), monitoring_criterion(*monitoring)]
    skills = []
    for candidate in found:
        skill = candidate.skill
        report, path = latest_failure(skill.name)
        skills.append(
            SkillDecision(
                skill.name,
                skill.version,
                skill.digest,
                candidate.stage,
                [
                    drill_criterion(latest_drill(store, skill.name), now, drill_days, skill.name),
                    failure_criterion(
                        report,
                        skill.digest,
                        path,
                        open_hold(store, skill.name, report["event_id"]) if report else None,
                    ),
                    tests_criterion(store, skill),
                    docs_criterion(candidate),
                    signoff_criterion(project, store, candidate),
                ],
            )
        )
    return GoNoGo(project_criteria, skills, now)
