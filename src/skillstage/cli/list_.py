"""`skillstage list`: skills per stage, with their age there."""

from __future__ import annotations

import os
from pathlib import Path

import click

from skillstage import api
from skillstage.api import ListedSkill
from skillstage.cli.context import STAGE, CliContext, echo_json, is_terminal, rule


@click.command("list")
@click.option("--stage", type=STAGE, help="Only this stage (e.g. staged).")
@click.option("--json", "as_json", is_flag=True, help="Print the skills as JSON.")
@click.pass_obj
def list_skills(obj: CliContext, stage: str | None, as_json: bool) -> int:
    """List skills per stage: name, version, age in hours since that version entered the stage,
    and path.

    Skill versions found on disk that the store has not seen are registered on first sight, so
    that their age starts counting.
    """
    project = obj.project()
    listing = api.list_skills(project, stage=stage)
    if as_json:
        echo_json(listing.to_dict())
        return 0
    stages = [stage] if stage else list(project.config.stages)
    shown = False
    for name in stages:
        skills = [s for s in listing.skills if s.stage == name]
        if not skills and stage is None:
            continue
        shown = True
        _render_stage(name, skills, project.root)
    if not shown:
        click.echo("No skills in any stage. Stage folders:")
        for name in project.config.stages:
            click.echo(f"  {name}: {os.path.relpath(project.stage_root(name))}")
    for path, error in listing.unreadable:
        click.echo(click.style("unreadable: ", fg="red") + f"{os.path.relpath(path)}: {error}")
    return 0


def _age(hours: float) -> str:
    return f"{hours:.0f}h" if hours >= 10 else f"{hours:.1f}h"


def _render_stage(stage: str, skills: list[ListedSkill], root: Path) -> None:
    click.echo(rule())
    title = f"{stage.upper()} SKILLS ({len(skills)} total)"
    click.echo(click.style(title, bold=True) if is_terminal() else title)
    click.echo(rule())
    for skill in skills:
        click.echo()
        click.echo(f"  Skill:    {skill.name}")
        click.echo(f"  Version:  {skill.version}")
        click.echo(f"  Age:      {_age(skill.age_hours)}")
        click.echo(f"  Path:     {_relative(skill.path, root)}")
        for problem in skill.problems:
            note = f"  Warning:  {problem}"
            click.echo(click.style(note, fg="yellow") if is_terminal() else note)
    click.echo()


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
