"""Seed 002's promotion criteria on real projects, real execute.sh scripts and real stores
(SQLite and PostgreSQL): the `metrics` gate (benchmark evals, live executions, regression
against the prototype baseline), the `approval` gate and human sign-off, comparisons and
demotion."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import DEFAULT_CONFIG_TOML, Project, load_config_file
from skillstage.errors import ConfigError, ConflictError, SkillstageError, UsageError
from skillstage.lifecycle import demote
from skillstage.lifecycle.gates import GateResult
from skillstage.lifecycle.signoff import ApprovalError, SignOffResult, approve, read_checklist
from skillstage.services import Registry
from skillstage.skill.read import read_skill
from skillstage.store import Store
from tests.skilltree import write_skill

PROTOTYPE = Path(".claude/skills/prototype")
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
NAME = "spam-filter"
HOUR = dt.timedelta(hours=1)
# For rules decided in Python before or after the store's queries, which the tests marked for
# both dialects already exercise: SQLite only, to keep the suite fast.
SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)

# Seed 002 §4.2's human_review items, written out here rather than imported: the test holds the
# source to the seed.
REVIEW = [
    "wsp_50_approval",
    "test_coverage",
    "instruction_clarity",
    "pattern_completeness",
    "dependency_validation",
    "security_review",
    "performance_review",
]
PRODUCTION_REVIEW = [
    "production_readiness",
    "integration_approval",
    "capacity_planning",
    "monitoring_approval",
    "rollback_plan_tested",
    "documentation_updated",
]

# Reads {"text": ...} on stdin; prints a decision and the breadcrumbs of how it got there.
EXECUTE = """#!/bin/bash
text=$(cat)
if grep -q 'slow' <<<"$text"; then sleep 10; fi
if grep -qiE 'buy now|free money|click here' <<<"$text"; then decision=spam; else decision=allow; fi
crumbs='[{"event": "checked_blocklist"}, {"event": "checked_links"}, {"event": "decided"}]'
printf '{"decision": "%s", "breadcrumbs": %s}\\n' "$decision" "$crumbs"
"""
PATTERNS = """\
patterns:
  - id: blocklist
    description: checks the blocklist first
    keywords: [checked_blocklist]
    order: 1
  - id: links
    description: then inspects links
    regex: "checked_links"
    order: 2
  - id: decision
    description: ends with a decision
    regex: '"decided"'
    order: 3
"""
# (text, expected decision, critical): ten cases, so that the benchmark run alone is a baseline
# of min_comparison_sample executions.
CASES = [
    ("buy now, limited offer", "spam", True),
    ("hello everyone", "allow", False),
    ("FREE MONEY here", "spam", True),
    ("great stream today", "allow", False),
    ("click here for prizes", "spam", False),
    ("what time is it?", "allow", False),
    ("buy now!!!", "spam", False),
    ("thanks for the help", "allow", False),
    ("free money, click here", "spam", True),
    ("see you tomorrow", "allow", False),
]


def configure(
    project: Project,
    *,
    approvers: Iterable[str] = ("alice", "carol"),
    allow_self_approval: bool = False,
    eval_timeout: float | None = None,
) -> Project:
    """The default skillstage.toml with seed 002's gates on both transitions (as the demo
    sets it up), the given approvers, a month of clock skew allowed, and optionally a shorter
    per-case eval timeout."""
    config = project.root / "skillstage.toml"
    text = DEFAULT_CONFIG_TOML
    replacements = {
        '"security"]': '"security", "metrics", "approval"]',
        "approvers = []": f"approvers = {json.dumps(list(approvers))}",
        "allow_self_approval = false": f"allow_self_approval = {str(allow_self_approval).lower()}",
        # The tests record executions ahead of now to stand for time passing.
        "max_clock_skew_minutes = 10": "max_clock_skew_minutes = 43200",
    }
    if eval_timeout is not None:
        replacements["eval_timeout_seconds = 30"] = f"eval_timeout_seconds = {eval_timeout}"
    for old, new in replacements.items():
        assert old in text, f"the default config has no {old!r}"
        text = text.replace(old, new)
    config.write_text(text, encoding="utf-8")
    return load_config_file(config)


def spam_filter(
    project: Project,
    where: Path = PROTOTYPE,
    *,
    version: str = "1.0.0",
    author: str = "carol",
    cases: list[tuple[str, str, bool]] = CASES,
    body: str = "# Spam filter\n\nCheck the blocklist, then the links, then decide.\n",
) -> Path:
    """The demo's spam filter: a real execute.sh, patterns.yaml and evals/evals.json."""
    evals = {
        "skill_name": NAME,
        "negative_decisions": ["allow"],
        "evals": [
            {"id": f"case-{i + 1}", "input": {"text": text}, "expected": decision, "critical": crit}
            for i, (text, decision, crit) in enumerate(cases)
        ],
    }
    path = write_skill(
        project.root / where,
        NAME,
        frontmatter={
            "name": NAME,
            "version": version,
            "description": "Flag chat messages that are spam. Use when moderating a live chat.",
            "author": author,
            "metadata": {"max_execution_time_ms": "2000"},
        },
        body=body,
        files={"patterns.yaml": PATTERNS, "evals/evals.json": json.dumps(evals)},
    )
    (path / "execute.sh").write_text(EXECUTE, encoding="utf-8")
    (path / "execute.sh").chmod(0o755)
    return path


def checklist(*items: str, no: Iterable[str] = ()) -> dict[str, str]:
    refused = set(no)
    return {item: "NO" if item in refused else "YES" for item in items}


