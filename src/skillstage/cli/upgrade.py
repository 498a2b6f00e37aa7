"""`skillstage upgrade`: convert old-format skills (no frontmatter) to today's format."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import click

from skillstage.cli.context import CliContext, NonEmptyPath, echo_json, is_terminal
from skillstage.errors import EXIT_FAILED, EXIT_OK, UsageError

if TYPE_CHECKING:
    from skillstage.api import FormatUpgradeReport
    from skillstage.skill.upgrade import FormatUpgrade

_FROM = {
    "heading": "from the first heading",
    "title": "from the old key 'title'",
    "directory": "from the directory name",
    "frontmatter": "kept",
    "desc": "from the old key 'desc'",
    "paragraph": "from the first paragraph",
}


@click.command()
@click.argument("paths", nargs=-1, required=True, type=NonEmptyPath(path_type=Path))
@click.option("--dry-run", is_flag=True, help="Show the change and write nothing (the default).")
@click.option("--write", is_flag=True, help="Write the upgraded SKILL.md (atomically).")
@click.option(
    "--spec-only",
    is_flag=True,
    help="The result need pass only the Agent Skills spec rules (no version is added).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@click.pass_obj
def upgrade(
    obj: CliContext,
    paths: tuple[Path, ...],
    dry_run: bool,
    write: bool,
    spec_only: bool,
    as_json: bool,
) -> int:
    """Convert old-format skills to today's format (YAML frontmatter).

    Each PATH is a skill directory, its SKILL.md / skill.md / prompt.md, or a tree holding skills.
    An old-format skill has no frontmatter (its name is its first heading, its description its
    first paragraph) or uses the old keys title, desc and triggers. The body is kept byte for
    byte. The result is checked as `skillstage validate` checks it, and refused, with the
    findings, when it would not pass. Without --write, the change is shown as a diff.

    Exit 0 when every skill was upgraded (or would be, or already is in today's format), 1 when
    any was refused, 2 on a usage error.
    """
    from skillstage import api

    if dry_run and write:
        raise UsageError("--dry-run and --write contradict each other", hint="pass one of them")
    report = api.upgrade(
        list(paths), project=obj.optional_project(), write=write, spec_only=spec_only
    )
    if as_json:
        echo_json(report.to_dict())
    else:
        _render(report)
    return EXIT_OK if report.ok else EXIT_FAILED


def _render(report: FormatUpgradeReport) -> None:
    colour = is_terminal() and not os.environ.get("NO_COLOR")
    for skill in report.skills:
        _render_one(skill, colour)
    parts = [
        f"{report.count('upgraded')} upgraded" if report.write else None,
        f"{report.count('would-upgrade')} to upgrade" if not report.write else None,
        f"{report.count('already-v2')} already in today's format",
        f"{report.count('refused')} refused",
    ]
    click.echo(f"{len(report.skills)} skill(s): " + ", ".join(p for p in parts if p))
    if not report.write and report.count("would-upgrade"):
        click.echo("dry run: nothing was written; add --write to write the changes")


def _render_one(skill: FormatUpgrade, colour: bool) -> None:
    where = os.path.relpath(skill.path)
    if skill.status == "already-v2":
        click.echo(f"{where}: already v2 (today's format); nothing to do")
        return
    if skill.status == "refused":
        location = f"{where}/{skill.source}:{skill.line}" if skill.line else where
        click.echo(
            click.style("refused: ", fg="red", bold=True) + f"{location}: {skill.reason}",
            color=colour,
        )
        if skill.hint:
            click.echo("    hint: " + skill.hint.replace("\n", "\n          "))
        for finding in skill.findings:
            place = f"{finding.file}:{finding.line}" if finding.line else finding.file or "."
            click.echo(f"    {place}: {finding.severity}: {finding.id}: {finding.message}")
            if finding.hint:
                click.echo("        fix: " + finding.hint.replace("\n", "\n             "))
    else:
        verb = "upgraded" if skill.status == "upgraded" else "would upgrade"
        click.echo(f"{where}: {verb} {skill.source} ({_shape(skill)}) → SKILL.md")
    if skill.name is not None:
        click.echo(f"    name: {skill.name} ({_FROM.get(skill.name_from or '', 'derived')})")
    if skill.description_from is not None:
        click.echo(f"    description: {_FROM.get(skill.description_from, 'derived')}")
    for note in skill.notes:
        click.echo(f"    note: {note}")
    if skill.diff and skill.status != "upgraded":
        for line in skill.diff.splitlines():
            style = {"+": "green", "-": "red", "@": "cyan"}.get(line[:1])
            if line.startswith(("+++", "---")):
                style = None
            click.echo(click.style(line, fg=style) if style else line, color=colour)


def _shape(skill: FormatUpgrade) -> str:
    return {
        "no-frontmatter": "v1: no frontmatter",
        "old-keys": "v1: old keys",
        "file-name": "v1: prompt.md",
    }.get(skill.shape or "", "v1")
