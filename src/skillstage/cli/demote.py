"""`skillstage demote-check`: staged versions that broke a demotion rule, moved back."""

from __future__ import annotations

import click

from skillstage import api
from skillstage.cli.context import CliContext, echo_json
from skillstage.errors import EXIT_FAILED, EXIT_OK


@click.command("demote-check")
@click.option("--apply", "apply_now", is_flag=True, help="Demote them (atomic, audited).")
@click.option("--by", "actor", metavar="ACTOR", help="Who demotes (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
@click.pass_obj
def demote_check(obj: CliContext, apply_now: bool, actor: str | None, as_json: bool) -> int:
    """List staged versions that broke a demotion rule: fewer than
    min_executions within min_executions_within_days (100 in 7 days), pattern fidelity that
    never reached its threshold, or a regression against the prototype baseline. With --apply,
    move each back to the stage before through the promoter.

    Exits 1 when a version broke a rule and was not demoted (for cron: something to do).
    """
    result = api.demote_check(obj.project(), apply=apply_now, actor=actor)
    if as_json:
        echo_json(result.to_dict())
    else:
        if not result.demotions:
            click.echo(f"{result.checked} version(s) checked: none to demote")
        for d in result.demotions:
            state = (
                f"demoted to {d.to_stage}"
                if d.applied
                else f"NOT demoted: {d.error}"
                if d.error
                else f"would go back to {d.to_stage} (--apply)"
            )
            click.echo(f"{d.name} {d.version} in {d.stage}: {state}")
            for rule in d.rules:
                click.echo(f"    {rule}")
    pending = [d for d in result.demotions if not d.applied]
    return EXIT_FAILED if pending else EXIT_OK
