"""`skillstage promote` and `skillstage rollback`: move skill versions between stages."""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

import click

from skillstage.cli.context import (
    STAGE,
    WAIT,
    CliContext,
    echo_json,
    one_skill,
    rule,
    show_deliveries,
)
from skillstage.errors import EXIT_FAILED, EXIT_OK, SkillstageError, UsageError

if TYPE_CHECKING:  # (imported when a command runs: start-up imports neither)
    from skillstage.config import Project
    from skillstage.lifecycle.promote import PromotionResult

_MARK = {"pass": "✓", "fail": "✗", "warn": "⚠", "skip": "-"}


def _needs_confirmation(yes: bool, dry_run: bool) -> bool:
    """Whether to ask before changing stages (--json too asks: on stderr, stdout stays JSON)."""
    if yes or dry_run:
        return False
    if sys.stdin is None or not sys.stdin.isatty():  # None: started with stdin closed
        raise UsageError(
            "refusing to change stages without confirmation: there is no terminal to ask on",
            hint="pass --yes (or --auto) to confirm up front",
        )
    return True


def _relative(path: str | None) -> str:
    if path is None:
        return "-"
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def _label(project: Project, stage: str | None) -> str | None:
    config = project.config.stages.get(stage or "")
    return (config.label or stage) if config is not None else stage


def _show_gates(result: PromotionResult, *, err: bool = False) -> None:
    for gate in result.gates:
        click.echo(f"  {_MARK[gate.status]} {gate.gate:<13} {gate.message}", err=err)
        for line in gate.details:
            click.echo(f"      {line}", err=err)


def _box(title: str, rows: list[tuple[str, str]]) -> None:
    click.echo(rule())
    click.echo(f"  {title}")
    click.echo(rule())
    for label, value in rows:
        click.echo(f"  {label + ':':<12} {value}")
    click.echo(rule())


def _skills(refs: tuple[str, ...], skills: tuple[str, ...]) -> tuple[str, ...]:
    """Promote's skills: NAME|PATH... or --skill NAME (repeatable), or both when they agree."""
    if refs and skills and refs != skills:
        raise UsageError(
            f"the skills are named twice, differently: {' '.join(refs)} (NAME|PATH) and "
            f"{' '.join(skills)} (--skill)",
            hint="name them once, as NAME|PATH... or as --skill NAME",
        )
    return refs or skills


def _stage_named(project: Project, value: str) -> str | None:
    """The stage `value` names (by its name or its label), or None when it names none."""
    stages = project.config.stages
    if value in stages:
        return value
    by_label = [name for name, stage in stages.items() if stage.label == value]
    return by_label[0] if len(by_label) == 1 else None


# Promote and rollback wait on the same per-skill lock.
_lock_timeout_option = click.option(
    "--lock-timeout",
    type=WAIT,
    default=60,
    show_default=True,
    help="Seconds to wait for another promoter of the same skill.",
)


