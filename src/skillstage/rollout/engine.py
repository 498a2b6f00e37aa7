"""Gradual rollouts (seed 002 §3.3 "Staged Safety Nets", seed 003's phased rollout): start one,
step it by analysis, pause, resume, abort, retry, and complete it through the promoter.

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
import itertools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillReadError, SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.gates import GateResult
from skillstage.lifecycle.locks import DEFAULT_LOCK_TIMEOUT, skill_lock
from skillstage.rollout.analysis import FAILED, SUCCESSFUL, Verdict, analyse
from skillstage.rollout.guard import refuse_if_open
from skillstage.skill.files import scan_skill_files
from skillstage.store import Store, Transaction
from skillstage.store import rollouts as store_rollouts
from skillstage.store.rollouts import RolloutRecord


class RolloutError(SkillstageError):
    """A rollout could not be started or changed (one is active already, nothing is live …)."""

    code = "ROLLOUT"


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- parsing what a user types ------------------------------------------------------------------

_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*\Z", re.IGNORECASE)
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86_400}


def parse_duration(text: str) -> float:
    """Seconds in "90s", "30m", "1h", "2d" or a bare number of seconds."""
    match = _DURATION.match(text)
    if match is None:
        raise UsageError(f"{text!r} is not a duration", hint="e.g. 30s, 15m, 1h, 2d")
    seconds = float(match.group(1)) * _UNIT_SECONDS[(match.group(2) or "s").lower()]
    if seconds > 365 * 86_400:
        raise UsageError(f"{text!r} is longer than a year")
    return seconds


def parse_steps(text: str) -> list[int]:
    """ "10,50,100" as [10, 50, 100]: rising percentages ending at 100."""
    try:
        steps = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise UsageError(f"{text!r} is not a list of percentages", hint="e.g. 10,50,100") from None
    check_steps(steps)
    return steps


def check_steps(steps: Sequence[int]) -> None:
    if not steps or any(not 1 <= s <= 100 for s in steps):
        raise UsageError(f"steps {list(steps)} must be percentages from 1 to 100")
    if any(b <= a for a, b in itertools.pairwise(steps)):
        raise UsageError(f"steps {list(steps)} must rise", hint="e.g. 10,50,100")
    if steps[-1] != 100:
        raise UsageError(
            f"steps {list(steps)} must end at 100, where the rollout completes",
            hint="e.g. 10,50,100",
        )


def parse_segments(pairs: Sequence[str]) -> dict[str, list[str]]:
    """["tier=internal", "tier=beta", "region=eu"] as {"tier": ["internal", "beta"], …}."""
    segments: dict[str, list[str]] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise UsageError(
                f"segment {pair!r} is not KEY=VALUE", hint="e.g. --segment tier=internal"
            )
        segments.setdefault(key.strip(), []).append(value.strip())
    return segments


# -- results -----------------------------------------------------------------------------------


@dataclass
class RolloutOutcome:
    """What a rollout command did (or, with `dry_run`, would do)."""

    success: bool
    name: str
    action: str  # started, advanced, completed, aborted, paused, resumed, waiting, blocked
    rollout: RolloutRecord | None = None
    verdict: Verdict | None = None
    gates: list[GateResult] = field(default_factory=list)
    error: str | None = None
    dry_run: bool = False
    warnings: list[str] = field(default_factory=list)
    deliveries: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "name": self.name,
            "action": self.action,
            "rollout": self.rollout.to_dict() if self.rollout else None,
            "verdict": self.verdict.to_dict() if self.verdict else None,
            "gates": [g.to_dict() for g in self.gates],
            "error": self.error,
            "dry_run": self.dry_run,
            "warnings": self.warnings,
            "deliveries": self.deliveries,
        }


# -- start -------------------------------------------------------------------------------------


def _stage(project: Project, store: Store, name: str, stage: str | None) -> str:
    """The stage a rollout shares: `stage`, else the last stage, else (nothing of `name` live
    there) the latest stage before it where a version of `name` is live."""
    stages = list(project.config.stages)
    if stage is None:
        with store.reading() as tx:
            live = {a.stage for a in tx.current_assignments(name=name)}
        stage = next((s for s in reversed(stages[1:]) if s in live), stages[-1])
    if stage not in project.config.stages:
        raise UsageError(f"unknown stage {stage!r}", hint=f"stages: {', '.join(stages)}")
    if stages.index(stage) == 0:
        raise UsageError(
            f"{stage} is the first stage: a rollout serves a version from the stage before",
            hint=f"roll out into {', '.join(stages[1:])}",
        )
    return stage


def start(
    project: Project,
    store: Store,
    name: str,
    *,
    actor: str,
    candidate: str | None = None,
    stage: str | None = None,
    steps: Sequence[int] | None = None,
    step_min_duration_s: float | None = None,
    step_min_executions: int | None = None,
    segments: Mapping[str, list[str]] | None = None,
    group_id: str | None = None,
    on_failure: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    retry_of: int | None = None,
) -> RolloutOutcome:
    """Start serving the candidate (the version waiting in the stage before `stage`) to the first
    step's share of `stage`'s traffic, after the gates a promotion into `stage` runs."""
    from skillstage.lifecycle import promote as promoter
    from skillstage.skill.read import read_skill

    if force and not (reason or "").strip():
        raise UsageError("--force needs --reason", hint='e.g. --reason "hotfix for INC-1234"')
    stage = _stage(project, store, name, stage)
    settings = project.config.rollout
    steps = list(steps) if steps is not None else list(settings.steps)
    check_steps(steps)
    on_failure = on_failure or settings.on_failure
    if on_failure not in ("abort", "pause"):
        raise UsageError(f"on failure {on_failure!r}: abort or pause")
    stages = list(project.config.stages)
    before = stages[stages.index(stage) - 1]
    outcome = RolloutOutcome(success=False, name=name, action="started", dry_run=dry_run)
    with store.reading() as tx:
        if tx.skill_id(name) is None:
            raise UsageError(
                f"no skill named {name!r} in the store",
                hint="`skillstage list` registers the skills on disk and shows them",
            )
    if not dry_run:
        recover(project, store, name)
    with store.reading() as tx:
        live = tx.current_assignments(stage=stage, name=name)
        if not live:
            raise RolloutError(
                f"nothing of {name} is live in {stage} to roll out beside",
                hint=f"a first version enters {stage} with `skillstage promote {name}`",
            )
        refuse_if_open(tx, name, stage, "another rollout")
    source = project.stage_path(before, name)
    try:
        skill = read_skill(source, project.config.validation)
    except SkillReadError as exc:
        raise RolloutError(
            f"no candidate of {name} waits in {before} ({source}): {exc}",
            hint=f"the candidate is the copy in {before}; promote one there first",
        ) from None
    if (
        candidate is not None
        and candidate not in (skill.version, skill.digest)
        and not (len(candidate) >= 6 and skill.digest.startswith(candidate.lower()))
    ):
        raise RolloutError(
            f"the candidate {candidate!r} is not the copy waiting in {before} "
            f"({skill.version}, {skill.digest[:12]})",
            hint=f"a rollout serves the copy in {before}; promote {candidate} there first",
        )
    stable = live[0]
    if skill.digest == stable.digest:
        raise RolloutError(
            f"{name} {skill.version} in {before} is the version live in {stage} already"
        )
    # The gates of the promotion the rollout ends with run first (seed 002: nothing serves
    # production traffic that could not be promoted there).
    probe = promoter.promote(
        project,
        store,
        name,
        to=stage,
        actor=actor,
        dry_run=True,
        overwrite=True,
    )
    outcome.gates = probe.gates
    failing = [g.gate for g in probe.gates if g.blocks]
    if probe.error and not failing:
        outcome.error = probe.error
        return outcome
    if failing and not force:
        outcome.error = "gates failed: " + "; ".join(
            f"{g.gate} ({g.message})" for g in probe.gates if g.blocks
        )
        return outcome
    now = _now()
    fields = {
        "skill_id": stable.skill_id,
        "stage": stage,
        "candidate_version": skill.version,
        "candidate_digest": skill.digest,
        "candidate_stage": before,
        "stable_version": stable.version,
        "stable_digest": stable.digest,
        "group_id": group_id or name,
        "steps": steps,
        "step_index": 0,
        "step_started_at": now,
        "step_min_duration_s": (
            step_min_duration_s
            if step_min_duration_s is not None
            else settings.step_min_duration_minutes * 60
        ),
        "step_min_executions": step_min_executions or settings.step_min_executions,
        "segments": dict(segments or {}),
        "on_failure": on_failure,
        "state": "active",
        "actor": actor,
        "reason": reason,
        "verdict": None,
        "retry_of": retry_of,
        "started_at": now,
        "ended_at": None,
    }
    if dry_run:
        outcome.success = True
        outcome.rollout = RolloutRecord(id=0, name=name, **fields)  # type: ignore[arg-type]
        return outcome
    # The candidate serves from the archive (immutable), so the copy waiting in the stage
    # before may be edited or moved without changing what a subject gets.
    entry = promoter.archive_path(project, name, skill.version, skill.digest)
    fs.archive_copy(source, entry)
    policy = project.config.validation
    archived = scan_skill_files(
        entry, max_files=policy.max_files, max_total_bytes=policy.max_total_bytes
    ).digest
    if archived != skill.digest:
        raise RolloutError(
            f"the archive copy of {name} {skill.version} ({entry}) does not hold the candidate's "
            "content: the copy in staging changed while the rollout started, or the archive "
            "entry was edited",
            hint="`skillstage doctor` reports the archive; start the rollout again",
        )
    with skill_lock(project, store, name, timeout=DEFAULT_LOCK_TIMEOUT), store.atomic() as tx:
        refuse_if_open(tx, name, stage, "another rollout")
        now_live = tx.current_assignments(stage=stage, name=name)
        if not now_live or now_live[0].digest != stable.digest:
            raise RolloutError(
                f"{name} changed in {stage} while the rollout started (by another process)",
                hint=f"`skillstage history {name}` shows what happened; start it again",
            )
        tx.ensure_version(
            name,
            skill.version,
            skill.digest,
            path=str(source),
            frontmatter=skill.frontmatter_dict(),
            at=now,
        )
        rollout_id = store_rollouts.insert_rollout(tx, fields)
        tx.append_event(
            "rollout_start",
            name=name,
            version=skill.version,
            digest=skill.digest,
            from_stage=before,
            to_stage=stage,
            actor=actor,
            reason=reason,
            details={
                "rollout_id": rollout_id,
                "steps": steps,
                "segments": fields["segments"],
                "stable_version": stable.version,
                "forced": failing if force else [],
                "retry_of": retry_of,
                "gates": [g.to_dict() for g in probe.gates],
            },
            at=now,
        )
        tx.bump_routing(now)
        outcome.rollout = store_rollouts.rollouts(tx, rollout_id=rollout_id)[0]
    outcome.success = True
    _export(project, store, outcome)
    return outcome


def _export(project: Project, store: Store, outcome: RolloutOutcome) -> None:
    from skillstage.runtime.registry_file import export_registry

    try:
        export_registry(project, store)
    except OSError as exc:
        outcome.warnings.append(f"the registry file could not be written: {exc.strerror or exc}")


# -- reading -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutStatus:
    """An open rollout with the analysis of its step, and when it could complete."""

    rollout: RolloutRecord
    verdict: Verdict
    earliest_completion: dt.datetime | None  # if every step succeeds as soon as it may
    rollback_seconds: float  # how long until all traffic is back on stable after an abort

    def to_dict(self) -> dict[str, Any]:
        return {
            **self.rollout.to_dict(),
            "verdict": self.verdict.to_dict(),
            "earliest_completion": self.earliest_completion.isoformat()
            if self.earliest_completion
            else None,
            "rollback_seconds": self.rollback_seconds,
        }


def status(
    project: Project, store: Store, name: str | None = None, *, stage: str | None = None
) -> list[RolloutStatus]:
    """Every open rollout (of `name`), analysed now."""
    from skillstage.lifecycle.readiness import ingest_on_demand

    ingest_on_demand(project, store)
    now = _now()
    with store.reading() as tx:
        if name is not None and tx.skill_id(name) is None:
            raise UsageError(f"no skill named {name!r} in the store")
        found = store_rollouts.rollouts(tx, name=name, stage=stage, open_only=True)
        return [_status(project, tx, r, now) for r in found]


def _status(
    project: Project, tx: Transaction, rollout: RolloutRecord, now: dt.datetime
) -> RolloutStatus:
    verdict = analyse(project, tx, rollout, now)
    # Flagger: the earliest end, from the config: this step's remaining minimum, then the rest.
    remaining_steps = len(rollout.steps) - rollout.step_index - 1
    this_step = max(0.0, rollout.step_min_duration_s - verdict.step_elapsed_s)
    earliest = (
        now + dt.timedelta(seconds=this_step + remaining_steps * rollout.step_min_duration_s)
        if rollout.state == "active"
        else None
    )
    # An abort is one transaction; every loader sees it on its next poll.
    rollback = project.config.runtime.refresh_ms / 1000
    return RolloutStatus(rollout, verdict, earliest, rollback)


def history_of(store: Store, name: str, stage: str | None = None) -> list[RolloutRecord]:
    """Every rollout of `name`, newest first."""
    with store.reading() as tx:
        return store_rollouts.rollouts(tx, name=name, stage=stage)


def _open(tx: Transaction, name: str, stage: str | None, project: Project) -> RolloutRecord:
    if tx.skill_id(name) is None:
        raise UsageError(f"no skill named {name!r} in the store")
    found = store_rollouts.rollouts(tx, name=name, stage=stage, open_only=True)
    if not found:
        raise RolloutError(
            f"{name} has no active rollout" + (f" in {stage}" if stage else ""),
            hint=f"`skillstage rollout start {name}` starts one",
        )
    return found[0]


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
    **columns: Any,
) -> RolloutRecord:
    """One state change of a rollout (`columns`), its event, its alert and the routing bump, in
    one transaction; the rollout as it is after. Refused when another process changed it first."""
    with store.atomic() as tx:
        current = store_rollouts.rollouts(tx, rollout_id=rollout.id)[0]
        if (current.state, current.step_index) != (rollout.state, rollout.step_index):
            raise RolloutError(
                f"rollout #{rollout.id} of {rollout.name} was changed by another process "
                f"(now {current.state} at step {current.step_index + 1})",
                hint=f"`skillstage rollout status {rollout.name}` shows it",
            )
        store_rollouts.update_rollout(tx, rollout.id, **columns)
        tx.append_event(
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
        alerts = (
            _queue_alert(project, tx, rollout, kind, why, trigger_metric)
            if kind in ("rollout_abort", "rollout_pause")
            else []
        )
        changed = store_rollouts.rollouts(tx, rollout_id=rollout.id)[0]
    outcome.rollout = changed
    if alerts:
        from skillstage.integrations.outbox import deliver

        outcome.deliveries += [d.to_dict() for d in deliver(project, store, ids=alerts)]
    _export(project, store, outcome)
    return changed


def _queue_alert(
    project: Project,
    tx: Transaction,
    rollout: RolloutRecord,
    kind: str,
    why: str | None,
    trigger_metric: str | None,
) -> list[int]:
    """Seed 002 §3.2: an alert at once, through the outbox (delivered after the commit)."""
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
    return [
        enqueue(tx, "notify", payload)
        for payload in notification_items(
            project.config.notifications,
            event,  # type: ignore[arg-type]
            title=title,
            body=body,
            skill=rollout.name,
        )
    ]


def recover(project: Project, store: Store, name: str) -> list[str]:
    """Finish or undo a move of `name` a crashed process left half done (a completion killed
    mid-promotion is finished, and closes its rollout, or undone, leaving it open), as every
    mutating command does first."""
    from skillstage.lifecycle import promote as promoter

    if not store.open_journals(name):
        return []
    with skill_lock(project, store, name, timeout=DEFAULT_LOCK_TIMEOUT):
        return promoter.recover(project, store, name)


def _opened(store: Store, project: Project, name: str, stage: str | None) -> RolloutRecord:
    recover(project, store, name)
    with store.reading() as tx:
        return _open(tx, name, stage, project)


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
    rollout = _opened(store, project, name, stage)
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
    rollout = _opened(store, project, name, stage)
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
) -> RolloutOutcome:
    """All traffic back on the stable version for good; the candidate archived as failed, with
    the reason and the metric that triggered it, and an alert sent."""
    from skillstage.lifecycle import promote as promoter

    if not reason.strip():
        raise UsageError("an abort needs --reason", hint='e.g. --reason "fidelity dropped"')
    rollout = _opened(store, project, name, stage)
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
        details={"verdict": verdict.to_dict() if verdict else None},
        state="aborted",
        ended_at=at,
        reason=reason,
        verdict=verdict.to_dict() if verdict else rollout.verdict,
    )
    entry = promoter.archive_path(
        project, name, rollout.candidate_version, rollout.candidate_digest
    )
    if entry.exists():
        try:
            promoter.record_archive_reason(
                entry, "failed", why=reason, trigger_metric=trigger_metric, rollout_id=rollout.id
            )
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
    rollout = _opened(store, project, name, stage)
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
    abort (or pause, as configured) a failed one, and leave the rest waiting, saying for what."""
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
        verdict = analyse(project, tx, rollout, _now())
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
        )
        aborted.success = False
        return aborted
    with store.atomic() as tx:
        store_rollouts.update_rollout(tx, rollout.id, verdict=verdict.to_dict())
    return RolloutOutcome(
        success=True, name=rollout.name, action="waiting", rollout=rollout, verdict=verdict
    )
