"""`skillstage go-no-go`: may the production candidates be deployed? GO, NO-GO or DELAY."""

from __future__ import annotations

from typing import TYPE_CHECKING

import click

from skillstage.cli.context import CliContext, echo_json, is_terminal, one_skill
from skillstage.errors import EXIT_FAILED, EXIT_OK, EXIT_USAGE

if TYPE_CHECKING:
    from skillstage.lifecycle.go_no_go import Criterion

# GO 0, NO-GO 1, DELAY 2: what a deployment pipeline branches on.
EXIT_CODES = {"GO": EXIT_OK, "NO-GO": EXIT_FAILED, "DELAY": EXIT_USAGE}
_COLOURS = {"GO": "green", "NO-GO": "red", "DELAY": "yellow"}


def _mark(verdict: str) -> str:
    text = f"{verdict:<5}"
    return click.style(text, fg=_COLOURS[verdict], bold=True) if is_terminal() else text


def _show(criterion: Criterion, indent: str) -> None:
    click.echo(f"{indent}{_mark(criterion.verdict)} {criterion.name}: {criterion.evidence}")
    if criterion.verdict != "GO" and criterion.hint:
        click.echo(f"{indent}      → {criterion.hint}")


@click.command("go-no-go")
@click.argument("name", required=False)
@click.option("--skill", metavar="NAME", help="Decide for this skill alone: the same as NAME.")
@click.option(
    "--concurrency",
    type=click.IntRange(min=1, max=64),
    default=5,
    show_default=True,
    help="Threads and processes the runtime checks load the production skills from.",
)
@click.option(
    "--drill-days",
    type=click.FloatRange(min=0, min_open=True, max=3650),
    default=7,
    show_default=True,
    help="How recent the skill's passed rollback drill must be.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.pass_obj
def go_no_go(
    obj: CliContext,
    name: str | None,
    skill: str | None,
    concurrency: int,
    drill_days: float,
    as_json: bool,
) -> int:
    """Decide whether to deploy: GO, NO-GO or DELAY, each criterion with its evidence.

    Project-wide: the runtime checks of the production skills pass (`check-runtime`) and a
    monitoring target is configured. For each skill waiting to move into production (or live
    there, when nothing waits): a rollback drill passed recently (`skillstage drill`), no
    automated rollback of it is still open, its test gates passed, its README or CHANGELOG
    changed since the version before, and its sign-off is recorded.

    NO-GO: the runtime checks failed, the rollback was not drilled, a failure is open, tests
    failed, or the sign-off was rejected. DELAY: warnings, monitoring or documentation not
    ready, the sign-off not yet given. Exits 0 on GO, 1 on NO-GO, 2 on DELAY (with --json, the
    output's "decision" tells DELAY from a usage error, which also exits 2).
    """
    from skillstage import api

    chosen = one_skill(name, skill) if (name or skill) else None
    result = api.go_no_go(obj.project(), chosen, concurrency=concurrency, drill_days=drill_days)
    if as_json:
        echo_json(result.to_dict())
        return EXIT_CODES[result.decision]
    for criterion in result.criteria:
        _show(criterion, "")
    for decision in result.skills:
        click.echo(
            f"\n{decision.name} {decision.version} ({decision.digest[:12]}, in {decision.stage}): "
            f"{decision.decision}"
        )
        for criterion in decision.criteria:
            _show(criterion, "  ")
    click.echo(f"\nDecision: {_mark(result.decision).strip()}")
    return EXIT_CODES[result.decision]