def gate(project: Project, name: str) -> GateResult:
    """One gate of the skill's next move, as `skillstage status` reports it."""
    readiness = api.readiness(project, NAME)
    (found,) = [g for g in readiness.gates if g.gate == name]
    return found


def criterion(result: GateResult, name: str) -> dict[str, Any]:
    (found,) = [c for c in result.criteria if c["name"] == name]
    return found


def failing(result: GateResult) -> list[str]:
    return [c["name"] for c in result.criteria if not c["passed"]]


def record(
    project: Project,
    digest: str,
    fidelities: Iterable[float | None],
    *,
    start: dt.datetime,
    step: dt.timedelta = dt.timedelta(minutes=1),
    **fields: Any,
) -> None:
    """One execution of 1.0.0 per fidelity, `step` apart from `start`, into the inbox."""
    for index, fidelity in enumerate(fidelities):
        api.record_execution(
            project,
            NAME,
            version="1.0.0",
            digest=digest,
            timestamp=start + index * step,
            pattern_fidelity=fidelity,
            **{
                "outcome_quality": 1.0,
                # Faster than any benchmark case (a bash process at least), so that execution
                # time never looks worse than the prototype's.
                "execution_time_ms": 1.0,
                **fields,
            },
        )


def sign_off(
    project: Project,
    approver: str = "alice",
    *,
    ticket: str = "APPROVAL_T_001",
    to_stage: str = "staged",
) -> SignOffResult:
    """An approval through the API, with every checklist item of `to_stage` YES."""
    return api.approve(
        project,
        NAME,
        to_stage=to_stage,
        ticket=ticket,
        decision="approved",
        approver=approver,
        checklist_file=_yes_file(project, to_stage),
    )


def into_staging(project: Project) -> str:
    """The demo's prototype → staged move: eval, sign-off by alice, promotion; the digest."""
    outcome = api.run_eval(project, NAME)
    assert outcome.run.summary.pass_rate == 1.0
    sign_off(project)
    (result,) = api.promote(
        project, [NAME], actor="tester", approver="alice", approval_ticket="APPROVAL_T_001"
    )
    assert result.success, result.error
    return outcome.digest


def _yes_file(project: Project, to_stage: str) -> Path:
    """A filled-in checklist: every item a move into `to_stage` needs, YES."""
    items = REVIEW + (PRODUCTION_REVIEW if to_stage == "production" else [])
    path = project.root / f"signoff-{to_stage}.yaml"
    path.write_text(
        "human_review:\n" + "".join(f"  {item}: YES\n" for item in items), encoding="utf-8"
    )
    return path


# -- four-eyes and who may approve ---------------------------------------------------------------


@SQLITE_ONLY
def test_the_author_cannot_approve_their_own_skill(project: Project) -> None:
    project = configure(project)
    spam_filter(project, author="Carol")  # case differs from the approver list: still her
    with pytest.raises(ApprovalError, match=r"carol is the skill's author .*four-eyes"):
        sign_off(project, "carol")
    with pytest.raises(ApprovalError, match=r"bob is not an approver \(approvers: alice, carol\)"):
        sign_off(project, "bob")
    with pytest.raises(UsageError, match="no skill named"):
        api.history(project, NAME)  # nothing refused was recorded, not even the skill
    assert "no sign-off of spam-filter 1.0.0" in gate(project, "approval").message
    assert not any("no approvers" in d for d in gate(project, "approval").details)
    nobody = configure(project, approvers=())
    assert gate(nobody, "approval").details[0].startswith("no approvers are configured: add")

    allowed = configure(project, allow_self_approval=True)
    sign_off(allowed, "carol")
    approved = gate(allowed, "approval")
    assert approved.status == "pass"
    assert approved.message.startswith("approved by carol (APPROVAL_T_001, ")


@SQLITE_ONLY
def test_the_approval_gate_applies_four_eyes_to_a_recorded_sign_off(project: Project) -> None:
    allowed = configure(project, allow_self_approval=True)
    spam_filter(allowed)
    sign_off(allowed, "carol")
    # The rule tightened after the sign-off: the gate judges it by today's rules.
    strict = configure(project)
    refused = gate(strict, "approval")
    assert (refused.status, refused.message) == (
        "fail",
        "carol is the skill's author and cannot approve it (four-eyes rule)",
    )


@SQLITE_ONLY
def test_with_no_approvers_configured_nobody_can_approve(project: Project) -> None:
    nobody = configure(project, approvers=())
    spam_filter(nobody)
    with pytest.raises(ConfigError, match="no approvers are configured"):  # exit 2: set-up
        sign_off(nobody)
    # A sign-off recorded while alice was an approver stops counting once the list is emptied.
    approvers = configure(project)
    sign_off(approvers)
    assert gate(approvers, "approval").status == "pass"
    emptied = gate(configure(project, approvers=()), "approval")
    assert emptied.status == "fail"
    assert emptied.message.startswith("no approvers are configured: add [approvals] approvers")


# -- a sign-off belongs to one digest ------------------------------------------------------------


