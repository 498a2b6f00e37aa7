"""What follows a promotion or rollback: the git commit, the deploy and post-change hooks, the
re-index, the stage's smoke check and notifications, queued in the outbox in the change's own
transaction (`move.py`) and delivered after it; and why one asked for will not happen.

A delivery that fails is recorded in the outbox and retried later (`skillstage outbox --retry`);
it never undoes the change.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

from skillstage.config import Project
from skillstage.store import Store, Transaction
from skillstage.store.controls import record_step

GIT_COMMIT_KIND = "git_commit"
SMOKE_KIND = "smoke"  # the stage's post-promotion check (seed 001 Step 6)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def side_effect_warnings(
    project: Project, *, deploy: bool = False, notify_event: str | None = None
) -> list[str]:
    """Why a side effect asked for (`--deploy`, `--notify` of an event) will not happen: the
    configuration has nothing for it. Said, not silently skipped."""
    source = project.source or "skillstage.toml"
    found = []
    if deploy and not project.config.hooks.deploy:
        found.append(
            f"--deploy: [hooks] deploy is not set, so nothing is deployed; set the command in "
            f"{source}"
        )
    notifications = project.config.notifications
    if notify_event is not None and notify_event not in notifications.events:
        found.append(
            f"--notify: {notify_event} is not in [notifications] events, so none is sent; "
            f'add "{notify_event}" to events in {source}'
        )
    elif notify_event is not None and not notifications.urls:
        found.append(
            "--notify: [notifications] urls is empty, so none is sent; add an Apprise URL "
            f"(slack://…, mailto://…, json://host/path) in {source}"
        )
    return found


# -- git ----------------------------------------------------------------------------------


def git_repository(project: Project) -> Path:
    """The repository a --git-commit goes to; seed 000's "Git commit failed" when there is none."""
    from skillstage.integrations.git import GitSetupError, repository_root

    root = repository_root(project.root, timeout=project.config.git.timeout_seconds)
    if root is None:
        raise GitSetupError(
            f"Git commit failed: {project.root} is not in a git repository",
            hint='git init; git config user.name "Your Name"; git config user.email '
            '"your@email.com" — or promote without --git-commit',
        )
    return root


def _sla_line(project: Project, store: Store, name: str, stage: str, at: dt.datetime) -> str:
    hours = project.config.stages[stage].sla_hours
    if hours is None:
        return "No SLA"
    current = store.current_assignments(stage=stage, name=name)
    if not current:
        return f"Within {hours:g} hours"
    age = (at - current[0].entered_at).total_seconds() / 3600
    return (
        f"Within {hours:g} hours"
        if age <= hours
        else f"Breached ({age - hours:.1f}h over {hours:g} hours)"
    )


def promotion_commit(
    project: Project,
    store: Store,
    repo: Path,
    name: str,
    *,
    from_stage: str,
    source: Path,
    to_stage: str,
    target: Path,
    tests: str | None,
    forced: bool,
    at: dt.datetime,
    actor: str,
) -> dict[str, Any]:
    """The git_commit outbox payload: seed 000's message over the paths this move touches
    (`tests`: the tests gate's status, None when the transition has none; `forced`: the
    promotion went past failing gates); with [maturity] enabled, the label the promoted copy's
    maturity lines are rewritten to."""
    from skillstage.integrations.git import promotion_message

    stages = project.config.stages
    message = promotion_message(
        name,
        stages[from_stage].label or from_stage,
        stages[to_stage].label or to_stage,
        at=at,
        by=actor,
        validation="FORCED" if forced else "PASSED",
        tests={"pass": "PASSED", "skip": "SKIPPED", "warn": "WARNED"}.get(
            tests or "skip", "FAILED (forced)"
        ),
        sla=_sla_line(project, store, name, from_stage, at),
    )
    payload: dict[str, Any] = {
        "repo_root": str(repo),
        "paths": [str(source), str(target)],
        "message": message,
    }
    maturity = project.config.maturity
    if maturity.enabled:
        # Seed 001 Step 5: the promoted copy's maturity lines say the new stage, in this commit
        # (rewritten in the copy before it goes live: lifecycle/move.py).
        label = maturity.labels.get(to_stage) or stages[to_stage].label or to_stage
        payload["maturity"] = {"label": label, "files": list(maturity.files)}
    return payload


def rollback_commit(
    repo: Path,
    name: str,
    paths: list[str],
    *,
    version: str,
    from_version: str,
    at: dt.datetime,
    actor: str,
    reason: str,
    trigger_metric: str | None,
) -> dict[str, Any]:
    """The git_commit outbox payload of a rollback to `version` over `paths`."""
    from skillstage.integrations.git import rollback_message

    return {
        "repo_root": str(repo),
        "paths": paths,
        "message": rollback_message(
            name,
            version,
            at=at,
            by=actor,
            reason=reason,
            trigger_metric=trigger_metric,
            from_version=from_version,
        ),
    }


# -- the outbox ---------------------------------------------------------------------------


