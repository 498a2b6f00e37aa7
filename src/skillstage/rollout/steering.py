"""Steering an open rollout: a step by analysis (or by hand), pause, resume, abort, retry, the
tick that does it for every rollout, and completion through the promoter.

A rollout serves a candidate (the version waiting in the stage before) to a share of a stage's
traffic beside the stable version live there. Every state change is one transaction that also
appends an event (so it is in `history`) and bumps the routing generation (so every loader sees it
within its refresh interval). Completion is an ordinary promotion (the promoter's journaled,
atomic swap) whose transaction also closes the rollout, so a crash mid-completion is recovered
whole, with the rest of the promotion.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Mapping
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillstageError, UsageError
from skillstage.rollout.analysis import FAILED, SUCCESSFUL, Verdict, analyse
from skillstage.rollout.engine import export, opened, recover, start
from skillstage.rollout.plan import (
    RolloutError,
    RolloutOutcome,
)
from skillstage.rollout.plan import (
    now as _now,
)
from skillstage.store import Store, Transaction
from skillstage.store import rollouts as store_rollouts
from skillstage.store.controls import HOLD, control_on, record_step, set_control
from skillstage.store.rollouts import RolloutRecord

# -- changing state ------------------------------------------------------------------------------


def _change(
    project: Project,
    store: Store,
    rollout: RolloutRecord,
    kind: str,
    outcome: RolloutOutcome,
    *,
    actor: str,
    at: dt.datetime,
    why: str | None = None,
    trigger_metric: str | None = None,
    details: Mapping[str, Any] | None = None,
    hold: bool = False,
    **columns: Any,
) -> RolloutRecord:
    """One state change of a rollout (`columns`), its event, its alert and the routing bump, in
    one transaction; the rollout as it is after. Refused when another process changed it first
    (the update names the state it changes from, so of two writers one wins). `hold` also holds
    the skill in the stage (an automated abort: no retry of that version until a person
    clears it)."""
    with store.atomic() as tx:
        if not store_rollouts.update_rollout(
            tx, rollout.id, expect=(rollout.state, rollout.step_index), **columns
        ):
            current = store_rollouts.rollouts(tx, rollout_id=rollout.id)[0]
            raise RolloutError(
                f"rollout #{rollout.id} of {rollout.name} was changed by another process "
                f"(now {current.state} at step {current.step_index + 1})",
                hint=f"`skillstage rollout status {rollout.name}` shows it",
            )
        event_id = tx.append_event(
            kind,
            name=rollout.name,
            version=rollout.candidate_version,
            digest=rollout.candidate_digest,
            from_stage=rollout.candidate_stage,
            to_stage=rollout.stage,
            actor=actor,
            reason=why,
            trigger_metric=trigger_metric,
            details={"rollout_id": rollout.id, **(details or {})},
            at=at,
        )
        tx.bump_routing(at)
        if hold:
            set_control(
                tx,
                HOLD,
                rollout.name,
                stage=rollout.stage,
                actor=actor,
                reason=f"rollout aborted automatically: {why}"
                + (f" ({trigger_metric})" if trigger_metric else ""),
                digest=rollout.candidate_digest,
                details={"event_id": event_id, "rollout_id": rollout.id},
                at=at,
            )
        outcome.event_id = event_id
        if kind == "rollout_abort":  # seed 002 §3.2's timeline: traffic is back at this commit
            record_step(tx, event_id, "switched", at=at)
        alerts = (
            _queue_alert(project, tx, rollout, kind, why, trigger_metric, event_id)
            if kind in ("rollout_abort", "rollout_pause")
            else []
        )
        changed = store_rollouts.rollouts(tx, rollout_id=rollout.id)[0]
    outcome.rollout = changed
    if alerts:
        from skillstage.integrations.outbox import deliver

        outcome.deliveries += [d.to_dict() for d in deliver(project, store, ids=alerts)]
    export(project, store, outcome)
    return changed


def _queue_alert(
    project: Project,
    tx: Transaction,
    rollout: RolloutRecord,
    kind: str,
    why: str | None,
    trigger_metric: str | None,
    event_id: int,
) -> list[int]:
    """Seed 002 §3.2: an alert at once, through the outbox (delivered after the commit); an
    abort's delivery records its "alert_sent" step."""
    from skillstage.integrations.notify import notification_items
    from skillstage.store.outbox import enqueue

    event = "rollout_aborted" if kind == "rollout_abort" else "rollout_paused"
    what = "aborted" if kind == "rollout_abort" else "paused"
    metric = f" ({trigger_metric})" if trigger_metric else ""
    title = f"Rollout {what}: {rollout.name} {rollout.candidate_version}"
    body = (
        f"The rollout of {rollout.name} {rollout.candidate_version} in {rollout.stage} was {what}"
        f" at {rollout.steps[rollout.step_index]}%: {why}{metric}. All traffic is on "
        f"{rollout.stable_version}."
    )
    items = notification_items(
        project.config.notifications,
        event,  # type: ignore[arg-type]
        title=title,
        body=body,
        skill=rollout.name,
        severity="critical" if kind == "rollout_abort" else "warning",
    )
    for payload in items:
        if kind == "rollout_abort":
            payload["timeline"] = {"event_id": event_id, "step": "alert_sent"}
    return [enqueue(tx, "notify", payload) for payload in items]


