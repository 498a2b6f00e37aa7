"""Seed 001's promotion issue (Step 4, "Update Tracking"): its GitHub issue template filled in from
the promotion report (`skillstage report NAME --issue`), and the `gh issue create` that files it
(`--gh`), an outbox item of its own kind (`integrations/github.py`).

The template's sections are seed 001's: the title and stages, Quality Gates (each with the value
its gate measured), Promotion Criteria (every gate of the transition), Blockers, Approval and the
Rollback Plan. A box is ticked only for what a gate passed or a person recorded: the approvals
seed 001 asks for that skillstage did not record stay open for people to tick.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillstageError, UsageError
from skillstage.lifecycle.report import (
    COVERAGE_GATES,
    LINT_GATES,
    SECURITY_GATES,
    TYPE_GATES,
    promotion_report,
)
from skillstage.store import Store


@dataclass(frozen=True)
class PromotionIssue:
    """Seed 001's promotion issue for one promotion attempt: what `gh issue create` is given."""

    component: str
    to_stage: str | None
    event_id: int
    title: str
    labels: list[str]
    body: str  # Markdown
    # Set once written / filed (`api.promotion_issue`):
    path: str | None = None  # the Markdown file
    outbox_id: int | None = None
    status: str | None = None  # the outbox item's: delivered, pending, failed
    url: str | None = None  # what gh printed
    error: str | None = None
    attempts: int = 0
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _box(done: bool, text: str) -> str:
    return f"- [{'x' if done else ' '}] {text}"


def _said(gates: Sequence[Mapping[str, Any]], names: Iterable[str]) -> str:
    """What the gates behind one of seed 001's keys said: "ruff: clean; …", or ""."""
    wanted = set(names)
    messages = [
        f"{g.get('gate')}: {g.get('message')}"
        for g in gates
        if g.get("gate") in wanted and g.get("status") != "skip"
    ]
    return f" ({'; '.join(messages)})" if messages else ""


def _quality_lines(document: Mapping[str, Any]) -> list[str]:
    quality = document["quality_gates"]
    gates: list[Mapping[str, Any]] = document["promotion_criteria"]["details"]
    coverage_ok = any(
        g.get("gate") in COVERAGE_GATES and g.get("status") in ("pass", "warn") for g in gates
    )
    coverage = quality["coverage"] or "not measured"
    tests = quality["tests_passing"]
    tests_said = " (no tests ran)" if tests is None else _said(gates, ("tests",))
    lines = [
        _box(coverage_ok, f"Test coverage: {coverage}{_said(gates, COVERAGE_GATES)}"),
        _box(tests is True, f"All tests passing{tests_said}"),
    ]
    for key, what, names in (
        ("linting", "Linting", LINT_GATES),
        ("type_checking", "Type checking", TYPE_GATES),
        ("security", "Security scan", SECURITY_GATES),
    ):
        verdict = quality[key]
        text = f"{what} clean" if verdict == "clean" else f"{what}: {verdict}"
        lines.append(_box(verdict in ("clean", "warnings"), text + _said(gates, names)))
    return lines


def _criteria_lines(gates: Sequence[Mapping[str, Any]], forced: Sequence[str]) -> list[str]:
    if not gates:
        return ["- (no gate results are recorded with this promotion)"]
    lines = []
    for gate in gates:
        status, text = gate.get("status"), f"{gate.get('gate')}: {gate.get('message')}"
        if status == "warn":
            text += " (warning)"
        elif status == "skip":
            text += " (pending: skipped)"
        elif status == "fail":
            text += " (failed, forced past)" if gate.get("gate") in forced else " (failed)"
        lines.append(_box(status in ("pass", "warn"), text))
    return lines


def _blocker_lines(document: Mapping[str, Any]) -> list[str]:
    criteria = document["promotion_criteria"]
    failing = [g for g in criteria["details"] if g.get("status") == "fail"]
    if not failing:
        return ["None."]
    forced = criteria["forced"]
    lines = [
        f"- {g.get('gate')}: {g.get('message')}"
        + (f" — forced past (reason: {criteria['reason']})" if g.get("gate") in forced else "")
        for g in failing
    ]
    if not document["success"]:
        lines.append("")
        again = f"`skillstage promote {document['component']}`"
        lines.append(f"The promotion was refused: fix these, then {again} again.")
    return lines


def _approval_lines(document: Mapping[str, Any], final: bool) -> list[str]:
    criteria = document["promotion_criteria"]
    lines = []
    if criteria["approver"]:
        ticket = criteria["approval_ticket"]
        lines.append(
            _box(True, f"Approved by {criteria['approver']}" + (f" ({ticket})" if ticket else ""))
        )
    lines += [_box(False, "Tech lead approval"), _box(False, "QA approval")]
    if final:
        lines.append(_box(False, "Security approval (for production)"))
    return lines


def _rollback_lines(document: Mapping[str, Any], previous: str | None) -> list[str]:
    name, stage, source = document["component"], document["to_stage"], document["from_stage"]
    if previous is not None:
        return [
            f'`skillstage rollback {name} --stage {stage} --reason "…"` puts {name} {previous} '
            f"back in {stage} from the archive in one atomic swap; {document['version']} is "
            "archived as failed with the reason.",
        ]
    return [
        f"No earlier version of {name} was in {stage}: "
        f'`skillstage rollback {name} --stage {stage} --to {source} --reason "…"` moves it '
        f"back to {source}.",
    ]