def queue_side_effects(
    project: Project,
    tx: Transaction,
    details: Mapping[str, Any],
    event: str,
    *,
    event_id: int | None = None,
) -> list[int]:
    """Outbox items for what follows a state change: deploy (if asked), the post-change hook,
    re-index (seed 002: after every state change), notifications (if asked), the stage's smoke
    check after a promotion. A rollback's re-index and alert record their step of its timeline
    (event `event_id`) when delivered."""
    from skillstage.integrations.hooks import hook_item
    from skillstage.store.outbox import enqueue

    ids = []
    if details.get("git_commit"):
        ids.append(enqueue(tx, GIT_COMMIT_KIND, details["git_commit"]))
    hooks = project.config.hooks
    names = ["deploy"] if details.get("deploy") else []
    names += ["post_promote" if event == "promoted" else "post_rollback", "reindex"]
    for hook in names:
        payload = hook_item(
            hooks,
            hook,  # type: ignore[arg-type]
            event=event,
            skill=details["name"],
            version=details["version"],
            digest=details["digest"],
            from_stage=details.get("from_stage"),
            to_stage=details.get("to_stage"),
            path=details["target"],
        )
        if payload is not None:
            if hook == "reindex" and event_id is not None:
                payload["timeline"] = {"event_id": event_id, "step": "reindexed"}
            ids.append(enqueue(tx, hook, payload))
        elif hook == "reindex" and event_id is not None:
            record_step(tx, event_id, "reindexed", at=_now(), detail="no reindex hook configured")
    smoke = project.config.stages[details["to_stage"]].smoke if event == "promoted" else None
    if smoke:
        ids.append(
            enqueue(
                tx,
                SMOKE_KIND,
                {
                    "hook": SMOKE_KIND,
                    "command": smoke,
                    "event": event,
                    "skill": details["name"],
                    "version": details["version"],
                    "digest": details["digest"],
                    "from_stage": details.get("from_stage"),
                    "to_stage": details["to_stage"],
                    "path": details["target"],
                },
            )
        )
    if details.get("notify"):
        automated = bool(details.get("hold"))
        severity = "critical" if automated else "warning" if event == "rolled_back" else "info"
        for payload in _notifications(project, event, details, severity):
            if event_id is not None:
                payload["timeline"] = {"event_id": event_id, "step": "alert_sent"}
            ids.append(enqueue(tx, "notify", payload))
    return ids


def _notifications(
    project: Project, event: str, details: Mapping[str, Any], severity: str
) -> list[dict[str, Any]]:
    """The notify payloads of `event` (one per URL that hears it at `severity`), its title and
    body from `event_message`."""
    from skillstage.integrations.notify import notification_items

    title, body = event_message(event, details)
    return notification_items(
        project.config.notifications,
        event,  # type: ignore[arg-type]
        title=title,
        body=body,
        skill=details["name"],
        severity=severity,  # type: ignore[arg-type]
    )


def event_message(event: str, details: Mapping[str, Any]) -> tuple[str, str]:
    name, version = details["name"], details.get("version")
    if event == "promoted":
        return (
            f"Skill promoted: {name} {version}",
            f"{name} {version} moved from {details.get('from_stage')} to "
            f"{details.get('to_stage')} by {details.get('actor')}.",
        )
    if event == "rolled_back":
        metric = f" ({details['trigger_metric']})" if details.get("trigger_metric") else ""
        return (
            f"Skill rolled back: {name} to {version}",
            f"{name} {details.get('bad_version')} was rolled back to {version} in "
            f"{details.get('to_stage')}: {details.get('reason')}{metric}.",
        )
    return (
        f"Skill promotion blocked: {name} {version}",
        f"{name} {version} did not pass its gates for {details.get('to_stage')}: "
        f"{details.get('error')}",
    )


class Receipts(Protocol):
    """Where a change's deliveries are reported (a `PromotionResult`)."""

    deliveries: list[dict[str, Any]]
    commit_hash: str | None
    deployment_id: str | None


def deliver_now(project: Project, store: Store, ids: list[int], into: Receipts) -> None:
    """Deliver this change's outbox items now (after commit), each reported in `into`. A failure
    is recorded in the outbox and retried later (`skillstage outbox --retry`); it never undoes
    the change."""
    if not ids:
        return
    from skillstage.integrations.outbox import deliver

    for delivery in deliver(project, store, ids=ids):
        into.deliveries.append(delivery.to_dict())
        if delivery.kind == GIT_COMMIT_KIND and delivery.ok:
            into.commit_hash = delivery.output
        elif delivery.deployment_id:
            into.deployment_id = delivery.deployment_id


def notify_now(
    project: Project, store: Store, event: str, details: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """A notification that follows no state change (a gate failed: `details` has the skill's
    name, version, target stage and the error): queued, then delivered; the deliveries."""
    from skillstage.integrations.outbox import deliver
    from skillstage.store.outbox import enqueue

    with store.atomic() as tx:
        ids = [
            enqueue(tx, "notify", payload)
            for payload in _notifications(project, event, details, "info")
        ]
    return [delivery.to_dict() for delivery in deliver(project, store, ids=ids)] if ids else []