def test_a_changed_digest_voids_the_approval(project: Project) -> None:
    project = configure(project)
    path = spam_filter(project)
    approved_digest = read_skill(path).digest
    signoff = sign_off(project)
    assert signoff.digest == approved_digest
    assert gate(project, "approval").status == "pass"

    # Edited without a version bump: a new digest, no sign-off of it.
    skill_md = path / "SKILL.md"
    skill_md.write_text(skill_md.read_text() + "\nAlso check emoji spam.\n")
    edited = read_skill(path).digest
    assert edited != approved_digest
    voided = gate(project, "approval")
    assert voided.status == "fail"
    assert voided.message == (
        f"no sign-off of spam-filter 1.0.0 ({edited[:12]}) for prototype → staged"
    )
    # ... and 1.0.0 is the approved content forever: the changed copy needs a new version.
    with pytest.raises(ConflictError) as raised:
        sign_off(project, ticket="APPROVAL_T_002")
    assert raised.value.code == "VERSION_DIGEST_CONFLICT"

    skill_md.write_text(skill_md.read_text().replace("version: 1.0.0", "version: 1.0.1"))
    bumped = read_skill(path).digest
    still = gate(project, "approval")
    assert still.status == "fail"
    assert still.message.startswith(f"no sign-off of spam-filter 1.0.1 ({bumped[:12]})")
    sign_off(project, ticket="APPROVAL_T_002")
    assert gate(project, "approval").message.startswith("approved by alice (APPROVAL_T_002, ")


# -- the newest decision counts -----------------------------------------------------------------


def test_a_rejection_blocks_until_a_later_approval(project: Project, opened: Store) -> None:
    project = configure(project)
    spam_filter(project)
    t = dt.datetime.now(dt.UTC) - dt.timedelta(hours=3)

    def decide(ticket: str, decision: str, at: dt.datetime, notes: str | None = None) -> None:
        approve(
            project,
            opened,
            NAME,
            to_stage="staged",
            ticket=ticket,
            decision=decision,
            approver="alice",
            checklist=checklist(*REVIEW),
            notes=notes,
            at=at,
        )

    decide("APPROVAL_T_001", "approved", t)
    assert gate(project, "approval").status == "pass"
    decide("APPROVAL_T_002", "rejected", t + HOUR, notes="benchmarks miss unicode spam")
    rejected = gate(project, "approval")
    assert rejected.status == "fail"
    assert rejected.message == (
        f"REJECTED by alice (APPROVAL_T_002, {t + HOUR:%Y-%m-%d %H:%M}): "
        "benchmarks miss unicode spam"
    )
    assert rejected.details == ["a later approval of this content lifts it"]

    # An approval dated before the rejection (recorded after it) does not lift it: time decides.
    decide("APPROVAL_T_003", "approved", t + HOUR / 2)
    assert gate(project, "approval").message.startswith("REJECTED by alice (APPROVAL_T_002")

    decide("APPROVAL_T_004", "approved", t + 2 * HOUR)
    lifted = gate(project, "approval")
    assert lifted.status == "pass" and "APPROVAL_T_004" in lifted.message

    decide("APPROVAL_T_005", "needs_iteration", t + 3 * HOUR)
    assert gate(project, "approval").message.startswith("NEEDS_ITERATION by alice")
    decisions = [(e.kind, e.approval_ticket, e.success) for e in opened.events(NAME)]
    assert decisions == [
        ("approval", "APPROVAL_T_005", False),
        ("approval", "APPROVAL_T_004", True),
        ("approval", "APPROVAL_T_002", False),
        ("approval", "APPROVAL_T_003", True),
        ("approval", "APPROVAL_T_001", True),
    ]


# -- the checklist -------------------------------------------------------------------------------


@SQLITE_ONLY
def test_an_approval_needs_every_checklist_item_yes(project: Project, opened: Store) -> None:
    project = configure(project)
    spam_filter(project)
    with pytest.raises(ApprovalError) as raised:
        approve(
            project,
            opened,
            NAME,
            to_stage="staged",
            ticket="APPROVAL_T_001",
            decision="approved",
            approver="alice",
            checklist=checklist(*REVIEW, no=["security_review"]),
        )
    assert raised.value.message == (
        "an approval needs every checklist item YES; not YES: security_review"
    )
    with pytest.raises(ApprovalError, match="not YES: " + ", ".join(REVIEW)):
        api.approve(
            project,
            NAME,
            to_stage="staged",
            ticket="APPROVAL_T_001",
            decision="approved",
            approver="alice",
        )
    # A rejection needs no checklist.
    rejected = approve(
        project,
        opened,
        NAME,
        to_stage="staged",
        ticket="APPROVAL_T_001",
        decision="rejected",
        approver="alice",
    )
    assert rejected.decision == "REJECTED"


@SQLITE_ONLY
def test_production_needs_the_six_production_items(project: Project) -> None:
    project = configure(project)
    spam_filter(project, STAGING)
    staged_only = _yes_file(project, "staged")
    with pytest.raises(ApprovalError) as raised:
        api.approve(
            project,
            NAME,
            to_stage="production",
            ticket="APPROVAL_T_002",
            decision="approved",
            approver="alice",
            checklist_file=staged_only,
        )
    assert raised.value.message.endswith("not YES: " + ", ".join(PRODUCTION_REVIEW))
    done = sign_off(project, ticket="APPROVAL_T_002", to_stage="production")
    assert (done.from_stage, done.to_stage) == ("staged", "production")
    assert sorted(done.checklist) == sorted(REVIEW + PRODUCTION_REVIEW)
    assert gate(project, "approval").status == "pass"


