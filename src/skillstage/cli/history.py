"""`skillstage history`: what happened to skills, newest first."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

import click

from skillstage.cli.context import LIMIT, CliContext, echo_json
from skillstage.lifecycle import events

if TYPE_CHECKING:
    from skillstage.store.store import Event

# The largest --limit; the text rows read up to twice as many events, and stay below it.
_MOST = 2**31 - 1


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

    A forced promotion is one row, marked forced, with its reason. A rollback within a stage
    shows the version change (2.1.0 → 2.0.0 in production). A rollback or rollout abort also
    shows its timeline: when the switch happened, the alert went out, the failed version was
    archived, the re-index ran and the failure report was written.

    --json lists every recorded event, a forced promotion's `force` record too: each names the
    gates forced past (`forced`), a forced promotion and its `force` record name each other
    (`force_event_id`, `promotion_event_id`), and a rollback names the version it took out and
    the one live after it (`from_version`, `to_version`)."""
    from skillstage import api

    project = obj.project()
    if as_json:
        echo_json(api.history_entries(project, name, limit=limit))
        return 0
    # A text row may stand for two events (a forced promotion): enough are read for LIMIT rows.
    found = api.history(project, name, limit=min(2 * limit, _MOST))
    promotion_of = events.promotion_of(found)
    shown = [e for e in found if e.id not in promotion_of][:limit]
    steps = api.timelines(project, [e.id for e in shown if e.kind in events.WITH_TIMELINE])
    if not shown:
        click.echo("No events yet.")
        return 0
    for e in shown:
        click.echo(_row(e))
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


def _row(e: Event) -> str:
    """An event's line: when, what, which skill and version, the move, who."""
    version, move = e.version or "", f"{e.from_stage or '-'} → {e.to_stage or '-'}"
    taken_out, live = events.version_change(e)
    if taken_out is not None and e.from_stage == e.to_stage:
        # A rollback within a stage: the version changed, not the stage.
        version, move = f"{taken_out} → {live or '-'}", f"in {e.to_stage or '-'}"
    if e.kind == "drill":  # a rehearsal on a scratch copy: nothing moved here
        version, move = version + ("  (passed)" if e.success else "  (failed)"), f"in {e.to_stage}"
    elif not e.success:
        version += "  (not approved)" if e.kind == "approval" else "  (refused)"
    if e.kind == "promote" and (forced := events.forced(e)):
        version += f"  (forced past: {', '.join(forced)})"
    return f"{e.at:%Y-%m-%d %H:%M:%S}  {e.kind:<9} {e.name} {version}  {move}  by {e.actor}"


def _after(start: dt.datetime, at: str) -> str:
    """How long after the event a step came: "0.2s", "3m 10s"."""
    seconds = max(0.0, (dt.datetime.fromisoformat(at) - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest}s"
