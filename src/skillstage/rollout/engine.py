"""Gradual rollouts (seed 002 §3.3 "Staged Safety Nets", seed 003's phased rollout): starting
one, and reading them (`steering` changes them: steps, pauses, aborts, completion).

A rollout serves a candidate (the version waiting in the stage before) to a share of a stage's
traffic beside the stable version live there. Every state change is one transaction that also
appends an event (so it is in `history`) and bumps the routing generation (so every loader sees it
within its refresh interval). Completion is an ordinary promotion (the promoter's journaled,
atomic swap) whose transaction also closes the rollout, so a crash mid-completion is recovered
whole, with the rest of the promotion.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillReadError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.locks import DEFAULT_LOCK_TIMEOUT, skill_lock
from skillstage.rollout.analysis import Verdict, analyse
from skillstage.rollout.guard import refuse_if_held, refuse_if_open
from skillstage.rollout.plan import (
    RolloutError,
    RolloutOutcome,
    check_steps,
)
from skillstage.rollout.plan import (
    now as _now,
)
from skillstage.skill.files import scan_skill_files
from skillstage.store import Store, Transaction
from skillstage.store import rollouts as store_rollouts
from skillstage.store.rollouts import RolloutRecord

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
    from skillstage.lifecycle.archive import archive_path
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
        refuse_if_held(tx, name, stage, "a rollout")
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
    fields: dict[str, Any] = {
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
        outcome.rollout = RolloutRecord(id=0, name=name, **fields)
        return outcome
    # The candidate serves from the archive (immutable), so the copy waiting in the stage
    # before may be edited or moved without changing what a subject gets.
    entry = archive_path(project, name, skill.version, skill.digest)
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
        refuse_if_held(tx, name, stage, "a rollout")
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
    export(project, store, outcome)
    return outcome


def export(project: Project, store: Store, outcome: RolloutOutcome) -> None:
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


def recover(project: Project, store: Store, name: str) -> list[str]:
    """Finish or undo a move of `name` a crashed process left half done (a completion killed
    mid-promotion is finished, and closes its rollout, or undone, leaving it open), as every
    mutating command does first."""
    from skillstage.lifecycle.move import recover

    if not store.open_journals(name):
        return []
    with skill_lock(project, store, name, timeout=DEFAULT_LOCK_TIMEOUT):
        return recover(project, store, name)


def opened(store: Store, project: Project, name: str, stage: str | None) -> RolloutRecord:
    recover(project, store, name)
    with store.reading() as tx:
        return _open(tx, name, stage, project)
