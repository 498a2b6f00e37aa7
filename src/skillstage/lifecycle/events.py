"""How recorded events read, the same on every face: a forced promotion's two records, a
rollback's version change, an event as JSON."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from skillstage.store.store import Event

# The events whose timeline (switch, alert, archive, re-index, report) is shown with them.
WITH_TIMELINE = ("rollback", "rollout_abort")


def promotion_of(events: Sequence[Event]) -> dict[int, int]:
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


def forced(event: Event) -> list[str]:
    """The gates a promotion was forced past, as its promotion or its `force` event says."""
    key = {"promote": "forced", "force": "gates"}.get(event.kind)
    gates = (event.details or {}).get(key) if key else None
    return [str(gate) for gate in gates] if isinstance(gates, list) else []


def version_change(event: Event) -> tuple[str | None, str | None]:
    """A rollback's (version taken out, version live after it); (None, None) for other events."""
    if event.kind != "rollback":
        return None, None
    failed = (event.details or {}).get("failed_version")
    return (None if failed is None else str(failed)), event.version


def as_json(
    e: Event,
    promotion_of: dict[int, int],
    force_of: dict[int, int],
    timeline: list[dict[str, Any]] | None,
) -> dict[str, Any]:
    taken_out, live = version_change(e)
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
        "forced": forced(e),
        "force_event_id": force_of.get(e.id),
        "promotion_event_id": promotion_of.get(e.id),
        "from_version": taken_out,
        "to_version": live if e.kind == "rollback" else None,
        **({"timeline": timeline} if timeline is not None else {}),
    }
