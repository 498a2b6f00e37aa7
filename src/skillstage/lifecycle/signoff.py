"""Human sign-off (seed 002 §4): the checklist template, and recording a decision.

A sign-off belongs to one content digest and one transition: a changed skill (a new digest)
needs a new one. The newest decision counts, so a rejection blocks until a later approval.
The approver must be configured, and by default not the skill's author (four-eyes).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skillstage.config import Project
from skillstage.errors import ConfigError, SkillReadError, SkillstageError, UsageError
from skillstage.lifecycle.readiness import (
    DECISIONS,
    ingest_on_demand,
    review_items,
    signoff_problem,
    stay_start,
)
from skillstage.metrics.summary import summarise
from skillstage.skill.frontmatter import load_yaml_document
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import metrics as store_metrics


class ApprovalError(SkillstageError):
    """A sign-off that may not be recorded (not an approver, the author, checklist incomplete)."""

    code = "APPROVAL_REFUSED"


@dataclass(frozen=True)
class SignOffResult:
    name: str
    version: str
    digest: str
    from_stage: str
    to_stage: str
    ticket: str
    decision: str
    approver: str
    checklist: dict[str, str]
    notes: str | None
    at: dt.datetime
    event_id: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "skill_name": self.name,
            "version": self.version,
            "digest": self.digest,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "approval_ticket": self.ticket,
            "approval_decision": self.decision,
            "approver": self.approver,
            "checklist": self.checklist,
            "notes": self.notes,
            "at": self.at.isoformat(),
        }


def candidate(project: Project, name: str, to_stage: str) -> tuple[str, SkillVersion]:
    """The copy of `name` that would move into `to_stage`: (its stage, the skill read from it)."""
    if to_stage not in project.config.stages:
        raise UsageError(
            f"unknown stage {to_stage!r}", hint=f"stages: {', '.join(project.config.stages)}"
        )
    sources = [t.from_stage for t in project.config.transitions if t.to_stage == to_stage]
    for stage in sources:
        path = project.stage_path(stage, name)
        if path.is_dir():
            return stage, read_skill(path, project.config.validation)
    raise UsageError(
        f"no copy of {name} in a stage that moves to {to_stage} "
        f"({', '.join(sources) or 'no transition leads there'})",
        hint="`skillstage list` shows where each skill is",
    )


_YES = {"yes", "y", "true"}
_NO = {"no", "n", "false"}


# What a filled-in template says it is for, besides its answers (seed 002 §4.2's header).
STATED = (
    "approval_ticket",
    "skill_name",
    "version",
    "digest",
    "promotion",
    "approver",
    "approval_decision",
    "signature",
)


@dataclass(frozen=True)
class FilledChecklist:
    """A filled-in sign-off form: its human_review answers, and what it says it is for (those of
    `STATED` it holds), which the sign-off must match."""

    answers: dict[str, str]
    stated: dict[str, str]


def read_checklist(path: Path) -> FilledChecklist:
    """A filled-in template (or a plain mapping of item: YES/NO)."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot read the checklist: {exc.strerror}", path=path) from None
    except UnicodeDecodeError:
        raise UsageError("the checklist is not UTF-8 text", path=path) from None
    return parse_checklist(text, path)


def parse_checklist(text: str, where: Path | str) -> FilledChecklist:
    """A filled-in template's text (or a plain mapping of item: YES/NO); `where` names it in
    errors (its file, or where it came from)."""
    path = Path(where)
    try:
        node, data = load_yaml_document(text, path, what="the checklist")
    except SkillReadError as exc:  # an alias bomb, deep nesting, duplicate keys
        raise UsageError(exc.message, path=path, line=exc.line, hint=exc.hint) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or "cannot be parsed"
        raise UsageError(
            f"the checklist is not valid YAML: {problem}",
            path=path,
            line=mark.line + 1 if mark is not None else None,
            hint="answer each item with YES or NO, keeping the template's indentation",
        ) from None
    return filled_checklist(data, _as_written(node), path)


def filled_checklist(data: Any, written: Mapping[str, str], path: Path | str) -> FilledChecklist:
    """The form's answers and what it states, from its parsed content (`written`: the header
    fields as their text was written, see `_as_written`)."""
    if not isinstance(data, dict):
        raise UsageError("the checklist must be a YAML mapping", path=path)
    stated = {
        key: written.get(key, "" if data[key] is None else str(data[key]).strip())
        for key in STATED
        if key in data
    }
    if "human_review" not in data and (stated or "automated_checks" in data):
        raise UsageError(
            "the checklist has no human_review section",
            path=path,
            hint="fill in the human_review items of `skillstage signoff template`",
        )
    review = data.get("human_review", data)
    if not isinstance(review, dict):
        raise UsageError("human_review must be a mapping of item: YES/NO", path=path)
    answers = {}
    for item, value in review.items():
        text = str(value).strip().lower() if value is not None else ""
        if isinstance(value, bool):
            text = "yes" if value else "no"
        if text not in _YES | _NO:
            raise UsageError(
                f"human_review.{item} is {value!r}: answer YES or NO",
                path=path,
                hint="fill in every item of `skillstage signoff template`",
            )
        answers[str(item)] = "YES" if text in _YES else "NO"
    return FilledChecklist(answers, stated)