@SQLITE_ONLY
def test_the_filled_in_template_is_the_checklist(project: Project) -> None:
    project = configure(project)
    spam_filter(project)
    text = api.signoff_template(
        project, NAME, to_stage="staged", approver="alice", ticket="APPROVAL_T_001"
    )
    path = project.root / "signoff.yaml"
    path.write_text(text)
    assert read_checklist(path).answers == checklist(*REVIEW, no=REVIEW)  # the template says NO
    path.write_text(text.replace(": NO  #", ": YES  #"))
    filled = read_checklist(path)
    assert filled.answers == checklist(*REVIEW)
    assert (filled.stated["approval_ticket"], filled.stated["promotion"]) == (
        "APPROVAL_T_001",
        "prototype → staged",
    )
    path.write_text(text.replace("security_review: NO", "security_review: maybe"))
    with pytest.raises(UsageError, match=r"human_review.security_review is 'maybe': answer YES"):
        read_checklist(path)
    path.write_bytes(b"\xff\xfe human_review")
    with pytest.raises(UsageError, match="the checklist is not UTF-8 text"):
        read_checklist(path)
    path.write_text(text.split("human_review:")[0])
    with pytest.raises(UsageError, match="the checklist has no human_review section"):
        read_checklist(path)


@SQLITE_ONLY
def test_a_form_filled_in_for_another_sign_off_is_refused(project: Project, opened: Store) -> None:
    project = configure(project, approvers=("alice", "bob"))
    spam_filter(project)
    text = api.signoff_template(
        project, NAME, to_stage="staged", approver="alice", ticket="APPROVAL_T_001"
    ).replace(": NO  #", ": YES  #")
    digest = read_skill(project.root / PROTOTYPE / NAME).digest
    path = project.root / "signoff.yaml"

    def approve_with(form: str, **options: str) -> SignOffResult:
        path.write_text(form)
        given = {"ticket": "APPROVAL_T_001", "decision": "approved", "approver": "alice"}
        return api.approve(
            project, NAME, to_stage="staged", checklist_file=path, **{**given, **options}
        )

    for form, options, why in [
        (text.replace(digest, "f" * 64), {}, f"digest is '{'f' * 64}' in the form, '{digest}'"),
        (text, {"ticket": "APPROVAL_T_002"}, "approval_ticket is 'APPROVAL_T_001' in the form"),
        (text, {"approver": "bob"}, "approver is 'alice' in the form, 'bob' here"),
        (text, {"decision": "rejected"}, "approval_decision is 'APPROVED' in the form"),
        (text.replace("skill_name: spam-filter", "skill_name: other"), {}, "skill_name is 'other'"),
        (text.replace("prototype → staged", "staged → production"), {}, "promotion is 'staged"),
    ]:
        with pytest.raises(ApprovalError, match="filled in for another sign-off") as raised:
            approve_with(form, **options)
        assert why in raised.value.message
    assert [e for e in opened.events(NAME) if e.kind == "approval"] == []
    # The same move written with an ASCII arrow, and the decision in lower case, are the form's.
    plain = text.replace("prototype → staged", "prototype -> staged")
    done = approve_with(plain.replace("APPROVED  #", "approved  #"))
    assert (done.decision, done.ticket) == ("APPROVED", "APPROVAL_T_001")


@SQLITE_ONLY
def test_the_template_quotes_what_yaml_would_misread_and_checks_the_ticket(
    project: Project,
) -> None:
    project = configure(project)
    spam_filter(project)
    text = api.signoff_template(
        project, NAME, to_stage="staged", approver="alice: admin # ops", ticket="APPROVAL_1"
    )
    path = project.root / "signoff.yaml"
    path.write_text(text)
    assert read_checklist(path).stated["approver"] == "alice: admin # ops"
    for ticket in ("T\nx: injected", "bad ticket!"):
        with pytest.raises(UsageError, match="is not one word"):
            api.signoff_template(project, NAME, to_stage="staged", approver="a", ticket=ticket)


def test_a_ticket_or_approver_that_is_not_the_sign_off_fails_the_gate(project: Project) -> None:
    project = configure(project)
    source = spam_filter(project)
    api.run_eval(project, NAME)
    sign_off(project)
    (wrong,) = api.promote(project, [NAME], actor="tester", approval_ticket="APPROVAL_T_999")
    assert not wrong.success
    (approval,) = [g for g in wrong.gates if g.blocks]
    assert (approval.gate, approval.message) == (
        "approval",
        "ticket APPROVAL_T_999 is not the recorded sign-off (APPROVAL_T_001)",
    )
    (other,) = api.promote(
        project, [NAME], actor="tester", approver="bob", approval_ticket="APPROVAL_T_001"
    )
    assert [g.message for g in other.gates if g.blocks] == ["bob did not sign this off (alice did)"]
    assert source.is_dir()
    (right,) = api.promote(
        project, [NAME], actor="tester", approver="alice", approval_ticket="APPROVAL_T_001"
    )
    assert right.success, right.error
    promoted = [e for e in api.history(project, NAME) if e.kind == "promote"]
    # Refused attempts are audited with the approver and ticket they gave (history: newest first).
    assert [(e.success, e.approver, e.approval_ticket) for e in promoted[::-1]] == [
        (False, None, "APPROVAL_T_999"),
        (False, "bob", "APPROVAL_T_001"),
        (True, "alice", "APPROVAL_T_001"),
    ]


# -- prototype → staged: benchmark evals ---------------------------------------------------------