def pause(
    project: Project,
    store: Store,
    name: str,
    *,
    actor: str,
    reason: str | None = None,
    stage: str | None = None,
) -> RolloutOutcome:
    """All traffic back on the stable version until `resume`; the rollout keeps its step."""
    rollout = opened(store, project, name, stage)
    if rollout.state == "paused":
        raise RolloutError(
            f"the rollout of {name} is paused already",
            hint=f"`skillstage rollout resume {name}` resumes it",
        )
    outcome = RolloutOutcome(success=True, name=name, action="paused")
    why = reason or "paused by hand"
    _change(
        project,
        store,
        rollout,
        "rollout_pause",
        outcome,
        actor=actor,
        at=_now(),
        why=why,
        state="paused",
        reason=why,
    )
    return outcome


def resume(
    project: Project, store: Store, name: str, *, actor: str, stage: str | None = None
) -> RolloutOutcome:
    """Serve the candidate its step's share again; the step's clock and count start over."""
    rollout = opened(store, project, name, stage)
    if rollout.state != "paused":
        raise RolloutError(f"the rollout of {name} is not paused")
    outcome = RolloutOutcome(success=True, name=name, action="resumed")
    at = _now()
    _change(
        project,
        store,
        rollout,
        "rollout_resume",
        outcome,
        actor=actor,
        at=at,
        state="active",
        step_started_at=at,
        reason=None,
    )
    return outcome


def abort(
    project: Project,
    store: Store,
    name: str,
    *,
    actor: str,
    reason: str,
    trigger_metric: str | None = None,
    stage: str | None = None,
    verdict: Verdict | None = None,
    hold: bool = False,
) -> RolloutOutcome:
    """All traffic back on the stable version for good; the candidate archived as failed, with
    the reason and the metric that triggered it, and an alert sent (`hold`: and the skill held,
    as after an automated abort)."""
    from skillstage.lifecycle.archive import archive_path, record_archive_reason

    if not reason.strip():
        raise UsageError("an abort needs --reason", hint='e.g. --reason "fidelity dropped"')
    rollout = opened(store, project, name, stage)
    outcome = RolloutOutcome(success=True, name=name, action="aborted", verdict=verdict)
    at = _now()
    _change(
        project,
        store,
        rollout,
        "rollout_abort",
        outcome,
        actor=actor,
        at=at,
        why=reason,
        trigger_metric=trigger_metric,
        details={
            "verdict": verdict.to_dict() if verdict else None,
            **({"automated": True} if hold else {}),
        },
        hold=hold,
        state="aborted",
        ended_at=at,
        reason=reason,
        verdict=verdict.to_dict() if verdict else rollout.verdict,
    )
    entry = archive_path(project, name, rollout.candidate_version, rollout.candidate_digest)
    if entry.exists():
        try:
            record_archive_reason(
                entry, "failed", why=reason, trigger_metric=trigger_metric, rollout_id=rollout.id
            )
            if outcome.event_id is not None:
                with store.atomic() as tx:
                    record_step(tx, outcome.event_id, "archived", at=_now(), detail=str(entry))
        except OSError as exc:
            outcome.warnings.append(f"the archive note could not be written: {exc.strerror or exc}")
    return outcome


