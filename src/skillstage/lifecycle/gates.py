"""Gates: what a skill version must pass to move from one stage to the next.

Each transition in the config names its gates. A gate returns pass, fail, warn or skip with a
message; `--force` (with a reason) lets a promotion past failing gates, and the event records
which.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

from skillstage.config import CommandGateConfig, Project
from skillstage.lifecycle.archive import archive_path, differing_files, directory_digest
from skillstage.process import child_environment, run
from skillstage.skill.checks import Finding, SkillReport, run_skill_tests
from skillstage.skill.model import SkillVersion
from skillstage.store import Store

GateStatus = Literal["pass", "fail", "warn", "skip"]


@dataclass(frozen=True)
class GateResult:
    """What one gate decided, and why."""

    gate: str
    status: GateStatus
    message: str
    details: list[str] = field(default_factory=list)
    # Seed 002's criteria behind a metric gate: name, actual, required, passed, missing.
    criteria: list[dict[str, Any]] = field(default_factory=list)

    @property
    def blocks(self) -> bool:
        return self.status == "fail"

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class GateContext:
    """What a gate may look at: the skill, its validation report, where it goes, the store."""

    project: Project
    store: Store
    skill: SkillVersion
    report: SkillReport
    from_stage: str
    to_stage: str
    target: Path
    overwrite: bool
    approver: str | None = None  # promote --approver: must be the recorded sign-off's
    approval_ticket: str | None = None  # promote --approval-ticket: likewise


class Gate(Protocol):
    """A check a transition requires."""

    name: str

    def check(self, context: GateContext) -> GateResult: ...


def _summary(findings: Sequence[Finding], limit: int = 3) -> list[str]:
    lines = [f"{f.id}: {f.message}" + (f" (hint: {f.hint})" if f.hint else "") for f in findings]
    return lines[:limit] + ([f"… and {len(lines) - limit} more"] if len(lines) > limit else [])


@dataclass
class FindingsGate:
    """Passes when the skill's validation found no error in these rule sets (seed 000's content,
    schema and security checks; the Agent Skills spec)."""

    name: str
    rule_sets: frozenset[str]
    what: str

    def check(self, context: GateContext) -> GateResult:
        mine = [f for f in context.report.findings if f.rule_set in self.rule_sets]
        errors = [f for f in mine if f.severity == "error"]
        warnings = [f for f in mine if f.severity == "warning"]
        if errors:
            return GateResult(
                self.name, "fail", f"{self.what}: {len(errors)} error(s)", _summary(errors)
            )
        if warnings:
            return GateResult(
                self.name, "warn", f"{self.what}: {len(warnings)} warning(s)", _summary(warnings)
            )
        return GateResult(self.name, "pass", f"{self.what}: passed")


class TestsGate:
    """Seed 000 §3: test.sh, when present, exits 0 within its timeout."""

    name = "tests"

    def check(self, context: GateContext) -> GateResult:
        if not (context.skill.path / "test.sh").is_file():
            return GateResult(self.name, "skip", "no test.sh")
        probe = SkillReport(context.skill.path)
        run_skill_tests(probe, context.project.config.validation)
        if not probe.findings:
            return GateResult(self.name, "pass", "test.sh passed")
        finding = probe.findings[0]
        status: GateStatus = "warn" if finding.severity == "warning" else "fail"
        details = [finding.detail] if finding.detail else []
        return GateResult(self.name, status, finding.message, details)


class ConflictsGate:
    """Seed 000 §4: the target must be free (or `--overwrite`), and a version never changes."""

    name = "conflicts"

    def check(self, context: GateContext) -> GateResult:
        skill = context.skill
        known = context.store.find_version(skill.name, skill.version)
        if known is not None and known.digest != skill.digest:
            return GateResult(
                self.name,
                "fail",
                f"{skill.name} {skill.version} is already registered with other content "
                f"(digest {known.short_digest}, this copy {skill.short_digest})",
                ["bump the version in SKILL.md for changed content"],
            )
        if context.target.exists() and not context.overwrite:
            where = context.project.config.stages[context.to_stage].label or context.to_stage
            return GateResult(
                self.name,
                "fail",
                f"Skill already exists in {where}: {context.target}",
                ["use --overwrite (the version there is kept in the archive)"],
            )
        if context.target.exists():
            edits = uncommitted_edits(
                context.project,
                context.store,
                skill.name,
                context.to_stage,
                context.target,
                retry="promote again",
            )
            if edits is not None:
                return edits
            return GateResult(self.name, "warn", f"{context.target} will be overwritten")
        return GateResult(self.name, "pass", "no conflict")


def _shown(paths: Sequence[str], limit: int = 5) -> str:
    more = f" and {len(paths) - limit} more" if len(paths) > limit else ""
    return ", ".join(paths[:limit]) + more


def uncommitted_edits(
    project: Project, store: Store, name: str, stage: str, target: Path, *, retry: str
) -> GateResult | None:
    """Seed 000 §4's "uncommitted changes in production": edits to the live copy `target` of
    `name` in `stage` that git has not committed, which replacing the copy would lose. A failing
    `conflicts` result that names the files and the safe next steps (`retry`: what to do after
    them, e.g. "promote again"), a warning when git cannot be asked, else None.

    Skillstage's own write is no such edit: a promotion or rollback without --git-commit leaves
    the live copy uncommitted, and when the copy is exactly the version the store records live
    there (same digest) nothing in it is lost (the archive keeps that version). Promote and
    rollback both ask this before replacing a live copy."""
    policy = project.config.validation
    recorded = next(iter(store.current_assignments(stage=stage, name=name)), None)
    if recorded is not None and recorded.digest == directory_digest(project, target):
        return None
    from skillstage.integrations.git import GitError, repository_root, uncommitted_paths

    timeout = project.config.git.timeout_seconds
    try:
        root = repository_root(target, timeout=timeout)
        uncommitted = [] if root is None else uncommitted_paths(root, target, timeout=timeout)
    except GitError as exc:
        return GateResult("conflicts", "warn", f"could not ask git about {target}: {exc}")
    if root is None or not uncommitted:
        return None
    steps = [
        f"to keep them, commit them (`git -C {root} add -- {target}`, then `git -C {root} "
        f"commit`), then {retry}",
        "or run `skillstage doctor` to see the drift",
    ]
    if recorded is None:
        return GateResult(
            "conflicts",
            "fail",
            f"uncommitted changes in {target}, which holds no version skillstage put there: "
            f"{_shown(uncommitted)}",
            steps,
        )
    entry = archive_path(project, name, recorded.version, recorded.digest)
    differing = differing_files(target, entry, policy) if entry.is_dir() else []
    if differing:
        listing = _shown(differing)
    else:  # nothing to compare with (no archive copy, an unreadable file): what git lists
        why = "its archive copy is missing" if not entry.is_dir() else "they cannot be compared"
        listing = f"{_shown(uncommitted)} ({why}: the uncommitted files are shown)"
    steps[1] += (
        f" (`skillstage doctor --repair` keeps the edited copy in the archive and puts "
        f"{recorded.version} back)"
    )
    return GateResult(
        "conflicts",
        "fail",
        f"uncommitted changes in {target} that skillstage did not make (against {name} "
        f"{recorded.version}, the version it put there): {listing}",
        steps,
    )


class DependenciesGate:
    """Every declared dependency is already in the target stage or a later one."""

    name = "dependencies"

    def check(self, context: GateContext) -> GateResult:
        wanted = context.skill.frontmatter.dependencies or []
        if not wanted:
            return GateResult(self.name, "pass", "no dependencies")
        stages = list(context.project.config.stages)
        at_or_after = set(stages[stages.index(context.to_stage) :])
        present = {a.name for a in context.store.current_assignments() if a.stage in at_or_after}
        missing = [name for name in wanted if name not in present]
        if missing:
            return GateResult(
                self.name,
                "fail",
                f"not yet in {context.to_stage} or later: {', '.join(missing)}",
                [f"promote {', '.join(missing)} first"],
            )
        return GateResult(self.name, "pass", f"{len(wanted)} dependencies in place")


@dataclass
class CommandGate:
    """A configured command; passes on exit 0 (how ruff, pyright or detect-secrets plug in)."""

    name: str
    config: CommandGateConfig

    def check(self, context: GateContext) -> GateResult:
        import shlex

        env = child_environment(
            {
                "SKILLSTAGE_SKILL": context.skill.name,
                "SKILLSTAGE_VERSION": context.skill.version,
                "SKILLSTAGE_DIGEST": context.skill.digest,
                "SKILLSTAGE_PATH": str(context.skill.path),
                "SKILLSTAGE_FROM_STAGE": context.from_stage,
                "SKILLSTAGE_TO_STAGE": context.to_stage,
            }
        )
        try:
            result = run(
                shlex.split(self.config.command),
                cwd=context.project.root,
                timeout=self.config.timeout_seconds,
                env=env,
            )
        except Exception as exc:  # a command that cannot start fails the gate, with why
            return GateResult(self.name, "fail", f"cannot run {self.config.command!r}: {exc}")
        if result.timed_out:
            return GateResult(
                self.name,
                "fail",
                f"{self.config.command!r} did not finish within {self.config.timeout_seconds:g} s",
            )
        if result.returncode != 0:
            details = [result.output_tail(10)] if result.output_tail(10) else []
            return GateResult(
                self.name, "fail", f"{self.config.command!r} exited {result.returncode}", details
            )
        return GateResult(self.name, "pass", f"{self.config.command!r} passed")