def test_no_eval_run_of_this_content_fails_the_metrics_gate(project: Project) -> None:
    project = configure(project)
    path = spam_filter(project)
    missing = gate(project, "metrics")
    assert missing.status == "fail"
    (only,) = missing.criteria
    assert only["name"] == "benchmark run" and not only["passed"]
    assert only["missing"].endswith("run `skillstage eval spam-filter`")

    outcome = api.run_eval(project, NAME)
    assert outcome.results_path.is_file()
    passed = gate(project, "metrics")
    assert passed.status == "pass", passed.message
    assert criterion(passed, "benchmark cases executed")["actual"] == "10/10"
    assert criterion(passed, "pattern fidelity")["actual"] == 1.0

    # The run belongs to the content it ran: an edit needs a new one.
    (path / "SKILL.md").write_text((path / "SKILL.md").read_text() + "\nMore rules.\n")
    edited = gate(project, "metrics")
    assert edited.status == "fail"
    assert f"no eval run of digest {read_skill(path).digest[:12]}" in edited.criteria[0]["missing"]


@SQLITE_ONLY
def test_a_missed_critical_case_fails_on_critical_false_negatives(project: Project) -> None:
    project = configure(project)
    # "cheap pills" is spam the script does not know: a critical case it gets wrong.
    spam_filter(project, cases=[*CASES[:9], ("cheap pills, cheap pills", "spam", True)])
    outcome = api.run_eval(project, NAME)
    assert outcome.run.summary.critical_false_negatives == 1
    result = gate(project, "metrics")
    assert result.status == "fail"
    assert failing(result) == ["critical false negatives"]
    missed = criterion(result, "critical false negatives")
    assert (missed["actual"], missed["required"], missed["missing"]) == (
        1,
        "<= 0",
        "a critical case was missed",
    )
    assert criterion(result, "outcome quality")["actual"] == pytest.approx(0.9)


@SQLITE_ONLY
def test_a_case_that_times_out_fails_benchmark_cases_executed(project: Project) -> None:
    project = configure(project, eval_timeout=1)
    spam_filter(project, cases=[*CASES[:5], ("slow: hello", "allow", False)])
    outcome = api.run_eval(project, NAME)
    (slow,) = [case for case in outcome.run.cases if case.decision is None]
    assert slow.error == "execute.sh did not finish within 1 s and was killed"
    assert slow.execution_time_ms < 5000  # killed, not waited for
    result = gate(project, "metrics")
    assert failing(result) == ["benchmark cases executed"]
    executed = criterion(result, "benchmark cases executed")
    assert (executed["actual"], executed["missing"]) == ("5/6", "1 case(s) did not run")


# -- staged → production: live executions -------------------------------------------------------


def test_too_few_executions_fail_with_counts(project: Project) -> None:
    project = configure(project)
    digest = read_skill(spam_filter(project, STAGING)).digest
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    record(project, digest, [1.0] * 42, start=start)
    short = gate(project, "metrics")
    assert short.status == "fail"
    assert failing(short) == ["executions"]
    assert short.message == "1 of 7 criteria not met: executions 42"
    assert "[FAIL] executions: 42 (required >= 100) — 42/100 executions" in short.details
    assert criterion(short, "executions")["missing"] == "42/100 executions"

    record(project, digest, [1.0, 0.95, 1.0, 0.9] * 15, start=start + dt.timedelta(hours=1))
    enough = gate(project, "metrics")
    assert enough.status == "pass", enough.message
    assert criterion(enough, "executions")["actual"] == 102
    assert criterion(enough, "mean execution time ms")["required"] == "< 2000"


@SQLITE_ONLY
def test_a_critical_failure_in_the_window_or_slow_runs_fail(project: Project) -> None:
    project = configure(project)
    digest = read_skill(spam_filter(project, STAGING)).digest
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    record(project, digest, [1.0] * 100, start=start)
    record(project, digest, [1.0], start=start + dt.timedelta(hours=3), critical=True)
    result = gate(project, "metrics")
    assert failing(result) == ["critical failures in the last 100"]
    assert criterion(result, "critical failures in the last 100")["actual"] == 1

    # The skill's own limit (metadata.max_execution_time_ms), below the runs' 1 ms.
    path = project.root / STAGING / NAME
    skill_md = path / "SKILL.md"
    assert "max_execution_time_ms: '2000'" in skill_md.read_text()
    skill_md.write_text(skill_md.read_text().replace("'2000'", "'0.5'"))
    digest = read_skill(path).digest
    record(project, digest, [1.0] * 100, start=start)
    timed = gate(project, "metrics")
    assert failing(timed) == ["mean execution time ms"]
    assert criterion(timed, "mean execution time ms")["missing"] == "must drop below 0.5"


# -- regression against the prototype baseline ---------------------------------------------------


