"""A person's hands on a skill: holds (automation keeps off it) and the kill switch.

- `hold_set` freezes a skill for automation: the watcher reports but does not roll it back,
  demote it or step its rollout, and promotions and rollouts into the stage are refused. Every
  automated rollback or abort sets one; only a person clears it (`hold_clear`, with who and why).
- `disable` is seed 003's "disable the feature" (`PROMPT_IMPROVER_ENABLED=false`) for one skill:
  loaders and `sync` stop serving it within their refresh interval (the catalog leaves it out,
  `resolve` answers arm "disabled"); nothing moves on disk; `enable` serves it again.

Each change is one transaction with its event (so it is in `history`) and, for the kill switch,
the routing bump loaders watch and an alert through the outbox.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from skillstage.config import Project
from skillstage.errors import UsageError
from skillstage.store import Store
from skillstage.store import controls as store_controls
from skillstage.store.controls import DISABLED, EVERY_STAGE, HOLD, Control


@dataclass
class SwitchResult:
    """What a hold or kill-switch command changed."""

    action: str  # hold_set, hold_clear, disable, enable
    name: str
    stage: str
    changed: bool
    controls: list[Control] = field(default_factory=list)
    message: str = ""
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "name": self.name,
            "stage": self.stage,
            "changed": self.changed,
            "controls": [c.to_dict() for c in self.controls],
            "message": self.message,
            "deliveries": self.deliveries,
        }


def _checked(project: Project, store: Store, name: str, stage: str | None) -> str:
    if stage is not None and stage != EVERY_STAGE and stage not in project.config.stages:
        raise UsageError(
            f"unknown stage {stage!r}", hint=f"stages: {', '.join(project.config.stages)}"
        )
    with store.reading() as tx:
        if tx.skill_id(name) is None:
            raise UsageError(
                f"no skill named {name!r} in the store",
                hint="`skillstage list` shows the skills and their stages",
            )
    return stage or EVERY_STAGE


def _where(stage: str) -> str:
    return "every stage" if stage == EVERY_STAGE else stage


def set_switch(
    project: Project,
    store: Store,
    kind: str,
    name: str,
    *,
    stage: str | None,
    actor: str,
    reason: str,
) -> SwitchResult:
    """Set a hold or the kill switch on `name` in `stage` (default: every stage)."""
    if not reason.strip():
        raise UsageError("this needs --reason", hint='e.g. --reason "investigating INC-1234"')
    where = _checked(project, store, name, stage)
    action = "hold_set" if kind == HOLD else "disable"
    at = dt.datetime.now(dt.UTC)
    with store.atomic() as tx:
        made = store_controls.set_control(
            tx, kind, name, stage=where, actor=actor, reason=reason, at=at
        )
        if made is not None:
            tx.append_event(
                action,
                name=name,
                to_stage=None if where == EVERY_STAGE else where,
                actor=actor,
                reason=reason,
                details={"stage": where},
                at=at,
            )
            ids = _announce(project, tx, kind, name, where, reason, actor, on=True)
        else:
            ids = []
        current = store_controls.controls(tx, kind=kind, name=name)
    what = "held" if kind == HOLD else "switched off"
    result = SwitchResult(
        action,
        name,
        where,
        made is not None,
        current,
        f"{name} is {what} in {_where(where)}"
        + ("" if made is not None else " already; nothing changed"),
    )
    _deliver(project, store, ids, result)
    return result


def clear_switch(
    project: Project,
    store: Store,
    kind: str,
    name: str,
    *,
    stage: str | None,
    actor: str,
    reason: str,
) -> SwitchResult:
    """Clear the holds (or the kill switch) on `name` (in `stage`, or all of them)."""
    if kind == HOLD and not reason.strip():
        raise UsageError("clearing a hold needs --reason", hint='e.g. --reason "fixed in 1.2.1"')
    _checked(project, store, name, stage)
    action = "hold_clear" if kind == HOLD else "enable"
    at = dt.datetime.now(dt.UTC)
    with store.atomic() as tx:
        cleared = store_controls.clear_control(
            tx, kind, name, stage=stage, actor=actor, reason=reason, at=at
        )
        ids: list[int] = []
        for found in cleared:
            tx.append_event(
                action,
                name=name,
                to_stage=None if found.stage == EVERY_STAGE else found.stage,
                actor=actor,
                reason=reason or None,
                details={"stage": found.stage, "set_by": found.actor, "set_reason": found.reason},
                at=at,
            )
            ids += _announce(project, tx, kind, name, found.stage, reason, actor, on=False)
    what = "hold" if kind == HOLD else "kill switch"
    stages = ", ".join(_where(c.stage) for c in cleared)
    result = SwitchResult(
        action,
        name,
        stage or EVERY_STAGE,
        bool(cleared),
        cleared,
        f"the {what} on {name} ({stages}) is cleared"
        if cleared
        else f"{name} has no {what} set{f' in {stage}' if stage else ''}; nothing changed",
    )
    _deliver(project, store, ids, result)
    return result


def _announce(
    project: Project,
    tx: Any,
    kind: str,
    name: str,
    stage: str,
    reason: str,
    actor: str,
    *,
    on: bool,
) -> list[int]:
    """The kill switch changes what serves: loaders rebuild, people are told."""
    if kind != DISABLED:
        return []
    from skillstage.integrations.notify import notification_items
    from skillstage.store.outbox import enqueue

    at = dt.datetime.now(dt.UTC)
    tx.bump_routing(at)
    event = "disabled" if on else "enabled"
    title = f"{name} {'switched off' if on else 'serving again'} in {_where(stage)}"
    return [
        enqueue(tx, "notify", item)
        for item in notification_items(
            project.config.notifications,
            event,  # type: ignore[arg-type]
            title=title,
            body=f"{title} by {actor}" + (f": {reason}" if reason else ""),
            skill=name,
            severity="warning" if on else "info",
        )
    ]


def _deliver(project: Project, store: Store, ids: list[int], result: SwitchResult) -> None:
    """After the commit: the alerts, and the registry file (it follows the routing)."""
    from skillstage.integrations.outbox import deliver
    from skillstage.runtime.registry_file import refresh_registry

    if ids:
        result.deliveries = [d.to_dict() for d in deliver(project, store, ids=ids)]
    with contextlib.suppress(OSError):  # rewritten by the next change, tick or sync
        refresh_registry(project, store)


def listed(store: Store, kind: str | None = None, *, everything: bool = False) -> list[Control]:
    """The holds and kill switches set now (every one ever, with `everything`)."""
    with store.reading() as tx:
        return store_controls.controls(tx, kind=kind, set_only=not everything)
