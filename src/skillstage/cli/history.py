"""`skillstage history`: what happened to skills, newest first."""

from __future__ import annotations

import click

from skillstage import api
from skillstage.cli.context import LIMIT, CliContext, echo_json


@click.command()
@click.argument("name", required=False)
@click.option(
    "--limit",
    type=LIMIT,
    default=50,
    show_default=True,
    help="At most this many events.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the events as JSON.")
@click.pass_obj
def history(obj: CliContext, name: str | None, limit: int, as_json: bool) -> int:
    """Promotions, rollbacks, forced gates and registrations, newest first (seed 000's
    "Promotion History")."""
    events = api.history(obj.project(), name, limit=limit)
    if as_json:
        echo_json(
            [
                {
                    "id": e.id,
                    "kind": e.kind,
                    "skill_name": e.name,
                    "version": e.version,
                    "digest": e.digest,
                    "from_stage": e.from_stage,
                    "to_stage": e.to_stage,
                    "success": e.success,
                    "actor": e.actor,
                    "reason": e.reason,
                    "approver": e.approver,
                    "approval_ticket": e.approval_ticket,
                    "trigger_metric": e.trigger_metric,
                    "path": e.path,
                    "details": e.details,
                    "at": e.at.isoformat(),
                }
                for e in events
            ]
        )
        return 0
    if not events:
        click.echo("No events yet.")
        return 0
    for e in events:
        move = f"{e.from_stage or '-'} → {e.to_stage or '-'}"
        outcome = "not approved" if e.kind == "approval" else "refused"
        version = (e.version or "") + ("" if e.success else f"  ({outcome})")
        click.echo(
            f"{e.at:%Y-%m-%d %H:%M:%S}  {e.kind:<9} {e.name} {version}  {move}  by {e.actor}"
        )
        if e.reason:
            click.echo(f"    reason: {e.reason}")
        if e.trigger_metric:
            click.echo(f"    trigger: {e.trigger_metric}")
    return 0