def advance(
    project: Project,
    store: Store,
    name: str,
    *,
    actor: str,
    force: bool = False,
    reason: str | None = None,
    stage: str | None = None,
) -> RolloutOutcome:
    """The next step (or completion, after the last), when the analysis says the step succeeded,
    or with `force` and a reason whatever it says."""
    from skillstage.lifecycle.readiness import ingest_on_demand

    if force and not (reason or "").strip():
        raise UsageError("--force needs --reason", hint='e.g. --reason "enough data by hand"')
    rollout = opened(store, project, name, stage)
    if rollout.state != "active":
        raise RolloutError(
            f"the rollout of {name} is paused", hint=f"`skillstage rollout resume {name}` first"
        )
    ingest_on_demand(project, store)
    with store.reading() as tx:
        verdict = analyse(project, tx, rollout, _now())
    if verdict.outcome != SUCCESSFUL and not force:
        return RolloutOutcome(
            success=False,
            name=name,
            action="waiting" if verdict.outcome != FAILED else "blocked",
            rollout=rollout,
            verdict=verdict,
            error=f"step {rollout.step_index + 1} is {verdict.outcome}: "
            + "; ".join(verdict.reasons),
        )
    return _step(project, store, rollout, verdict, actor=actor, forced=force, reason=reason)


def _step(
    project: Project,
    store: Store,
    rollout: RolloutRecord,
    verdict: Verdict,
    *,
    actor: str,
    forced: bool = False,
    reason: str | None = None,
) -> RolloutOutcome:
    if rollout.last_step:
        return _complete(
            project, store, rollout, verdict, actor=actor, forced=forced, reason=reason
        )
    outcome = RolloutOutcome(success=True, name=rollout.name, action="advanced", verdict=verdict)
    at = _now()
    weight = rollout.steps[rollout.step_index + 1]
    _change(
        project,
        store,
        rollout,
        "rollout_step",
        outcome,
        actor=actor,
        at=at,
        why=reason or f"step {rollout.step_index + 1} {verdict.outcome}: now {weight}%",
        details={"weight": weight, "forced": forced, "verdict": verdict.to_dict()},
        step_index=rollout.step_index + 1,
        step_started_at=at,
        verdict=verdict.to_dict(),
    )
    return outcome


def _complete(
    project: Project,
    store: Store,
    rollout: RolloutRecord,
    verdict: Verdict,
    *,
    actor: str,
    forced: bool,
    reason: str | None,
) -> RolloutOutcome:
    """The last step succeeded: the candidate is promoted into the stage by the promoter, whose
    transaction closes the rollout."""
    from skillstage.lifecycle import promote as promoter

    why = reason or (
        f"rollout #{rollout.id} completed: {rollout.candidate_version} served "
        f"{' → '.join(f'{s}%' for s in rollout.steps)}"
    )
    options: dict[str, Any] = {
        "to": rollout.stage,
        "actor": actor,
        "overwrite": True,
        "force": forced,
        "reason": why,
        "digest": rollout.candidate_digest,  # the content that served, not a later copy
        "rollout_id": rollout.id,
    }
    # A dry run first: a completion its gates refuse is said at every tick, but recorded as a
    # refused promotion only when someone asks for it (advance), not once a tick.
    result = promoter.promote(project, store, rollout.name, dry_run=True, **options)
    if result.success:
        result = promoter.promote(
            project, store, rollout.name, rollout_verdict=verdict.to_dict(), **options
        )
    outcome = RolloutOutcome(
        success=result.success,
        name=rollout.name,
        action="completed" if result.success else "blocked",
        verdict=verdict,
        gates=result.gates,
        error=None if result.success else f"completion refused: {result.error}",
        warnings=result.warnings,
        deliveries=result.deliveries,
    )
    with store.reading() as tx:
        outcome.rollout = store_rollouts.rollouts(tx, rollout_id=rollout.id)[0]
    return outcome


