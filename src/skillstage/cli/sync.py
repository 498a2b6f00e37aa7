"""`skillstage sync`: keep a directory of skills (an agent host's `.claude/skills/`) holding the
copies one subject resolves to, once or (`--watch`) as rollouts and promotions move."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import click

from skillstage import api
from skillstage.cli.context import (
    STAGE,
    CliContext,
    NonEmptyPath,
    echo_json,
    key_values,
    until_stopped,
)
from skillstage.errors import EXIT_OK
from skillstage.runtime.routing import serving_stage
from skillstage.runtime.sync import SyncedSkill, SyncResult


@click.command("sync")
@click.option(
    "--subject",
    required=True,
    help="Who the directory stands for (a user, a CI runner): it gets the copies this subject "
    "resolves to, the same on every sync.",
)
@click.option(
    "--into",
    required=True,
    type=NonEmptyPath(file_okay=False, path_type=Path),
    metavar="DIR",
    help="The directory to keep the skills in, e.g. ~/.claude/skills (created when missing).",
)
@click.option("--stage", type=STAGE, metavar="STAGE", help="The stage (default: the last one).")
@click.option(
    "--context",
    "context",
    multiple=True,
    metavar="KEY=VALUE",
    help="The subject's context, for canary segments; repeatable.",
)
@click.option(
    "--watch",
    "keep_watching",
    is_flag=True,
    help="Keep the directory in step until stopped (SIGTERM or Ctrl-C): one line per change.",
)
@click.option(
    "--json", "as_json", is_flag=True, help="Print the result as JSON (with --watch: one a line)."
)
@click.pass_obj
def sync(
    obj: CliContext,
    subject: str,
    into: Path,
    stage: str | None,
    context: tuple[str, ...],
    keep_watching: bool,
    as_json: bool,
) -> int:
    """Make DIR/<name> hold, for every skill serving in the stage, a read-only copy of the
    version SUBJECT resolves to: a laptop or a CI runner joins a rollout as a request does.

    Only the skills that changed are copied, each swapped in whole; skills that stopped serving
    are removed. What sync installed is listed in DIR/.skillstage-sync.json; a directory it did
    not install is never replaced or removed.
    """
    project = obj.project()
    wanted = key_values(context, "--context", "tier=internal")
    if not keep_watching:
        result = api.sync(project, into, subject=subject, context=wanted, stage=stage)
        _warn(result.warnings)
        if as_json:
            echo_json(result.to_dict())
        else:
            _summary(result)
        return EXIT_OK
    stage = serving_stage(project, stage)
    first = True
    warned: list[str] = []

    def on_change(result: SyncResult) -> None:
        nonlocal first, warned
        if as_json:
            click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        elif first:
            _summary(result)
        else:
            for line in _changes(result):
                click.echo(line)
        if result.warnings != warned:
            _warn(result.warnings)
        first, warned = False, result.warnings

    def on_error(exc: Exception) -> None:
        click.echo(click.style("⚠ ", fg="yellow") + f"sync failed, trying again: {exc}", err=True)

    def run(stop: threading.Event) -> None:
        api.sync_watch(
            project,
            into,
            subject=subject,
            context=wanted,
            stage=stage,
            stop=stop,
            on_change=on_change,
            on_error=on_error,
        )

    until_stopped(run)
    return EXIT_OK


def _described(skill: SyncedSkill) -> str:
    why = skill.arm if skill.bucket is None else f"{skill.arm}, bucket {skill.bucket}"
    was = f"{skill.previous} → " if skill.previous and skill.previous != skill.version else ""
    return f"{skill.name} {was}{skill.version} ({why})"


def _changes(result: SyncResult) -> list[str]:
    return (
        [f"added {_described(skill)}" for skill in result.added]
        + [f"updated {_described(skill)}" for skill in result.updated]
        + [f"removed {name}" for name in result.removed]
    )


def _summary(result: SyncResult) -> None:
    click.echo(
        f"Synced {result.stage} for {result.subject} into {result.into} (generation "
        f"{result.generation}): {len(result.added)} added, {len(result.updated)} updated, "
        f"{len(result.removed)} removed, {result.unchanged} unchanged"
        + (f", {len(result.skipped)} skipped" if result.skipped else "")
    )
    for line in _changes(result):
        click.echo(f"  {line}")


def _warn(warnings: list[str]) -> None:
    for warning in warnings:
        click.echo(click.style("⚠ ", fg="yellow") + warning, err=True)