def test_regression_against_the_prototype_baseline(project: Project, opened: Store) -> None:
    project = configure(project)
    spam_filter(project)
    entered = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    api.list_skills(project, stage="prototype", now=entered)  # in prototype since then
    digest = read_skill(project.root / PROTOTYPE / NAME).digest
    record(project, digest, [1.0, 1.0, 0.95, 1.0, 0.9] * 6, start=entered + dt.timedelta(hours=1))
    assert into_staging(project) == digest
    after = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)

    record(project, digest, [1.0, 0.95, 1.0, 0.9, 1.0] * 6, start=after)
    similar = criterion(gate(project, "metrics"), "no regression against the prototype baseline")
    assert similar["passed"] and similar["actual"] == "none worse"

    record(project, digest, [0.6, 0.67, 0.7, 0.5, 0.67] * 12, start=after + dt.timedelta(hours=1))
    result = gate(project, "metrics")
    worse = criterion(result, "no regression against the prototype baseline")
    assert not worse["passed"]
    assert worse["actual"].startswith("pattern_fidelity p=")
    assert worse["missing"] == "significantly worse: pattern_fidelity"
    assert "no regression against the prototype baseline" in failing(result)

    compared = api.compare_versions(project, NAME, "prototype", "staged")
    # Baseline: 30 recorded runs and the 10 benchmark cases, all during the prototype stay.
    assert (compared.comparison.count_a, compared.comparison.count_b) == (40, 90)
    assert [m.metric for m in compared.comparison.regressions] == ["pattern_fidelity"]
    assert compared.a.until is not None and compared.b.since == compared.a.until

    (found,) = demote.check(project, opened).demotions
    assert "regression against the baseline: significantly worse: pattern_fidelity" in found.rules

    # `compare` judges as the gate does, with the configured margin: a drop of 0.3 within 0.5.
    config = project.root / "skillstage.toml"
    config.write_text(
        config.read_text().replace(
            "regression_score_margin = 0.02", "regression_score_margin = 0.5"
        ),
        encoding="utf-8",
    )
    lenient = load_config_file(config)
    assert api.compare_versions(lenient, NAME, "prototype", "staged").comparison.regressions == []
    assert criterion(gate(lenient, "metrics"), "no regression against the prototype baseline")[
        "passed"
    ]


def test_a_metric_the_candidate_did_not_record_is_no_proof_of_no_regression(
    project: Project,
) -> None:
    project = configure(project)
    spam_filter(project)
    digest = into_staging(project)  # the baseline: ten benchmark runs, fidelity scored
    unscored: list[float | None] = [None] * 107
    record(project, digest, [*unscored, 0.1, 0.1, 0.1], start=dt.datetime.now(dt.UTC))
    verdict = criterion(gate(project, "metrics"), "no regression against the prototype baseline")
    assert not verdict["passed"]
    assert verdict["missing"] == (
        "insufficient data to compare: pattern_fidelity has 3 value(s) among the candidate's"
        " executions"
    )


def test_skill_metrics_of_a_stage_are_its_versions_stay_there(project: Project) -> None:
    project = configure(project)
    spam_filter(project)
    entered = dt.datetime.now(dt.UTC) - dt.timedelta(days=10)
    api.list_skills(project, stage="prototype", now=entered)
    digest = read_skill(project.root / PROTOTYPE / NAME).digest
    record(project, digest, [0.8] * 30, start=entered + dt.timedelta(hours=1))
    into_staging(project)  # + ten benchmark runs at 1.0, in prototype
    record(project, digest, [0.5] * 90, start=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))

    def measured(version: str, timeframe: str = "all") -> tuple[int, float | None]:
        summary = api.skill_metrics(
            project, NAME, timeframe=timeframe, version=version, include_benchmark=True
        )
        return summary.count, summary.pattern_fidelity

    count, fidelity = measured("prototype")
    assert count == 40 and fidelity == pytest.approx((30 * 0.8 + 10 * 1.0) / 40)
    assert measured("staged") == (90, pytest.approx(0.5))
    assert measured("1.0.0")[0] == 130
    assert measured("1.0.0", "7d")[0] == 100  # the prototype runs of ten days ago are out
    # By default, the executions in use only: not the ten benchmark runs.
    in_use = Registry(project).get_skill_metrics(NAME, "all", "1.0.0")
    assert (in_use.count, in_use.pattern_fidelity) == (120, pytest.approx((24 + 45) / 120))
    with pytest.raises(UsageError, match="timeframe"):
        api.skill_metrics(project, NAME, timeframe="99999999999d")