_NULL_TAG = "tag:yaml.org,2002:null"


def _as_written(root: yaml.Node | None) -> dict[str, str]:
    """The form's header fields (`STATED`: who, which skill, version, digest, ticket) as the text
    written in the file. YAML would read `approver: 0102` as the octal number 66, `version: 1.10`
    as 1.1 and `approver: yes` as true; an identity is compared as written. A field left empty
    (or `null`) is ""."""
    if not isinstance(root, yaml.MappingNode):
        return {}
    written = {}
    for key, value in root.value:
        if isinstance(value, yaml.ScalarNode) and key.value in STATED:
            # (a plain scalar's text as written; a quoted one's text between its quotes)
            plain_null = value.tag == _NULL_TAG and not value.style  # (C loader: "")
            written[str(key.value)] = "" if plain_null else str(value.value).strip()
    return written


def _form_mismatches(stated: Mapping[str, str], actual: Mapping[str, str]) -> list[str]:
    """How a form's header differs from the sign-off being recorded."""

    def plain(key: str, value: str) -> str:
        value = " ".join(value.replace("->", "→").split())
        return value.upper() if key == "approval_decision" else value

    return [
        f"{key} is {value!r} in the form, {actual[key]!r} here"
        for key, value in stated.items()
        if plain(key, value) != plain(key, actual[key])
    ]


_TICKET = re.compile(r"\S{1,200}\Z")


def _check_ticket(ticket: str) -> None:
    if not _TICKET.match(ticket or ""):
        raise UsageError(
            f"--ticket {ticket!r} is not one word of at most 200 characters",
            hint="e.g. --ticket APPROVAL_20251020_001",
        )


def approve(
    project: Project,
    store: Store,
    name: str,
    *,
    to_stage: str,
    ticket: str,
    decision: str,
    approver: str,
    checklist: dict[str, str] | None = None,
    stated: Mapping[str, str] | None = None,
    notes: str | None = None,
    at: dt.datetime | None = None,
) -> SignOffResult:
    """Record a sign-off of the copy of `name` that would move into `to_stage`: `checklist`, the
    answers; `stated`, what the filled-in form says it is for (`FilledChecklist.stated`), which
    must be this sign-off (skill, version, digest, move, ticket, approver, decision)."""
    given, decision = decision, decision.strip().upper()
    if decision not in DECISIONS:
        raise UsageError(
            f"decision {given!r} is not one of {', '.join(d.lower() for d in DECISIONS)}"
        )
    _check_ticket(ticket)
    from_stage, skill = candidate(project, name, to_stage)
    problem = signoff_problem(project, skill.frontmatter.author, approver)
    if problem and not project.config.approvals.approvers:
        raise ConfigError(problem, path=project.source)  # nobody may approve: a setup error
    if problem:
        raise ApprovalError(problem, hint="[approvals] in skillstage.toml says who may approve")
    mismatches = _form_mismatches(
        stated or {},
        {
            "approval_ticket": ticket,
            "skill_name": skill.name,
            "version": skill.version,
            "digest": skill.digest,
            "promotion": f"{from_stage} → {to_stage}",
            "approver": approver,
            "approval_decision": decision,
            "signature": approver,
        },
    )
    if mismatches:
        raise ApprovalError(
            "the checklist was filled in for another sign-off: " + "; ".join(mismatches),
            hint=f"fill in a fresh `skillstage signoff template {name} --to {to_stage}` for "
            "this copy, or give the options the form states",
        )
    answers = dict(checklist or {})
    required = review_items(project, to_stage)
    if decision == "APPROVED":
        unanswered = [item for item in required if answers.get(item) != "YES"]
        if unanswered:
            raise ApprovalError(
                f"an approval needs every checklist item YES; not YES: {', '.join(unanswered)}",
                hint=f"fill in `skillstage signoff template {name} --to {to_stage}` and pass it "
                "with --checklist FILE",
            )
    now = at or dt.datetime.now(dt.UTC)
    with store.atomic() as tx:
        record = tx.register(skill, at=now)
        store_metrics.add_signoff(
            tx,
            skill_id=record.skill_id,
            version_id=record.version_id,
            digest=skill.digest,
            from_stage=from_stage,
            to_stage=to_stage,
            ticket=ticket,
            decision=decision,
            approver=approver,
            checklist=answers,
            notes=notes,
            at=now,
        )
        event_id = tx.append_event(
            "approval",
            name=skill.name,
            version=skill.version,
            digest=skill.digest,
            from_stage=from_stage,
            to_stage=to_stage,
            actor=approver,
            approver=approver,
            approval_ticket=ticket,
            reason=decision + (f": {notes}" if notes else ""),
            success=decision == "APPROVED",
            path=str(skill.path),
            details={"decision": decision, "checklist": answers},
            at=now,
        )
    return SignOffResult(
        skill.name,
        skill.version,
        skill.digest,
        from_stage,
        to_stage,
        ticket,
        decision,
        approver,
        answers,
        notes,
        now,
        event_id,
    )


