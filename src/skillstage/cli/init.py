"""`skillstage init`: create a project."""

from __future__ import annotations

from pathlib import Path

import click
import msgspec

from skillstage import api
from skillstage.cli.context import NonEmptyPath, echo_json
from skillstage.config import DEFAULT_CONFIG_TOML, Config


@click.command()
@click.argument("directory", type=NonEmptyPath(path_type=Path, file_okay=False), default=".")
@click.option(
    "--force",
    is_flag=True,
    help="Overwrite an existing skillstage.toml; or start a project inside another one.",
)
@click.option(
    "--print",
    "print_only",
    is_flag=True,
    help="Print the default config (TOML, or JSON with --json) and stop.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def init(directory: Path, force: bool, print_only: bool, as_json: bool) -> int:
    """Create a skillstage project in DIRECTORY (default: here).

    Writes a commented skillstage.toml with every key and its default (stages prototype, staged
    and production in .claude/skills/, a 48-hour staging SLA, the default promotion thresholds:
    pattern fidelity 0.90, outcome quality 0.85, false-positive rate below 0.05, no critical
    false negatives, 100 executions before production), creates .skillstage/ and the stage
    folders, and the database. An existing skillstage.toml is kept unless --force.
    """
    if print_only:
        if as_json:  # the defaults as a script reads them, keys as in the file
            echo_json(msgspec.to_builtins(Config()))
        else:
            click.echo(DEFAULT_CONFIG_TOML, nl=False)
        return 0
    result = api.init(directory, force=force)
    if as_json:
        echo_json(
            {
                "root": str(result.root),
                "config": str(result.config_path),
                "config_written": result.config_written,
                "created": [str(p) for p in result.created_dirs],
                "database": result.database_url,
            }
        )
        return 0
    verb = "wrote" if result.config_written else "kept existing"
    click.echo(f"{verb} {result.config_path}")
    for created in result.created_dirs:
        click.echo(f"created {created}")
    click.echo(f"database {result.database_url}")
    return 0