def test_too_few_executions_on_a_side_is_insufficient_data(project: Project) -> None:
    project = configure(project)
    spam_filter(project, cases=CASES[:6])
    api.list_skills(project, stage="prototype", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    digest = into_staging(project)  # the baseline: the six benchmark cases
    record(project, digest, [1.0] * 110, start=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    result = gate(project, "metrics")
    assert failing(result) == ["no regression against the prototype baseline"]
    short = criterion(result, "no regression against the prototype baseline")
    assert (short["actual"], short["required"], short["missing"]) == (
        "6 baseline / 110 candidate executions",
        ">= 10 on each side, of every metric the baseline has",
        "insufficient data to compare: the prototype baseline is prototype (1.0.0)'s executions"
        " there; give the benchmark >= 10 cases, or run `skillstage eval` more than once before"
        " it leaves prototype (each run records every case)",
    )
    compared = api.compare_versions(project, NAME, "prototype", "staged")
    assert compared.comparison.insufficient and compared.comparison.regressions == []


@SQLITE_ONLY
def test_benchmark_runs_in_prototype_do_not_count_as_staged_executions(project: Project) -> None:
    project = configure(project)
    spam_filter(project)
    api.list_skills(project, stage="prototype", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    digest = into_staging(project)  # ten benchmark executions, in prototype
    record(project, digest, [1.0] * 95, start=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    executions = criterion(gate(project, "metrics"), "executions")
    assert (executions["actual"], executions["passed"]) == (95, False)


def test_benchmark_runs_in_staged_are_not_live_executions(project: Project, opened: Store) -> None:
    project = configure(project)
    spam_filter(project, STAGING)
    api.list_skills(project, stage="staged")
    for _ in range(11):  # 110 benchmark executions of this digest while it is staged
        api.run_eval(project, NAME)
    executions = criterion(gate(project, "metrics"), "executions")
    assert (executions["actual"], executions["passed"]) == (0, False)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=8)
    (found,) = demote.check(project, opened, now=later).demotions
    assert found.rules[0].startswith("unable to reach 100 executions within 7 days (0/100")
    digest = read_skill(project.root / STAGING / NAME).digest
    record(project, digest, [1.0] * 3, start=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    assert criterion(gate(project, "metrics"), "executions")["actual"] == 3


def test_eval_of_changed_content_under_a_registered_version_runs_and_records_nothing(
    project: Project,
) -> None:
    project = configure(project)
    path = spam_filter(project)
    api.run_eval(project, NAME)
    inbox = project.metrics_inbox / f"{NAME}_executions.jsonl"
    results = sorted((project.state_dir / "evals" / NAME).iterdir())
    before = inbox.read_text()
    (path / "SKILL.md").write_text((path / "SKILL.md").read_text() + "\nEdited in place.\n")
    with pytest.raises(ConflictError, match="already registered"):
        api.run_eval(project, NAME)
    assert inbox.read_text() == before
    assert sorted((project.state_dir / "evals" / NAME).iterdir()) == results


def test_eval_that_changes_its_skill_records_nothing_and_a_fixed_precondition_is_no_conflict(
    project: Project, opened: Store
) -> None:
    project = configure(project)
    path = spam_filter(project)
    # Not executable: refused before anything is registered, so the fix is no "conflict".
    (path / "execute.sh").chmod(0o644)
    with pytest.raises(SkillstageError, match=r"execute\.sh is not executable"):
        api.run_eval(project, NAME)
    assert opened.find_version(NAME, "1.0.0") is None
    (path / "execute.sh").chmod(0o755)
    # A script that writes beside itself changes the content it measures: nothing recorded.
    script = (path / "execute.sh").read_text(encoding="utf-8")
    (path / "execute.sh").write_text(
        script.replace("#!/bin/bash\n", "#!/bin/bash\necho run >> run.log\n", 1),
        encoding="utf-8",
    )
    with pytest.raises(ConflictError, match=r"changed spam-filter.s files: added run\.log"):
        api.run_eval(project, NAME)
    assert opened.find_version(NAME, "1.0.0") is None
    assert not (project.metrics_inbox / f"{NAME}_executions.jsonl").exists()
    (path / "run.log").unlink()
    (path / "execute.sh").write_text(script, encoding="utf-8")
    assert api.run_eval(project, NAME).run.summary.cases_executed == len(CASES)


def test_a_skill_whose_name_is_a_path_is_refused(project: Project, tmp_path: Path) -> None:
    project = configure(project)
    path = spam_filter(project)
    text = (path / "SKILL.md").read_text(encoding="utf-8")
    for name in (str(tmp_path / "elsewhere"), "../../evil"):
        (path / "SKILL.md").write_text(
            text.replace(f"name: {NAME}", f"name: {name}", 1), encoding="utf-8"
        )
        with pytest.raises(SkillstageError, match="is a path, not a skill name"):
            api.run_eval(project, NAME)
    assert not (tmp_path / "elsewhere").exists()
    assert not list(project.root.parent.glob("evil*"))


def test_scoring_content_changed_under_a_registered_version_is_refused(project: Project) -> None:
    project = configure(project)
    path = spam_filter(project)
    api.run_eval(project, NAME)
    (path / "patterns.yaml").write_text(PATTERNS + "\n# edited\n", encoding="utf-8")
    log = project.root / "run.jsonl"
    log.write_text('{"event": "checked_blocklist"}\n')
    with pytest.raises(ConflictError, match="already registered"):
        api.score_log(project, log, NAME)


@SQLITE_ONLY
def test_a_version_promoted_out_of_prototype_has_a_baseline(project: Project) -> None:
    project = configure(project)
    spam_filter(project)  # never listed: eval, sign-off and promotion only
    digest = into_staging(project)  # ten benchmark executions at fidelity 1.0, in prototype
    record(project, digest, [0.5] * 110, start=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    baseline = criterion(gate(project, "metrics"), "no regression against the prototype baseline")
    assert baseline["actual"] != "no baseline"
    assert not baseline["passed"]


@SQLITE_ONLY
def test_a_newer_prototype_does_not_become_the_staged_versions_baseline(
    project: Project, opened: Store
) -> None:
    project = configure(project)
    spam_filter(project)
    digest = into_staging(project)  # its baseline: ten benchmark executions in prototype
    record(project, digest, [1.0] * 110, start=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))

    def verdict() -> dict[str, Any]:
        readiness = api.readiness(project, NAME, from_stage="staged")
        (metrics,) = [g for g in readiness.gates if g.gate == "metrics"]
        return criterion(metrics, "no regression against the prototype baseline")

    assert verdict()["passed"]
    # 1.1.0 enters prototype with no executions yet: the staged 1.0.0 is still judged against
    # its own prototype stay, not found short of data against the newcomer's.
    spam_filter(project, version="1.1.0", body="# Spam filter\n\nNow also checks images.\n")
    api.list_skills(project, stage="prototype")
    assert api.compare_versions(project, NAME, "prototype", "staged").a.version == "1.1.0"
    assert verdict() == {**verdict(), "passed": True, "actual": "none worse"}
    assert demote.check(project, opened).demotions == []


# -- demotion ------------------------------------------------------------------------------------


def test_demote_check_counts_only_the_executions_within_the_seven_days(
    project: Project, opened: Store
) -> None:
    project = configure(project)
    spam_filter(project, STAGING)
    api.list_skills(project, stage="staged")
    (live,) = opened.current_assignments(name=NAME)
    digest = read_skill(project.root / STAGING / NAME).digest
    # 100 executions, but on day 9: the version did not reach them within 7 days, whenever
    # the check runs.
    record(project, digest, [1.0] * 100, start=live.entered_at + dt.timedelta(days=9))
    (late,) = demote.check(project, opened, now=live.entered_at + dt.timedelta(days=10)).demotions
    assert late.rules == [
        "unable to reach 100 executions within 7 days "
        f"(0/100 by {live.entered_at + dt.timedelta(days=7):%Y-%m-%d %H:%M} UTC, "
        "100 after 10.0 days)"
    ]


def test_demote_check_with_no_minimum_of_executions_judges_fidelity_over_all(
    project: Project, opened: Store
) -> None:
    config = project.root / "skillstage.toml"
    project = configure(project)
    config.write_text(
        config.read_text().replace("\nmin_executions = 100", "\nmin_executions = 0"),
        encoding="utf-8",
    )
    project = load_config_file(config)
    spam_filter(project, STAGING)
    api.list_skills(project, stage="staged")
    (live,) = opened.current_assignments(name=NAME)
    digest = read_skill(project.root / STAGING / NAME).digest
    record(project, digest, [0.5, 0.7], start=live.entered_at + dt.timedelta(seconds=1))
    (poor,) = demote.check(project, opened).demotions
    assert poor.rules == ["pattern fidelity never reached 0.9 (best 0.600 over 2 executions)"]


def test_demote_check_lists_a_version_short_of_executions_after_seven_days(
    project: Project, opened: Store
) -> None:
    project = configure(project)
    spam_filter(project, STAGING)
    api.list_skills(project, stage="staged")
    now = dt.datetime.now(dt.UTC)
    assert demote.check(project, opened, now=now + dt.timedelta(days=6)).demotions == []
    later = now + dt.timedelta(days=8)
    found = demote.check(project, opened, now=later)
    assert found.checked == 1
    (demotion,) = found.demotions
    assert (demotion.stage, demotion.to_stage, demotion.version) == ("staged", "prototype", "1.0.0")
    assert demotion.rules == ["unable to reach 100 executions within 7 days (0/100 after 8.0 days)"]

    digest = read_skill(project.root / STAGING / NAME).digest
    record(project, digest, [0.5] * 20, start=now)
    (poor,) = demote.check(project, opened, now=later).demotions
    assert poor.rules[1] == "pattern fidelity never reached 0.9 (best 0.500 over 20 executions)"

    demote.apply(project, opened, found, actor="cron")
    assert demotion.applied and demotion.error is None
    assert not (project.root / STAGING / NAME).exists()
    assert read_skill(project.root / PROTOTYPE / NAME).digest == digest
    (now_in,) = opened.current_assignments(name=NAME)
    assert now_in.stage == "prototype"
    (event, *_) = opened.events(NAME)
    assert (event.kind, event.from_stage, event.to_stage, event.actor) == (
        "rollback",
        "staged",
        "prototype",
        "cron",
    )
    assert event.reason == "demotion: " + demotion.rules[0]


@SQLITE_ONLY
def test_a_mean_exactly_on_its_threshold_passes(project: Project) -> None:
    # Summed naively, 100 × 0.85 averages to 0.8499999999999993 and 0.8/1.0 alternating to
    # 0.8999999999999991: "0.850 (required >= 0.85) FAIL, 0.000 short".
    project = configure(project)
    digest = read_skill(spam_filter(project, STAGING)).digest
    start = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    record(project, digest, [0.8, 1.0] * 50, start=start, outcome_quality=0.85)
    result = gate(project, "metrics")
    assert result.status == "pass", result.details
    assert criterion(result, "pattern fidelity")["actual"] == 0.9
    assert criterion(result, "outcome quality")["actual"] == 0.85
    # a criterion met says nothing is missing (it said "-0.000 short", "must drop below 0.05")
    assert {c["missing"] for c in result.criteria} == {None}


def test_demote_check_on_the_thresholds_keeps_the_version(project: Project, opened: Store) -> None:
    project = configure(project)
    spam_filter(project, STAGING)
    api.list_skills(project, stage="staged")
    (live,) = opened.current_assignments(name=NAME)
    digest = read_skill(project.root / STAGING / NAME).digest
    # 100 executions averaging 0.90 exactly (a running float sum made it 0.8999999999999991),
    # the hundredth on the seventh day's last instant: within the seven days.
    deadline = live.entered_at + dt.timedelta(days=7)
    record(project, digest, [0.8, 1.0] * 50, start=deadline - 99 * dt.timedelta(minutes=1))
    assert demote.check(project, opened, now=deadline + dt.timedelta(days=1)).demotions == []


def test_compare_counts_benchmark_runs_only_for_a_stay_in_the_first_stage(
    project: Project,
) -> None:
    project = configure(project)
    spam_filter(project)
    api.list_skills(project, stage="prototype", now=dt.datetime.now(dt.UTC) - dt.timedelta(days=1))
    digest = into_staging(project)  # ten benchmark executions, in prototype
    api.run_eval(project, NAME)  # ten more, while staged: not executions in use
    record(project, digest, [1.0] * 12, start=dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1))
    compared = api.compare_versions(project, NAME, "prototype", "staged")
    assert (compared.summary_a.count, compared.summary_b.count) == (10, 12)
    assert (compared.a.benchmark, compared.b.benchmark) == (True, False)
    by_version = api.compare_versions(project, NAME, "prototype", "1.0.0")
    assert by_version.summary_b.count == 12
    metrics = api.skill_metrics(project, NAME, version="staged", timeframe="all")
    assert metrics.count == compared.summary_b.count
