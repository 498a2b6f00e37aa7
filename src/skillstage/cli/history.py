"""`skillstage history`: what happened to skills, newest first."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import click

from skillstage.cli.context import LIMIT, CliContext, echo_json

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
    # A text row may stand for two events (a forced promotion): enough are read for LIMIT rows.
    events = api.history(project, name, limit=limit if as_json else min(2 * limit, _MOST))
    promotion_of = _promotion_of(events)
    if not as_json:
        events = [e for e in events if e.id not in promotion_of][:limit]
    steps = api.timelines(
        project, [e.id for e in events if e.kind in ("rollback", "rollout_abort")]
    )
    if as_json:
        force_of = {promotion: force for force, promotion in promotion_of.items()}
        echo_json([_as_json(e, promotion_of, force_of, steps.get(e.id)) for e in events])
        return 0
    if not events:
        click.echo("No events yet.")
        return 0
    for e in events:
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


def _promotion_of(events: Sequence[Event]) -> dict[int, int]:
    """{a `force` event's id: its promotion's event id}. A forced promotion is recorded twice:
    as the promotion and as a `force` event of the same skill, content and instant."""
    promotions = {
        (e.name, e.digest, e.at): e.id for e in events if e.kind == "promote" and e.success
    }
    return {
        e.id: promotions[(e.name, e.digest, e.at)]
        for e in events
        if e.kind == "force" and (e.name, e.digest, e.at) in promotions
    }


def _forced(event: Event) -> list[str]:
    """The gates a promotion was forced past, as its promotion or its `force` event says."""
    key = {"promote": "forced", "force": "gates"}.get(event.kind)
    gates = (event.details or {}).get(key) if key else None
    return [str(gate) for gate in gates] if isinstance(gates, list) else []


def _version_change(event: Event) -> tuple[str | None, str | None]:
    """A rollback's (version taken out, version live after it); (None, None) for other events."""
    if event.kind != "rollback":
        return None, None
    failed = (event.details or {}).get("failed_version")
    return (None if failed is None else str(failed)), event.version


def _row(e: Event) -> str:
    """An event's line: when, what, which skill and version, the move, who."""
    version, move = e.version or "", f"{e.from_stage or '-'} → {e.to_stage or '-'}"
    taken_out, live = _version_change(e)
    if taken_out is not None and e.from_stage == e.to_stage:
        # A rollback within a stage: the version changed, not the stage.
        version, move = f"{taken_out} → {live or '-'}", f"in {e.to_stage or '-'}"
    if not e.success:
        version += "  (not approved)" if e.kind == "approval" else "  (refused)"
    if e.kind == "promote" and (forced := _forced(e)):
        version += f"  (forced past: {', '.join(forced)})"
    return f"{e.at:%Y-%m-%d %H:%M:%S}  {e.kind:<9} {e.name} {version}  {move}  by {e.actor}"


def _as_json(
    e: Event,
    promotion_of: dict[int, int],
    force_of: dict[int, int],
    timeline: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    taken_out, live = _version_change(e)
    return {
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
        "forced": _forced(e),
        "force_event_id": force_of.get(e.id),
        "promotion_event_id": promotion_of.get(e.id),
        "from_version": taken_out,
        "to_version": live if e.kind == "rollback" else None,
        **({"timeline": timeline} if timeline is not None else {}),
    }


def _after(start: dt.datetime, at: str) -> str:
    """How long after the event a step came: "0.2s", "3m 10s"."""
    seconds = max(0.0, (dt.datetime.fromisoformat(at) - start).total_seconds())
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes}m {rest}s"
