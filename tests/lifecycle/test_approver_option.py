"""promote --approver / --approval-ticket on a transition with no `approval` gate: the named
sign-off is checked all the same (it goes on record with the promotion), and the gate says that
the option asked for it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.lifecycle.gates import GateResult
from skillstage.lifecycle.promote import PromotionResult
from skillstage.lifecycle.readiness import review_items
from skillstage.store import Store
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")


def with_approvers(project: Project) -> Project:
    """The default transitions (no `approval` gate on either), alice an approver."""
    config = project.root / "skillstage.toml"
    text = config.read_text(encoding="utf-8")
    assert "approvers = []" in text and '"approval"' not in text.split("[[transitions]]", 1)[1]
    config.write_text(text.replace("approvers = []", 'approvers = ["alice"]'), encoding="utf-8")
    return load_config_file(config)


def signed_off(project: Project) -> None:
    """auth-v2 1.0.0 waits in staging, signed off by alice for production (APPROVAL_T_001)."""
    write_skill(project.root / STAGING, "auth-v2")
    checklist = project.root / "signoff.yaml"
    items = review_items(project, "production")
    checklist.write_text("human_review:\n" + "".join(f"  {i}: YES\n" for i in items))
    api.approve(
        project,
        "auth-v2",
        to_stage="production",
        ticket="APPROVAL_T_001",
        decision="approved",
        approver="alice",
        checklist_file=checklist,
    )


def promote(project: Project, **options: str) -> PromotionResult:
    (result,) = api.promote(project, ["auth-v2"], actor="tester", **options)  # type: ignore[arg-type]
    return result


def refused(project: Project, **options: str) -> tuple[PromotionResult, GateResult]:
    """A promotion with `options` after alice's sign-off, refused by its approval gate."""
    signed_off(project)
    result = promote(project, **options)
    assert not result.success
    (approval,) = [g for g in result.gates if g.blocks]
    assert approval.gate == "approval"
    assert (project.root / STAGING / "auth-v2").is_dir()
    return result, approval


def test_the_named_sign_off_is_checked_and_recorded(project: Project) -> None:
    project = with_approvers(project)
    signed_off(project)

    result = promote(project, approver="alice", approval_ticket="APPROVAL_T_001")

    assert result.success, result.error
    (approval,) = [g for g in result.gates if g.gate == "approval"]
    assert approval.status == "pass"
    assert approval.message.startswith(
        "--approver and --approval-ticket ask for a sign-off: approved by alice (APPROVAL_T_001"
    )
    with Store.open(project.database_url) as store:
        (event,) = store.events("auth-v2", kind="promote")
    assert (event.approver, event.approval_ticket) == ("alice", "APPROVAL_T_001")


def test_an_approver_who_did_not_sign_off_is_refused_and_says_why(project: Project) -> None:
    project = with_approvers(project)

    result, approval = refused(project, approver="bob")

    assert (
        approval.message == "--approver asks for a sign-off: bob did not sign this off (alice did)"
    )
    assert approval.details[-1] == (
        "staged → production itself requires no sign-off: without --approver the promotion "
        "needs none"
    )
    assert result.error == f"gates failed: approval ({approval.message})"
    # Without the option the transition's own gates decide, and no approval gate runs.
    plain = promote(project)
    assert plain.success and not [g for g in plain.gates if g.gate == "approval"]


def test_a_ticket_alone_asks_for_the_sign_off_too(project: Project) -> None:
    _, approval = refused(with_approvers(project), approval_ticket="APPROVAL_T_999")

    assert approval.message == (
        "--approval-ticket asks for a sign-off: ticket APPROVAL_T_999 is not the recorded "
        "sign-off (APPROVAL_T_001)"
    )


def test_a_transition_that_requires_approval_is_not_changed(project: Project) -> None:
    """Where the transition names the gate, --approver is checked by it, as it always was: no
    'asked for' wording, the gate's own failure."""
    config = project.root / "skillstage.toml"
    text = config.read_text(encoding="utf-8").replace('"security"]', '"security", "approval"]')
    config.write_text(text.replace("approvers = []", 'approvers = ["alice"]'), encoding="utf-8")
    _, approval = refused(load_config_file(config), approver="bob")

    assert approval.message == "bob did not sign this off (alice did)"


def test_the_command_says_the_option_asked_for_the_sign_off(project: Project) -> None:
    project = with_approvers(project)
    signed_off(project)

    refused = subprocess.run(
        [sys.executable, "-m", "skillstage", "promote", "auth-v2", "--yes", "--approver", "bob"],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert refused.returncode != 0
    assert "--approver asks for a sign-off: bob did not sign this off (alice did)" in refused.stdout
    assert "without --approver the promotion needs none" in refused.stdout
