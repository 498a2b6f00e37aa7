"""`skillstage validate`: check skill directories."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import click

from skillstage.cli.context import TIMEOUT, CliContext, NonEmptyPath, echo_json, is_terminal
from skillstage.errors import EXIT_FAILED, EXIT_OK

if TYPE_CHECKING:
    from skillstage.api import Progress as ProgressCallback
    from skillstage.api import ValidationReport
    from skillstage.skill.checks import Finding, SkillReport

_PROGRESS_FROM = 50  # skills; below this a bar only flickers


@click.command()
@click.argument("paths", nargs=-1, type=NonEmptyPath(path_type=Path))
@click.option("--all", "all_stages", is_flag=True, help="Validate every skill in every stage.")
@click.option(
    "--spec-only",
    is_flag=True,
    help="Only the Agent Skills spec rules (for skills not managed by skillstage).",
)
@click.option("--strict", is_flag=True, help="Treat warnings as errors.")
@click.option("--run-tests", is_flag=True, help="Run each skill's test.sh in its directory.")
@click.option(
    "--test-timeout",
    type=TIMEOUT,
    metavar="SECONDS",
    help="Kill a test.sh (and its children) after this long (default: validation."
    "test_timeout_seconds, 30).",
)
@click.option(
    "--jobs",
    type=click.IntRange(min=0, max=256),
    default=0,
    show_default=True,
    help="Worker processes for large trees (0: one per CPU; 1: no workers).",
)
@click.option("--json", "as_json", is_flag=True, help="Print a machine-readable report.")
@click.pass_obj
def validate(
    obj: CliContext,
    paths: tuple[Path, ...],
    all_stages: bool,
    spec_only: bool,
    strict: bool,
    run_tests: bool,
    test_timeout: float | None,
    jobs: int,
    as_json: bool,
) -> int:
    """Validate skills: each PATH is a skill directory or a tree holding skills.

    \b
    Rules (each finding has an id, a severity, a file and line, and a fix hint):
      parse         SKILL.md is UTF-8 and opens with frontmatter: a YAML mapping
      content       SKILL.md and execute.sh present, scripts executable, test.sh recommended
      schema        name, version (strict MAJOR.MINOR.PATCH), description; field types
      spec          Agent Skills spec: name, description, compatibility, metadata, links
      dependencies  declared dependencies exist; no cycles
      security      symlinks leaving the skill, world-writable files, keys and tokens
      tests         test.sh passes (with --run-tests)

    Exit 0 when no errors, 1 when any error, 2 on a usage or configuration error.
    """
    from skillstage import api

    project = obj.optional_project()
    if test_timeout is not None and not run_tests:
        click.echo("⚠ --test-timeout has no effect without --run-tests", err=True)
    with _progress_bar(enabled=is_terminal() and not as_json) as progress:
        report = api.validate(
            list(paths),
            project=project,
            all_stages=all_stages,
            spec_only=spec_only,
            strict=strict,
            run_tests=run_tests,
            jobs=jobs,
            test_timeout=test_timeout,
            progress=progress,
        )
    if as_json:
        echo_json(report.to_dict())
    elif is_terminal():
        _render_table(report)
    else:
        _render_plain(report)
    return EXIT_OK if report.ok else EXIT_FAILED


@contextmanager
def _progress_bar(enabled: bool) -> Iterator[ProgressCallback | None]:
    if not enabled:
        yield None
        return
    # rich is imported only to draw on a terminal: piped output (scripts, CI) does not pay for it.
    from rich.console import Console
    from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    bar = Progress(
        SpinnerColumn(),
        TextColumn("validating"),
        BarColumn(),
        TextColumn("{task.completed} skills"),
        TimeElapsedColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    task = None

    def advance(done: int, total: int | None) -> None:
        # The total is not known while the tree is still being searched.
        nonlocal task
        if done < _PROGRESS_FROM:
            return
        if task is None:
            bar.start()
            task = bar.add_task("validate", total=total)
        bar.update(task, completed=done, total=total)

    try:
        yield advance
    finally:
        bar.stop()


def _where(report: SkillReport, finding: Finding) -> str:
    place = (
        os.path.relpath(report.path / finding.file)
        if finding.file
        else os.path.relpath(report.path)
    )
    return f"{place}:{finding.line}" if finding.line else place


def _summary(report: ValidationReport) -> str:
    failed = sum(1 for skill in report.skills if not skill.ok)
    return (
        f"{len(report.skills)} skill(s) validated: {len(report.skills) - failed} passed, "
        f"{failed} failed ({report.errors} error(s), {report.warnings} warning(s))"
    )


def _render_plain(report: ValidationReport) -> None:
    for skill in report.skills:
        for finding in skill.findings:
            click.echo(
                f"{_where(skill, finding)}: {finding.severity}: {finding.id}: {finding.message}"
            )
            if finding.hint:
                click.echo("    hint: " + finding.hint.replace("\n", "\n          "))
            if finding.detail:
                click.echo("    output:\n" + _indent(finding.detail, 6))
    click.echo(_summary(report))


def _indent(text: str, spaces: int) -> str:
    return "\n".join(" " * spaces + line for line in text.splitlines())


_STYLE = {"error": "bold red", "warning": "yellow", "info": "cyan"}
_MESSAGE_WIDTH = 30  # the least a message column is given in the table


def _render_table(report: ValidationReport) -> None:
    """A compact table of findings, numbered; the fixes follow, keyed by number, so that long
    hints and test output do not squeeze the table."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = [(skill, finding) for skill in report.skills for finding in skill.findings]
    # Columns that are never cut, and room for the message beside them: on a terminal narrower
    # than that the table would cut or drop columns, so the findings are lines, as when piped.
    fixed = [
        len(str(len(rows))),
        max((len(skill.name or skill.path.name) for skill, _ in rows), default=0),
        len("severity"),
        max((len(finding.id) for _, finding in rows), default=0),
        max((len(_where(skill, finding)) for skill, finding in rows), default=0),
    ]
    if rows and console.width < sum(fixed) + 2 * len(fixed) + _MESSAGE_WIDTH:
        _render_plain(report)
        return
    if rows:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("#", justify="right", style="dim")
        table.add_column("skill", no_wrap=True)
        table.add_column("severity", no_wrap=True)
        table.add_column("id", no_wrap=True)
        table.add_column("where", no_wrap=True)
        table.add_column("message", overflow="fold")
        previous = None
        for number, (skill, finding) in enumerate(rows, 1):
            label = (skill.name or skill.path.name) if skill is not previous else ""
            previous = skill
            table.add_row(
                str(number),
                label,
                f"[{_STYLE[finding.severity]}]{finding.severity}[/]",
                finding.id,
                _where(skill, finding),
                finding.message,
            )
        console.print(table)
        fixes = [(n, f) for n, (_, f) in enumerate(rows, 1) if f.hint or f.detail]
        if fixes:
            console.print("\n[bold]How to fix[/bold]")
            for number, finding in fixes:
                if finding.hint:
                    hint = finding.hint.replace("\n", "\n" + " " * 6)
                    # Not wrapped by rich: a command in a hint must copy and paste whole.
                    console.print(
                        f"{number:>4}. {hint}", markup=False, highlight=False, soft_wrap=True
                    )
                if finding.detail:
                    console.print(_indent(finding.detail, 6), markup=False, highlight=False)
    style = "green" if report.ok else "red"
    console.print(f"[{style}]{_summary(report)}[/]")
    sys.stdout.flush()
