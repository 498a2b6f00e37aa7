"""A filled-in sign-off form's identity fields (approver, signature, ticket, skill, version) are
read as the text written in the file: YAML would read `approver: 0102` as the octal number 66
and refuse the form as "'66' in the form" (issue 14 §4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle.signoff import ApprovalError, SignOffResult, read_checklist
from tests.lifecycle.test_readiness import NAME, configure, spam_filter


def _form(project: Project, by: str, ticket: str, edits: dict[str, str]) -> Path:
    """The template for approver `by`, every item answered YES, with the header lines named in
    `edits` written as given (key: the text after "key: ", as a person would type it)."""
    text = api.signoff_template(project, NAME, to_stage="staged", approver=by, ticket=ticket)
    lines = []
    for line in text.replace(": NO  #", ": YES  #").splitlines():
        key = line.split(":", 1)[0]
        lines.append(f"{key}: {edits[key]}" if key in edits else line)
    path = project.root / "signoff.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _approve(project: Project, ticket: str, form: Path) -> SignOffResult:
    return api.approve(
        project,
        NAME,
        to_stage="staged",
        ticket=ticket,
        decision="approved",
        approver="0102",
        checklist_file=form,
    )


@pytest.fixture
def signing(project: Project) -> Project:
    configured = configure(project, approvers=("0102", "alice"))
    spam_filter(configured)  # by carol, in prototype
    return configured


def test_an_approver_written_0102_is_0102_not_octal_66(signing: Project) -> None:
    # The template quotes them ("0102"); a newcomer writes them by hand, unquoted.
    edits = {"approver": "0102", "signature": "0102", "approval_ticket": "0777"}
    form = _form(signing, "0102", "0777", edits)
    text = form.read_text()
    assert "\napprover: 0102\n" in text and "\nsignature: 0102\n" in text
    assert text.startswith("approval_ticket: 0777\n")

    stated = read_checklist(form).stated
    assert (stated["approver"], stated["signature"], stated["approval_ticket"]) == (
        "0102",
        "0102",
        "0777",
    )
    result = _approve(signing, "0777", form)
    assert (result.approver, result.ticket, result.decision) == ("0102", "0777", "APPROVED")


def test_a_form_for_another_approver_names_them_as_written(signing: Project) -> None:
    form = _form(signing, "0102", "T-1", {"approver": "0103", "signature": "0103"})
    with pytest.raises(ApprovalError) as refused:
        _approve(signing, "T-1", form)
    assert "approver is '0103' in the form, '0102' here" in refused.value.message
    assert "67" not in refused.value.message  # not the octal reading


@pytest.mark.parametrize(
    ("written", "read"),
    [
        ("yes", "yes"),  # YAML 1.1: true
        ("1.10", "1.10"),  # a float: 1.1
        ("1_000", "1_000"),  # an int: 1000
        ("1:30", "1:30"),  # sexagesimal: 90
        ('"0102"', "0102"),  # quoted: the text between the quotes
        ("'0102'", "0102"),
        ("", ""),  # left empty
        ("null", ""),
        ('"null"', "null"),  # a quoted word is that word
    ],
)
def test_identity_fields_are_read_as_written(tmp_path: Path, written: str, read: str) -> None:
    form = tmp_path / "form.yaml"
    form.write_text(f"approver: {written}\nhuman_review:\n  looked: YES\n", encoding="utf-8")
    assert read_checklist(form).stated == {"approver": read}


def test_answers_still_read_yes_and_no_as_yaml_does(tmp_path: Path) -> None:
    form = tmp_path / "form.yaml"
    form.write_text("approver: 0102\nhuman_review:\n  a: yes\n  b: NO\n  c: true\n")
    checklist = read_checklist(form)
    assert checklist.answers == {"a": "YES", "b": "NO", "c": "YES"}
    assert checklist.stated == {"approver": "0102"}