@click.command()
@click.argument("refs", nargs=-1, metavar="NAME|PATH...")
@click.option(
    "--skill",
    "skills",
    metavar="NAME",
    multiple=True,
    help="The skill to promote (repeatable): the same as NAME.",
)
@click.option(
    "--from",
    "from_stage",
    type=STAGE,
    metavar="STAGE",
    help="The stage the skill is in now: it is promoted from there, and refused if it is not "
    "there (default: where it is).",
)
@click.option(
    "--to", "to_stage", type=STAGE, metavar="STAGE", help="Target stage (default: the next one)."
)
@click.option(
    "--all-ready",
    "all_ready_from",
    type=STAGE,
    metavar="[STAGE]",
    is_flag=False,
    flag_value="staged",
    default=None,
    help="Promote every skill in STAGE (default: staged) whose gates pass.",
)
@click.option("--yes", "--auto", "yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Show the plan and the gates; change nothing.")
@click.option("--force", is_flag=True, help="Promote past failing gates (needs --reason).")
@click.option("--reason", help="Why: recorded in the event (required with --force).")
@click.option("--overwrite", is_flag=True, help="Replace the version live in the target stage.")
@click.option(
    "--git-commit",
    is_flag=True,
    help="Commit the moved paths, with a message that names the skill, the two stages, the "
    "validation, test and SLA results, and who promoted it when.",
)
@click.option("--deploy", is_flag=True, help="Run the deploy hook after the move.")
@click.option("--notify", is_flag=True, help="Send notifications (config [notifications]).")
@click.option("--by", "actor", metavar="ACTOR", help="Who promotes (default: $USER).")
@click.option(
    "--approver",
    help="Who signed the move off (with `skillstage approve`), recorded in the event.",
)
@click.option("--approval-ticket", help="The approval ticket, recorded in the event.")
@_lock_timeout_option
@click.option(
    "--json", "as_json", is_flag=True, help="Print a list of results as JSON, one per skill."
)
@click.pass_obj
def promote(
    obj: CliContext,
    refs: tuple[str, ...],
    skills: tuple[str, ...],
    from_stage: str | None,
    to_stage: str | None,
    all_ready_from: str | None,
    yes: bool,
    dry_run: bool,
    force: bool,
    reason: str | None,
    overwrite: bool,
    git_commit: bool,
    deploy: bool,
    notify: bool,
    actor: str | None,
    approver: str | None,
    approval_ticket: str | None,
    lock_timeout: float,
    as_json: bool,
) -> int:
    """Promote skills to their next stage (staged → production by default).

    Each NAME|PATH is promoted independently: validate (the transition's gates) → report →
    confirm → atomic move, with the version archived and the event recorded.
    """
    from skillstage import api

    refs = _skills(refs, skills)
    project = obj.project()
    if not refs and all_ready_from is None:
        raise UsageError(
            "nothing to promote", hint="pass NAME|PATH..., --skill NAME or --all-ready"
        )
    ask = _needs_confirmation(yes, dry_run)

    def confirm(result: PromotionResult) -> bool:
        # With --json the report and the question go to stderr: stdout is the JSON alone.
        click.echo(f"ℹ Validating skill: {result.skill_name}", err=as_json)
        _show_gates(result, err=as_json)
        click.echo(
            "✓ Validation passed"
            + (" (forced past: " + ", ".join(result.forced) + ")" if result.forced else ""),
            err=as_json,
        )
        label = _label(project, result.to_stage)
        return click.confirm(f"\nPromote skill to {label}?", default=False, err=as_json)

    results = api.promote(
        project,
        refs,
        to=to_stage,
        from_stage=from_stage,
        all_ready_from=all_ready_from,
        actor=actor,
        dry_run=dry_run,
        force=force,
        reason=reason,
        overwrite=overwrite,
        lock_timeout=lock_timeout,
        approver=approver,
        approval_ticket=approval_ticket,
        confirm=confirm if ask else None,
        deploy=deploy,
        notify=notify,
        git_commit=git_commit,
    )
    for warning in dict.fromkeys(w for result in results for w in result.warnings):
        click.echo(click.style("⚠ ", fg="yellow") + warning, err=True)
    if as_json:
        echo_json([result.to_dict() for result in results])
    else:
        for result in results:
            _render_promotion(result, _label(project, result.to_stage), shown_gates=ask)
    return EXIT_OK if all(result.success for result in results) else EXIT_FAILED


def _render_promotion(result: PromotionResult, label: str | None, *, shown_gates: bool) -> None:
    where = label or result.to_stage
    if not (shown_gates and result.gates and not (result.error or "").startswith("gates failed")):
        click.echo(f"ℹ Validating skill: {result.skill_name}")
        _show_gates(result)
    if not result.success:
        failed = "Dry run: would not promote" if result.dry_run else "Promotion failed"
        click.echo(click.style("✗ ", fg="red") + f"{failed}: {result.error}")
        return
    if result.dry_run:
        click.echo(f"✓ Dry run: {result.skill_name} {result.version} would move")
        click.echo(f"  From: {result.from_stage}")
        click.echo(f"  To:   {_relative(result.production_path)}")
        return
    click.echo(f"ℹ Promoting skill: {result.skill_name}")
    click.echo(f"  To:   {_relative(result.production_path)}")
    click.echo("ℹ Performing atomic move...")
    click.echo(click.style("✓ ", fg="green") + f"Skill promoted to {where}")
    click.echo()
    _box(
        "SKILL PROMOTION COMPLETE",
        [
            ("Skill", f"{result.skill_name} {result.version}"),
            ("From", result.from_stage or "-"),
            ("To", result.to_stage or "-"),
            ("Location", _relative(result.production_path)),
            (
                "Promoted",
                result.at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
                if result.at
                else "-",
            ),
        ]
        + ([("Deployment", result.deployment_id)] if result.deployment_id else [])
        + ([("Commit", result.commit_hash[:12])] if result.commit_hash else [])
        + ([("Forced", ", ".join(result.forced))] if result.forced else []),
    )
    show_deliveries(result.deliveries)