def issue_from_report(
    document: Mapping[str, Any], *, previous: str | None = None, final: bool = False
) -> PromotionIssue:
    """Seed 001's promotion issue filled from a promotion report's document (`report.py`).
    `previous`: the version the promotion replaced in its stage (the rollback plan's); `final`:
    the target is the last stage (seed 001's "Security approval (for production)")."""
    name, stage = document["component"], document["to_stage"]
    criteria = document["promotion_criteria"]
    outcome = (
        "refused by its gates"
        if not document["success"]
        else "promoted past failing gates (forced)"
        if criteria["forced"]
        else "promoted"
    )
    header = [
        f"## Component Promotion: {name}",
        "",
        f"**Current Stage:** {document['from_stage']}",
        f"**Target Stage:** {stage}",
        f"**Date:** {document['date'][:10]}",
        f"**Version:** {document['version']}",
        f"**Promoted by:** {document['promoted_by']}",
        f"**Outcome:** {outcome}",
    ]
    sections = [
        ("Quality Gates", _quality_lines(document)),
        ("Promotion Criteria", _criteria_lines(criteria["details"], criteria["forced"])),
        ("Blockers", _blocker_lines(document)),
        ("Approval", _approval_lines(document, final)),
        ("Rollback Plan", _rollback_lines(document, previous)),
    ]
    body = "\n".join(header)
    for title, lines in sections:
        body += f"\n\n### {title}\n" + "\n".join(lines)
    return PromotionIssue(
        component=name,
        to_stage=stage,
        event_id=int(document["event_id"]),
        title=f"Promote {name} to {stage}",
        labels=[f"component:{name}", f"target:{stage}"],
        body=body + "\n",
    )


def _previous_version(store: Store, document: Mapping[str, Any]) -> str | None:
    """The version live in the target stage before this promotion, if any."""
    for event in store.events(document["component"], limit=200, kind="promote"):
        if (
            event.id < document["event_id"]
            and event.success
            and event.to_stage == document["to_stage"]
        ):
            return event.version
    return None


def promotion_issue(project: Project, store: Store, name: str) -> PromotionIssue:
    """Seed 001's promotion issue for `name`'s latest promotion attempt."""
    document = promotion_report(project, store, name).to_dict()
    final = document["to_stage"] == list(project.config.stages)[-1]
    return issue_from_report(document, previous=_previous_version(store, document), final=final)


REPO_FORM = re.compile(r"^(?:[A-Za-z0-9.-]+/)?[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")


def issue_file(project: Project, issue: PromotionIssue) -> Path:
    """Where `--gh` writes the issue's Markdown when no `--output` is given."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", issue.component)
    return project.state_dir / "issues" / f"{safe}-{issue.event_id}.md"


def write_issue(issue: PromotionIssue, path: Path) -> PromotionIssue:
    """Write the issue's Markdown to `path` (its folder made); the issue with its path."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(issue.body, encoding="utf-8")
    except OSError as exc:
        raise UsageError(
            f"cannot write the promotion issue to {path}: {exc.strerror or exc}",
            path=path,
            hint="give --output a FILE in a directory you may write to",
        ) from None
    return replace(issue, path=str(path))


class GhMissingError(SkillstageError):
    """`--gh` without gh (the GitHub CLI) on PATH: the issue's Markdown is written, not filed."""

    code = "GH_MISSING"


def file_issue(
    project: Project, store: Store, issue: PromotionIssue, path: Path, *, repo: str | None
) -> PromotionIssue:
    """Write the issue to `path`, then file it with `gh issue create`: an outbox item of its own
    kind, delivered now (with the outbox's retries) and retried later if it fails. Raises
    `GhMissingError`, naming the file, when gh is not on PATH (nothing is queued)."""
    from skillstage.integrations.github import (
        GITHUB_ISSUE_KIND,
        find_gh,
        issue_command,
        issue_payload,
    )
    from skillstage.integrations.outbox import deliver
    from skillstage.store.outbox import enqueue

    issue = write_issue(issue, path)
    if find_gh() is None:
        by_hand = " ".join(
            shlex.quote(a)
            for a in ["gh", *issue_command(issue.title, issue.labels, str(path), repo)]
        )
        raise GhMissingError(
            f"gh (the GitHub CLI) is not on PATH, so the issue was not created; its Markdown is "
            f"in {path}",
            hint=f"create it by hand: paste {path} into a new issue titled {issue.title!r} with "
            f"labels {', '.join(issue.labels)}; or install gh (https://cli.github.com), "
            f"`gh auth login`, then run `{by_hand}`",
        )
    payload = issue_payload(
        skill=issue.component,
        event_id=issue.event_id,
        title=issue.title,
        labels=issue.labels,
        body=issue.body,
        body_file=str(path),
        repo=repo,
    )
    with store.atomic() as tx:
        item_id = enqueue(tx, GITHUB_ISSUE_KIND, payload)
    [delivery] = deliver(project, store, ids=[item_id])
    return replace(
        issue,
        outbox_id=item_id,
        status=delivery.status,
        url=delivery.output if delivery.ok else None,
        error=delivery.error,
        attempts=delivery.attempts,
    )