def retry(
    project: Project, store: Store, name: str, *, actor: str, stage: str | None = None
) -> RolloutOutcome:
    """Start again, from the first step, the last rollout of `name` that was aborted, with its
    settings (its candidate must still be the copy waiting in the stage before)."""
    with store.reading() as tx:
        if tx.skill_id(name) is None:
            raise UsageError(f"no skill named {name!r} in the store")
        found = store_rollouts.rollouts(tx, name=name, stage=stage, limit=1)
    if not found or found[0].state != "aborted":
        state = f"its last rollout is {found[0].state}" if found else "it has had no rollout"
        raise RolloutError(
            f"{name} has no aborted rollout to retry: {state}",
            hint=f"`skillstage rollout start {name}` starts a new one",
        )
    last = found[0]
    return start(
        project,
        store,
        name,
        actor=actor,
        candidate=last.candidate_digest,
        stage=last.stage,
        steps=last.steps,
        step_min_duration_s=last.step_min_duration_s,
        step_min_executions=last.step_min_executions,
        segments=last.segments,
        group_id=last.group_id,
        on_failure=last.on_failure,
        retry_of=last.id,
        reason=f"retry of rollout #{last.id}",
    )


# -- tick ----------------------------------------------------------------------------------------


def tick(
    project: Project, store: Store, *, actor: str = "skillstage-rollout"
) -> list[RolloutOutcome]:
    """Evaluate every active rollout once: advance a successful step (complete after the last),
    abort (or pause, as configured) a failed one, and leave the rest waiting, saying for what.
    A held skill's rollout is left as it is (a person holds it); an abort holds the skill."""
    from skillstage.lifecycle.readiness import ingest_on_demand
    from skillstage.runtime.registry_file import refresh_registry

    ingest_on_demand(project, store)
    with store.reading() as tx:
        active = [r for r in store_rollouts.rollouts(tx, open_only=True) if r.state == "active"]
    outcomes = []
    for rollout in active:
        recover(project, store, rollout.name)
    with contextlib.suppress(OSError):  # said by the change that writes it
        refresh_registry(project, store)
    for rollout in active:
        try:
            outcomes.append(_tick_one(project, store, rollout, actor=actor))
        except SkillstageError as exc:
            outcomes.append(
                RolloutOutcome(
                    success=False,
                    name=rollout.name,
                    action="blocked",
                    rollout=rollout,
                    error=str(exc),
                )
            )
    return outcomes


def _tick_one(
    project: Project, store: Store, rollout: RolloutRecord, *, actor: str
) -> RolloutOutcome:
    if recover(project, store, rollout.name):
        with store.reading() as tx:
            rollout = store_rollouts.rollouts(tx, rollout_id=rollout.id)[0]
        if rollout.state != "active":
            return RolloutOutcome(
                success=True,
                name=rollout.name,
                action="completed" if rollout.state == "completed" else rollout.state,
                rollout=rollout,
                warnings=["a move an earlier process left half done was settled first"],
            )
    with store.reading() as tx:
        held = control_on(tx, HOLD, rollout.name, rollout.stage)
        verdict = analyse(project, tx, rollout, _now())
    if held is not None:
        return RolloutOutcome(
            success=True,
            name=rollout.name,
            action="held",
            rollout=rollout,
            verdict=verdict,
            warnings=[f"held by {held.actor}: {held.reason}; nothing is changed until cleared"],
        )
    if verdict.outcome == SUCCESSFUL:
        return _step(project, store, rollout, verdict, actor=actor)
    if verdict.outcome == FAILED:
        why = verdict.trigger or "analysis_failed"
        if rollout.on_failure == "pause":
            outcome = RolloutOutcome(
                success=False, name=rollout.name, action="paused", verdict=verdict
            )
            _change(
                project,
                store,
                rollout,
                "rollout_pause",
                outcome,
                actor=actor,
                at=_now(),
                why=why,
                trigger_metric=verdict.trigger_metric,
                details={"verdict": verdict.to_dict()},
                state="paused",
                reason="; ".join(verdict.reasons),
                verdict=verdict.to_dict(),
            )
            return outcome
        aborted = abort(
            project,
            store,
            rollout.name,
            actor=actor,
            reason=why,
            trigger_metric=verdict.trigger_metric,
            stage=rollout.stage,
            verdict=verdict,
            hold=True,
        )
        aborted.success = False
        return aborted
    with store.atomic() as tx:
        store_rollouts.update_rollout(tx, rollout.id, verdict=verdict.to_dict())
    return RolloutOutcome(
        success=True, name=rollout.name, action="waiting", rollout=rollout, verdict=verdict
    )