@click.command()
@click.argument("name", required=False)
@click.option("--skill", metavar="NAME", help="The skill to roll back: the same as NAME.")
@click.option(
    "--to",
    "to",
    metavar="VERSION|STAGE",
    help="The version to restore; or the stage to roll back to: the stage it is in (its "
    "previous good version comes back) or the stage before it (the skill leaves its stage and "
    "goes back there).",
)
@click.option("--to-version", metavar="VERSION", help="The version to restore.")
@click.option("--reason", required=True, help="Why (required): recorded with the failed version.")
@click.option("--trigger-metric", metavar="METRIC", help='What triggered it, e.g. "fidelity=0.83".')
@click.option(
    "--stage",
    "--from",
    "stage",
    type=STAGE,
    help="The stage to roll back in, where the skill is now (default: the last, production).",
)
@click.option("--yes", "--auto", "yes", is_flag=True, help="Do not ask for confirmation.")
@click.option("--dry-run", is_flag=True, help="Say which version would come back; change nothing.")
@click.option("--git-commit", is_flag=True, help="Commit the restored paths.")
@click.option("--by", "actor", metavar="ACTOR", help="Who rolls back (default: $USER).")
@click.option(
    "--approver",
    metavar="NAME",
    help="A manual override of the automation, approved by NAME: recorded with the rollback.",
)
@_lock_timeout_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def rollback(
    obj: CliContext,
    name: str | None,
    skill: str | None,
    to: str | None,
    to_version: str | None,
    reason: str,
    trigger_metric: str | None,
    stage: str | None,
    yes: bool,
    dry_run: bool,
    git_commit: bool,
    actor: str | None,
    approver: str | None,
    lock_timeout: float,
    as_json: bool,
) -> int:
    """Put the previous good version of NAME back live.

    The version comes back from the archive with one atomic exchange; the failed one is kept in
    the archive as failed, with the reason and triggering metric. With no earlier version, or
    with --to and the stage before (`--from production --to staged`), the skill leaves the stage
    and returns to the one before it.
    """
    from skillstage import api

    name = one_skill(name, skill)
    project = obj.project()
    to_stage = _stage_named(project, to) if to is not None else None
    if to is not None and to_stage is None and not any(c.isdigit() for c in to):
        raise UsageError(
            f"--to {to}: no stage is named {to!r}, and it is not a version",
            hint="stages, in order: "
            + " → ".join(project.config.stages)
            + f"; `skillstage history {name}` lists the versions",
        )
    if to is not None and to_stage is None:
        if to_version is not None and to_version != to:
            raise UsageError(
                f"two different versions to restore: --to {to} and --to-version {to_version}",
                hint="give one",
            )
        to_version = to
    # Checked before asking: the stage to roll back to must be this one or the one before.
    leaves = api.rollback_leaves_stage(
        project, stage=stage, to_stage=to_stage, to_version=to_version
    )
    question = f"Roll back {name} from {leaves[0]} to {leaves[1]}?" if leaves else None
    if _needs_confirmation(yes, dry_run) and not click.confirm(
        question or f"Roll back {name}?", default=False, err=as_json
    ):
        raise SkillstageError("cancelled: not rolled back", code="CANCELLED")
    result = api.rollback(
        project,
        name,
        reason=reason,
        to_version=to_version,
        to_stage=to_stage,
        stage=stage,
        trigger_metric=trigger_metric,
        actor=actor,
        lock_timeout=lock_timeout,
        git_commit=git_commit,
        dry_run=dry_run,
        approver=approver,
    )
    for warning in result.warnings:
        click.echo(click.style("⚠ ", fg="yellow") + warning, err=True)
    if as_json:
        echo_json(result.to_dict())
        return EXIT_OK
    if result.dry_run:
        back = (
            f"{result.version} from the archive"
            if result.to_stage == result.from_stage
            else f"to the {result.to_stage} stage"
        )
        click.echo(f"✓ Dry run: {name} {result.previous_version} would roll back: {back}")
        click.echo(f"  To:   {_relative(result.production_path)}")
        return EXIT_OK
    click.echo(
        click.style("✓ ", fg="green")
        + f"Rolled back {name}: {result.previous_version} → "
        + (
            f"{result.version}"
            if result.to_stage == result.from_stage
            else f"{result.to_stage} stage"
        )
    )
    _box(
        "SKILL ROLLBACK COMPLETE",
        [
            ("Skill", name),
            ("Live", f"{result.version} in {result.to_stage}"),
            ("Location", _relative(result.production_path)),
            ("Failed", f"{result.previous_version} (archived as failed)"),
            ("Reason", reason + (f" ({trigger_metric})" if trigger_metric else "")),
            *([("Approver", f"{approver} (manual override)")] if approver else []),
        ],
    )
    show_deliveries(result.deliveries)
    return EXIT_OK
