"""`skillstage doctor`: drift between the store and the disk, and `--repair` for it."""

from __future__ import annotations

import os

import click

from skillstage import api
from skillstage.cli.context import WAIT, CliContext, echo_json, is_terminal, rule
from skillstage.errors import EXIT_FAILED, EXIT_OK
from skillstage.lifecycle import fs
from skillstage.lifecycle.doctor import DoctorReport, Finding, run_doctor
from skillstage.lifecycle.locks import DEFAULT_LOCK_TIMEOUT


def _styled(text: str, colour: str) -> str:
    return click.style(text, fg=colour) if is_terminal() else text


def _relative(path: str) -> str:
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def _render_finding(finding: Finding, repair: bool) -> None:
    mark = _styled("✓", "green") if finding.repaired else _styled("✗", "red")
    whose = finding.skill or "-"
    if finding.stage:
        whose += f" ({finding.stage})"
    click.echo(f"{mark} {finding.kind:<24} {whose}  {_relative(finding.path)}")
    click.echo(f"    {finding.detail}")
    if finding.action:
        label = "repaired" if finding.repaired else "to do" if not repair else "not repaired"
        click.echo(f"    {label}: {finding.action}")


def _render(report: DoctorReport) -> None:
    click.echo(rule())
    title = "DOCTOR: store and disk"
    click.echo(click.style(title, bold=True) if is_terminal() else title)
    click.echo(rule())
    if report.swept:
        click.echo(
            f"Deleted {len(report.swept)} cop{'y' if len(report.swept) == 1 else 'ies'} swapped "
            f"out of a stage more than {fs.RETIRE_GRACE_SECONDS:g} s ago "
            f"({_relative(os.path.dirname(report.swept[0]))})."
        )
    if not report.findings:
        click.echo(
            "No drift: every stage assignment, live directory, journal entry and archive "
            "entry agrees."
        )
        return
    for finding in report.findings:
        _render_finding(finding, report.repair)
    click.echo()
    repaired = len(report.findings) - len(report.remaining)
    summary = f"{len(report.findings)} problem(s) found"
    if report.repair:
        summary += f", {repaired} repaired, {len(report.remaining)} remain"
    click.echo(summary + ".")
    if not report.repair and report.remaining:
        click.echo("Run `skillstage doctor --repair` to mend what can be mended.")


@click.command("doctor")
@click.option(
    "--repair",
    is_flag=True,
    help="Mend what can be mended, each repair under the skill's lock: finish or undo "
    "interrupted changes, delete scratch copies, restore missing or edited live copies from "
    "the archive (keeping the edited copy there), register unknown directories; also delete "
    "copies swapped out of a stage more than a minute ago (kept meanwhile for their readers).",
)
@click.option(
    "--lock-timeout",
    type=WAIT,
    default=DEFAULT_LOCK_TIMEOUT,
    show_default=True,
    help="Seconds to wait for a skill's lock before giving up on its repair.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_obj
def doctor(obj: CliContext, repair: bool, lock_timeout: float, as_json: bool) -> int:
    """Report drift between the store and the skill directories on disk: interrupted promotions,
    leftover scratch copies, live directories that are missing, edited in place or unknown to the
    store, and archive entries that are writable or do not hold what their name says.

    Exits 0 when nothing is wrong (after --repair: when nothing remains), 1 otherwise.
    """
    report = run_doctor(
        obj.project(), repair=repair, actor=api.default_actor(), lock_timeout=lock_timeout
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        _render(report)
    return EXIT_OK if report.ok else EXIT_FAILED
