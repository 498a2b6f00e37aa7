"""`skillstage drill NAME`: rehearse a rollback of NAME on a scratch copy, and record it."""

from __future__ import annotations

import click

from skillstage.cli.context import CliContext, echo_json
from skillstage.errors import EXIT_FAILED, EXIT_OK


@click.command()
@click.argument("name")
@click.option("--by", "actor", metavar="ACTOR", help="Who runs the drill (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the drill's result as JSON.")
@click.pass_obj
def drill(obj: CliContext, name: str, actor: str | None, as_json: bool) -> int:
    """Rehearse a rollback of NAME: promote and roll back its current versions in a scratch
    copy of the project, timing and checking each step. Nothing live changes.

    When a newer version waits in the stage before production, the drill promotes it, then
    rolls production back to the live version; otherwise it rolls production back to the
    version a rollback would restore, then restores the live one. After each step the store and
    the directory on disk must hold the version expected.

    The drill is recorded (`skillstage history NAME`), passed or failed; the rollback-drill
    gate reads the latest one. No gates, hooks, smoke checks, notifications or git commits run
    in the scratch copy.

    Exit codes: 0 the drill passed; 1 a step failed (the output names it), or there is nothing
    to roll back to (nothing is recorded then); 2 usage or configuration error."""
    from skillstage import api

    result = api.drill(obj.project(), name, actor=actor)
    if as_json:
        echo_json(result.to_dict())
        return EXIT_OK if result.passed else EXIT_FAILED
    for step in result.steps:
        mark = click.style("✓", fg="green") if step.ok else click.style("✗", fg="red")
        click.echo(f"{mark} {step.step:<8} {step.seconds:7.3f} s  {step.action}")
        click.echo(f"    {step.message}")
    if result.passed:
        click.echo(
            f"Drill passed: {name} in {result.stage} in {result.seconds:.3f} s "
            f"(recorded as event {result.event_id})."
        )
        return EXIT_OK
    failed = result.failed_step
    click.echo(
        f"Drill FAILED at the {failed.step if failed else '?'} step: a real rollback of {name} "
        f"would fail the same way (recorded as event {result.event_id}).",
        err=True,
    )
    return EXIT_FAILED