def _scalar(text: str) -> str:
    """`text` as a YAML value that reads back as itself (quoted when plain would not)."""
    plain = "\n" not in text and " #" not in text and text.strip() == text
    try:
        plain = plain and yaml.safe_load(text) == text
    except yaml.YAMLError:
        plain = False
    return text if plain else json.dumps(text)


def _number(value: Any) -> str:
    return "null" if value is None else f"{value:.2f}" if isinstance(value, float) else str(value)


def template(
    project: Project, store: Store, name: str, *, to_stage: str, approver: str, ticket: str
) -> str:
    """Seed 002 §4.2's checklist as YAML, with the automated checks filled in from the store."""
    _check_ticket(ticket)
    from_stage, skill = candidate(project, name, to_stage)
    transition = next(
        t
        for t in project.config.transitions
        if (t.from_stage, t.to_stage) == (from_stage, to_stage)
    )
    thresholds = transition.thresholds
    ingest_on_demand(project, store)
    with store.reading() as tx:
        skill_id = tx.skill_id(skill.name)
        run = (
            store_metrics.latest_eval_run(tx, skill_id, skill.digest)
            if skill_id is not None
            else None
        )
        rows = (
            store_metrics.execution_rows(
                tx,
                skill_id,
                digest=skill.digest,
                since=stay_start(tx, skill_id, from_stage, skill.digest),
                # (benchmark runs are the evidence of a move on evals, never of one on use)
                in_use=thresholds.evidence == "executions",
            )
            if skill_id is not None
            else None
        )
    evals = run.summary if run is not None else {}
    live = summarise(rows) if rows is not None else None
    use_live = thresholds.evidence == "executions" and live is not None
    fidelity = live.pattern_fidelity if use_live and live else evals.get("pattern_fidelity")
    quality = live.outcome_quality if use_live and live else evals.get("outcome_quality")
    fp_rate = live.false_positive_rate if use_live and live else evals.get("false_positive_rate")
    fn_count = (
        sum(rows.columns["false_negative"]) if use_live and rows else evals.get("false_negatives")
    )
    lines = [
        f"approval_ticket: {_scalar(ticket)}",
        f"skill_name: {_scalar(skill.name)}",
        f"version: {_scalar(skill.version)}",
        f"digest: {_scalar(skill.digest)}",
        f"promotion: {from_stage} → {to_stage}",
        f"approver: {_scalar(approver)}",
        f"date: {dt.datetime.now(dt.UTC):%Y-%m-%d}",
        "",
        "automated_checks:",
        f"  pattern_fidelity: {_number(fidelity)}  # >= {thresholds.min_pattern_fidelity:.2f} "
        "required",
        f"  outcome_quality: {_number(quality)}  # >= {thresholds.min_outcome_quality:.2f} "
        "required",
        f"  execution_count: {live.count if live else 0}  # >= {thresholds.min_executions} "
        "required",
        f"  test_pass_rate: {_number(evals.get('pass_rate'))}  # >= 0.95 required",
        f"  false_positive_rate: {_number(fp_rate)}  # < "
        f"{thresholds.max_false_positive_rate:.2f} required",
        f"  false_negative_count: {_number(fn_count)}  # 0 required for critical skills",
        "",
        "human_review:  # answer YES or NO",
    ]
    lines += [f"  {item}: NO  # {what}" for item, what in review_items(project, to_stage).items()]
    lines += [
        "",
        "approval_decision: APPROVED  # APPROVED | REJECTED | NEEDS_ITERATION",
        "",
        "notes: |",
        "  ",
        "",
        f"signature: {_scalar(approver)}",
        f"timestamp: {dt.datetime.now(dt.UTC):%Y-%m-%dT%H:%M:%SZ}",
    ]
    return "\n".join(lines) + "\n"
