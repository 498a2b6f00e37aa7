"""`skillstage sla check` and `skillstage sla enforce`: the 48-hour staging rule, for cron."""

from __future__ import annotations

from pathlib import Path

import click

from skillstage.cli.context import CliContext, echo_json, rule
from skillstage.errors import EXIT_FAILED, EXIT_OK
from skillstage.lifecycle import sla as sla_rules
from skillstage.lifecycle.sla import EnforcementDetail, SlaReport, StaleSkill, format_hours

_GATE_MARK = {"pass": "✓", "fail": "✗", "warn": "⚠", "skip": "-"}


@click.group()
def sla() -> None:
    """Staging SLA: find skill versions that waited in a stage longer than its
    sla_hours, and act on them.

    Age counts from when the version entered the stage. A skill stays longer with
    `sla_override: true`, an `sla_override_reason` and an `sla_override_expires` date in its
    SKILL.md.
    """


@sla.command()
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help='Print every skill over its SLA as JSON, exempted ones too ("breach": false).',
)
@click.pass_obj
def check(obj: CliContext, as_json: bool) -> int:
    """List skills older than their stage's SLA, with their age and hours over.

    Exits 1 when any skill breaches its SLA (for cron and CI), 0 otherwise. Skills exempted by an
    active sla_override are shown, not counted.
    """
    from skillstage import api

    project = obj.project()
    report = api.sla_check(project)
    if as_json:
        echo_json(report.to_list())
    else:
        _render_check(report, project.root)
    return EXIT_FAILED if report.breaches else EXIT_OK


@sla.command()
@click.option("--dry-run", is_flag=True, help="Show what would be done; change nothing.")
@click.option("--auto-promote", is_flag=True, help="Promote each stale skill whose gates all pass.")
@click.option("--notify", is_flag=True, help="Send an sla_breach notification per stale skill.")
@click.option(
    "--git-commit",
    is_flag=True,
    help="Commit each auto-promotion, with a message that names the skill, the two stages, the "
    "validation, test and SLA results, and who promoted it when.",
)
@click.option(
    "--auto-deploy", "--deploy", "deploy", is_flag=True, help="Run the deploy hook after each."
)
@click.option(
    "--by", "actor", metavar="ACTOR", help=f"Who acts (default: {sla_rules.ENFORCER_ACTOR})."
)
@click.option("--json", "as_json", is_flag=True, help="Print the enforcement result as JSON.")
@click.pass_obj
def enforce(
    obj: CliContext,
    dry_run: bool,
    auto_promote: bool,
    notify: bool,
    git_commit: bool,
    deploy: bool,
    actor: str | None,
    as_json: bool,
) -> int:
    """Act on stale skills: auto-promote the ready ones (never past a failing gate), notify, and
    record an sla_breach event per skill (at most one a day per version).

    Exits 1 while any stale skill remains unpromoted (always, with stale skills, on a dry run),
    0 otherwise.
    """
    project = obj.project()
    result = sla_rules.enforce(
        project,
        auto_promote=auto_promote,
        notify=notify,
        git_commit=git_commit,
        deploy=deploy,
        dry_run=dry_run,
        actor=actor,
    )
    if as_json:
        echo_json(result.to_dict())
        return EXIT_FAILED if result.remaining else EXIT_OK
    for warning in result.warnings:
        click.echo(click.style("⚠ ", fg="yellow") + warning)
    multiple = len({detail.skill.stage for detail in result.details}) > 1
    for detail in result.details:
        _render_stale(detail.skill, project.root, show_stage=multiple)
        _render_action(detail)
        click.echo()
    for skill in result.exempt:
        _render_stale(skill, project.root, show_stage=multiple)
        click.echo()
    title = "SLA ENFORCEMENT RESULTS" + (" (dry run)" if result.dry_run else "")
    click.echo(rule())
    click.echo(title)
    click.echo(rule())
    rows = [("Stale skills found", result.stale_skills_found)]
    rows.append(
        ("Would promote", result.would_promote)
        if result.dry_run
        else ("Auto-promoted", result.promoted)
    )
    rows += [("Notifications sent", result.notified), ("Still stale", result.remaining)]
    for label, value in rows:
        click.echo(f"  {label + ':':<20} {value}")
    if result.exempt:
        click.echo(f"  {'Exempt (override):':<20} {len(result.exempt)}")
    click.echo(rule())
    return EXIT_FAILED if result.remaining else EXIT_OK


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def _render_stale(skill: StaleSkill, root: Path, *, show_stage: bool) -> None:
    hours = f"({format_hours(skill.age_hours)}h, {format_hours(skill.breach_hours)}h over SLA)"
    if skill.breach:
        click.echo(click.style("⚠", fg="yellow") + f" Stale skill: {skill.name} {hours}")
    else:
        click.echo(click.style("ℹ", fg="blue") + f" Exempt: {skill.name} {hours}")
    click.echo(f"  Path: {_relative(skill.path, root)}")
    if show_stage:
        click.echo(f"  Stage: {skill.stage} (SLA {format_hours(skill.sla_hours)} hours)")
    override = skill.override
    if override is not None:
        reason = f" ({override.reason})" if override.reason and not override.active else ""
        what = f"{override.reason}, {override.status}" if override.active else override.status
        click.echo(f"  Override: {what}{reason}")


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:]


def _render_action(detail: EnforcementDetail) -> None:
    if detail.action == "promoted":
        click.echo(click.style("  ✓ ", fg="green") + _sentence(detail.message))
    elif detail.action == "would_promote":
        click.echo(f"  ℹ Dry run: {detail.message}")
    elif detail.action == "reported":
        click.echo(f"  ℹ {_sentence(detail.message)}")
    elif detail.action == "blocked" and detail.promotion is not None:
        click.echo(click.style("  ✗ ", fg="red") + "Not promoted: gates failed")
        for gate in detail.promotion.gates:
            if gate.blocks:
                click.echo(f"      {_GATE_MARK[gate.status]} {gate.gate:<13} {gate.message}")
                for line in gate.details:
                    click.echo(f"          {line}")
    else:
        click.echo(click.style("  ✗ ", fg="red") + f"Not promoted: {detail.message}")
    for delivery in detail.notifications:
        if delivery["ok"]:
            click.echo(f"  ✓ Notified: {delivery['name']}")
        else:
            click.echo(
                click.style("  ⚠ ", fg="yellow")
                + f"Notification to {delivery['name']} failed: {delivery['error']}; it is "
                "queued: `skillstage outbox --retry` sends it again"
            )


def _render_check(report: SlaReport, root: Path) -> None:
    multiple = len(report.sla_stages) > 1
    for skill in report.over:
        _render_stale(skill, root, show_stage=multiple)
        click.echo()
    for path, error in report.unreadable:
        click.echo(click.style("unreadable: ", fg="red") + f"{_relative(path, root)}: {error}")
    if not report.sla_stages:
        click.echo("No stage has an sla_hours: nothing to check ([stages.<name>] sla_hours).")
        return
    breaches = report.breaches
    if not breaches:
        exempt = f", {len(report.exempt)} exempt by sla_override" if report.exempt else ""
        click.echo(
            click.style("✓", fg="green")
            + f" All skills within SLA ({report.checked} checked{exempt})"
        )
        return
    limits = {skill.sla_hours for skill in breaches}
    older = (
        f"older than {format_hours(limits.pop())} hours"
        if len(limits) == 1
        else "older than their stage's SLA"
    )
    click.echo(rule())
    click.echo(f"SLA BREACH: {len(breaches)} skill(s) {older}")
    click.echo(rule())
