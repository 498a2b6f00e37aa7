"""`skillstage history`: what happened to skills, newest first."""

from __future__ import annotations

import datetime as dt

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
    """Promotions, rollbacks, forced gates, holds, switches and registrations, newest first.

    A rollback or rollout abort also shows its timeline: when the switch happened, the alert
    went out, the failed version was archived, the re-index ran and the failure report was
    written."""
    project = obj.project()
    events = api.history(project, name, limit=limit)
    steps = api.timelines(
        project, [e.id for e in events if e.kind in ("rollback", "rollout_abort")]
    )
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
                    **({"timeline": steps[e.id]} if e.id in steps else {}),
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
        if e.approver and e.kind == "rollback":
            click.echo(f"    approved by: {e.approver} (manual override)")
        if e.id in steps:
            click.echo(
                "    timeline: "
                + ", ".join(f"{step['step']} +{_after(e.at, step['at'])}" for step in steps[e.id])
            )
    return 0


def _after(start: dt.datetime, at: str) -> str:
    """How long after the event a step came: "0.2s", "3m 10s"."""
    seconds = max(0.0, (dt.datetime.fromisoformat(at) - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest}s"
