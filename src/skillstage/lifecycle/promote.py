"""Promote and roll back: the promoter (DESIGN.md "Promotion, the heart").

What a promotion decides before anything moves: the skill and the stage it goes to, the places
the move cannot use, the transition's gates (run before the skill's lock is taken, since they may
take minutes; the content and the conflicts gate are checked again under it), the confirmation;
and for a rollback, which version comes back. The move itself, journaled so that a crash at any
instant is finished or undone, is `move.py`; what follows it (git, hooks, notifications) is
`effects.py`. Both report in a `PromotionResult`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillReadError, SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.archive import archive_path, directory_digest
from skillstage.lifecycle.effects import (
    deliver_now,
    git_repository,
    notify_now,
    promotion_commit,
    rollback_commit,
)
from skillstage.lifecycle.gates import GateContext, GateResult, uncommitted_edits
from skillstage.lifecycle.leftovers import in_project
from skillstage.lifecycle.locks import DEFAULT_LOCK_TIMEOUT, skill_lock
from skillstage.lifecycle.move import (
    PromotionError,
    move_promotion,
    move_rollback,
    recover,
    refuse_target,
    refuse_unwritable,
    stopped_error,
)
from skillstage.lifecycle.transition_gates import gates_for
from skillstage.rollout.guard import refuse_if_held, refuse_if_open
from skillstage.skill.checks import check_skill
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill, stage_directories
from skillstage.store import Store


@dataclass
class PromotionResult:
    """The outcome of one promotion (seed 000's result object) or rollback."""

    success: bool
    skill_name: str
    operation: str = "promote"
    version: str | None = None
    digest: str | None = None
    from_stage: str | None = None
    to_stage: str | None = None
    production_path: str | None = None  # the live path the version now occupies
    deployment_id: str | None = None
    commit_hash: str | None = None
    gates: list[GateResult] = field(default_factory=list)
    forced: list[str] = field(default_factory=list)
    error: str | None = None
    dry_run: bool = False
    at: dt.datetime | None = None
    event_id: int | None = None
    previous_version: str | None = None  # rollback: the version taken out
    deliveries: list[dict[str, Any]] = field(default_factory=list)  # hooks and notifications
    warnings: list[str] = field(default_factory=list)  # e.g. --deploy with no deploy hook
    unchanged: bool = False  # rollback: another process had already rolled that version back

    def to_dict(self) -> dict[str, Any]:
        return {
            "success": self.success,
            "operation": self.operation,
            "skill_name": self.skill_name,
            "version": self.version,
            "digest": self.digest,
            "from_stage": self.from_stage,
            "to_stage": self.to_stage,
            "production_path": self.production_path,
            "deployment_id": self.deployment_id,
            "commit_hash": self.commit_hash,
            "gates": [gate.to_dict() for gate in self.gates],
            "forced": self.forced,
            "error": self.error,
            "dry_run": self.dry_run,
            "at": self.at.isoformat() if self.at else None,
            "previous_version": self.previous_version,
            "deliveries": self.deliveries,
            "warnings": self.warnings,
            "unchanged": self.unchanged,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- resolving what to promote ---------------------------------------------------------------


@dataclass(frozen=True)
class _Source:
    name: str
    stage: str
    path: Path


def _resolve_source(project: Project, ref: str) -> _Source:
    if not ref.strip():
        raise UsageError(
            f"{ref!r} is not a skill name or path", hint="`skillstage list` names them"
        )
    entries = list(stage_directories(project))
    candidate = Path(ref)
    if candidate.exists():
        resolved = candidate.resolve()
        for entry in entries:
            if entry.path.resolve() == resolved:
                return _Source(entry.name, entry.stage, entry.path)
        raise UsageError(
            f"{ref} is not in a stage folder of this project",
            hint="stage folders: "
            + ", ".join(str(project.stage_root(s)) for s in project.config.stages),
        )
    order = list(project.config.stages)
    matches = sorted((e for e in entries if e.name == ref), key=lambda e: order.index(e.stage))
    sources = [
        m for m in matches if any(t.from_stage == m.stage for t in project.config.transitions)
    ]
    if not sources:
        where = ", ".join(m.stage for m in matches)
        raise UsageError(
            f"no skill named {ref!r} in a stage it can be promoted from"
            + (f": it is only in {where}" if matches else ""),
            hint="`skillstage list` shows the skills in each stage",
        )
    return _Source(sources[0].name, sources[0].stage, sources[0].path)


def _transition(project: Project, from_stage: str, to: str | None) -> tuple[str, Any]:
    options = [t for t in project.config.transitions if t.from_stage == from_stage]
    if to is not None:
        options = [t for t in options if t.to_stage == to]
    if not options:
        allowed = [t.to_stage for t in project.config.transitions if t.from_stage == from_stage]
        raise UsageError(
            f"no transition from {from_stage} to {to}"
            if to
            else f"no transition out of {from_stage}",
            hint=f"allowed from {from_stage}: {', '.join(allowed) or 'none'}",
        )
    return options[0].to_stage, options[0]


# -- promote --------------------------------------------------------------------------------


def promote(
    project: Project,
    store: Store,
    ref: str,
    *,
    to: str | None = None,
    actor: str,
    dry_run: bool = False,
    force: bool = False,
    reason: str | None = None,
    overwrite: bool = False,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    approver: str | None = None,
    approval_ticket: str | None = None,
    confirm: Callable[[PromotionResult], bool] | None = None,
    deploy: bool = False,
    notify: bool = False,
    git_commit: bool = False,
    digest: str | None = None,
    rollout_id: int | None = None,
    rollout_verdict: Mapping[str, Any] | None = None,
) -> PromotionResult:
    """Promote the skill named `ref` (or at path `ref`) to the next stage (or `to`).

    Gates run first; failing gates stop it unless `force` with a `reason`. `dry_run` reports the
    plan and the gates and changes nothing. `confirm`, if given, is asked (with the gate results)
    before anything moves; False cancels. `digest`, if given, is the only content that may be
    promoted (a rollout's candidate: not a copy put there since). `rollout_id` names the rollout
    this promotion
    completes (`rollout/engine.py`): it is closed in the promotion's transaction, and no other
    promotion may enter a stage a rollout is changing.
    """
    if force and not (reason or "").strip():
        raise UsageError("--force needs --reason", hint='e.g. --reason "hotfix for INC-1234"')
    repo = git_repository(project) if git_commit or project.config.git.commit else None
    source = _resolve_source(project, ref)
    to_stage, transition = _transition(project, source.stage, to)
    target = project.stage_path(to_stage, source.name)
    refuse_target(project, source.name, target)
    with store.reading() as tx:
        if tx.skill_id(source.name) is not None:
            refuse_if_open(tx, source.name, to_stage, "a promotion", rollout_id)
            refuse_if_held(tx, source.name, to_stage, "a promotion")
    refuse_unwritable(source.path.parent, target.parent)
    result = PromotionResult(
        success=False,
        skill_name=source.name,
        from_stage=source.stage,
        to_stage=to_stage,
        production_path=str(target),
        dry_run=dry_run,
    )
    # Gates (test.sh, command gates) and the confirmation prompt run before the lock is taken:
    # they may take minutes, and an emergency rollback must not wait behind them. Under the lock
    # the content is checked again (same digest) and so is the one gate that depends on what
    # other promoters did meanwhile (conflicts).
    try:
        skill = read_skill(source.path, project.config.validation)
    except SkillReadError as exc:
        result.error = (
            str(exc)
            if source.path.exists()
            else f"{source.name} was moved out of {source.stage} by another process (see "
            f"`skillstage history {source.name}`)"
        )
        return result
    result.version, result.digest = skill.version, skill.digest
    if digest is not None and skill.digest != digest:
        result.error = (
            f"the copy of {source.name} in {source.stage} is {skill.version} ({skill.digest[:12]}),"
            f" not the content asked for ({digest[:12]}): it changed since"
        )
        return result
    if skill.name != source.name:
        result.error = (
            f"SKILL.md names the skill {skill.name!r} but its directory says {source.name!r}"
        )
        return result
    report = check_skill(source.path, project.config.validation, expected_name=source.name)
    context = GateContext(
        project,
        store,
        skill,
        report,
        source.stage,
        to_stage,
        target,
        overwrite,
        approver=approver,
        approval_ticket=approval_ticket,
    )
    gates = gates_for(project, transition)
    asked = [o for o, v in (("--approver", approver), ("--approval-ticket", approval_ticket)) if v]
    if asked and not any(g.name == "approval" for g in gates):
        # An approval named for the promotion goes on record with it: it must be the recorded
        # sign-off even where the transition requires none, and the gate says it runs because
        # the option asked for it (unchecked, anyone could put any approver in the audit trail).
        from skillstage.lifecycle.readiness import AskedApproval  # only when it was asked for

        gates.append(AskedApproval(" and ".join(asked)))
    try:
        result.gates = [gate.check(context) for gate in gates]
    except (SkillstageError, OSError):
        if source.path.is_dir():
            raise
        result.gates = []  # a gate lost its files mid-check (e.g. test.sh gone): see below
    if not source.path.is_dir():
        # Another promoter moved it while the gates ran: their verdict is about a copy that is
        # gone, and this is no gate failure.
        result.error = (
            f"{source.name} was moved out of {source.stage} by another process (see "
            f"`skillstage history {source.name}`)"
        )
        return result
    if not _gates_pass(
        project,
        store,
        result,
        force=force,
        dry_run=dry_run,
        notify=notify,
        actor=actor,
        source=source,
        skill=skill,
        context=context,
    ):
        return result
    if dry_run:
        result.success = True
        return result
    if confirm is not None and not confirm(result):
        result.error = "cancelled"
        return result
    with skill_lock(project, store, source.name, timeout=lock_timeout):
        recover(project, store, source.name)
        with store.reading() as tx:  # again: a rollout may have started while the gates ran
            refuse_if_open(tx, source.name, to_stage, "a promotion", rollout_id)
            refuse_if_held(tx, source.name, to_stage, "a promotion")
        try:
            again = read_skill(source.path, project.config.validation)
        except SkillReadError:
            again = None
        if again is None or again.digest != skill.digest:
            result.error = (
                f"{source.name} was moved or changed in {source.stage} by another process while "
                f"its gates ran (see `skillstage history {source.name}`)"
            )
            return result
        recheck = [g for g in gates_for(project, transition) if g.name == "conflicts"]
        if recheck:
            fresh = recheck[0].check(context)
            result.gates = [fresh if g.gate == fresh.gate else g for g in result.gates]
            if not _gates_pass(
                project,
                store,
                result,
                force=force,
                dry_run=False,
                notify=notify,
                actor=actor,
                source=source,
                skill=skill,
                context=context,
            ):
                return result
        at = _now()
        tests = next((g.status for g in result.gates if g.gate == "tests"), None)
        commit = (
            promotion_commit(
                project,
                store,
                repo,
                skill.name,
                from_stage=source.stage,
                source=source.path,
                to_stage=to_stage,
                target=target,
                tests=tests,
                forced=bool(result.forced),
                at=at,
                actor=actor,
            )
            if repo is not None
            else None
        )
        try:
            event_id, outbox_ids = move_promotion(
                project,
                store,
                skill,
                source.stage,
                source.path,
                to_stage,
                target,
                at=at,
                actor=actor,
                reason=reason,
                forced=result.forced,
                approver=approver,
                approval_ticket=approval_ticket,
                deploy=deploy,
                notify=notify,
                commit=commit,
                gates=[g.to_dict() for g in result.gates],
                warnings=result.warnings,
                rollout_id=rollout_id,
                rollout_verdict=rollout_verdict,
            )
        except (OSError, KeyboardInterrupt) as exc:  # a full disk, a permission, Ctrl-C
            raise stopped_error(project, store, skill.name, "promotion", exc) from None
    result.success, result.at, result.event_id = True, at, event_id
    deliver_now(project, store, outbox_ids, result)
    return result


def _gates_pass(
    project: Project,
    store: Store,
    result: PromotionResult,
    *,
    force: bool,
    dry_run: bool,
    notify: bool,
    actor: str,
    source: _Source,
    skill: SkillVersion,
    context: GateContext,
) -> bool:
    """True when the gates let the promotion go on (passing, or forced); otherwise the result
    says why and a real attempt is recorded as refused."""
    failing = [g.gate for g in result.gates if g.blocks]
    result.forced = failing if force else []
    if not failing or force:
        return True
    result.error = "gates failed: " + "; ".join(
        f"{g.gate} ({g.message})" for g in result.gates if g.blocks
    )
    if not dry_run:
        # A refused attempt is part of the audit trail (and of seed 000's promotion success rate,
        # which counts failures).
        store.append_event(
            "promote",
            name=skill.name,
            version=skill.version,
            digest=skill.digest,
            from_stage=source.stage,
            to_stage=result.to_stage,
            actor=actor,
            reason=result.error,
            success=False,
            path=str(source.path),
            details={"gates": [g.to_dict() for g in result.gates]},
            approver=context.approver,
            approval_ticket=context.approval_ticket,
        )
        if notify:
            details = {
                "name": result.skill_name,
                "version": result.version,
                "to_stage": result.to_stage,
                "error": result.error,
            }
            result.deliveries = notify_now(project, store, "gate_failed", details)
    return False


# -- rollback -------------------------------------------------------------------------------


def rollback(
    project: Project,
    store: Store,
    name: str,
    *,
    reason: str,
    actor: str,
    to_version: str | None = None,
    stage: str | None = None,
    trigger_metric: str | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    git_commit: bool = False,
    demote: bool = False,
    dry_run: bool = False,
    approver: str | None = None,
    only_if_live: str | None = None,
    hold: bool = False,
) -> PromotionResult:
    """Put the previous good version of `name` (or `to_version`) back live in its stage (the last
    stage by default), from the archive, with one atomic exchange. With no earlier version, or
    with `demote` (seed 002 §3.1's staged → prototype), the skill leaves the stage and returns to
    the one before it (seed 002 §3.2). With `dry_run`, everything is checked and the result says
    what would happen; nothing moves and nothing is recorded.

    The watcher's rollback: `only_if_live` (a digest) makes it a no-op (`unchanged`) when that
    version is no longer live, so two watchers that saw one failure make one rollback; `hold`
    holds the skill in the stage in the rollback's own transaction. `approver` records a person's
    manual override (seed 002 §4.1)."""
    if not reason.strip():
        raise UsageError("a rollback needs --reason", hint='e.g. --reason "fidelity dropped"')
    repo = git_repository(project) if git_commit or project.config.git.commit else None
    stages = list(project.config.stages)
    stage = stage or stages[-1]
    if stage not in project.config.stages:
        raise UsageError(f"unknown stage {stage!r}", hint=f"stages: {', '.join(stages)}")
    result = PromotionResult(success=False, skill_name=name, operation="rollback", from_stage=stage)
    with store.reading() as tx:
        if tx.skill_id(name) is None:
            raise UsageError(
                f"no skill named {name!r} in the store",
                hint="`skillstage list` shows where each skill is",
            )
    with skill_lock(project, store, name, timeout=lock_timeout):
        with store.reading() as tx:
            refuse_if_open(tx, name, stage, "a rollback")
        unfinished = [
            entry.details
            for entry in store.open_journals(name)
            if entry.operation == "rollback" and entry.details.get("stage") == stage
        ]
        recover(project, store, name)
        current = store.current_assignments(stage=stage, name=name)
        if unfinished and not dry_run and _took_effect(unfinished[-1], current):
            # A rollback stopped after its move (a full disk, a kill) and was just completed:
            # that is the rollback asked for again, not a reason to go back one more version.
            earlier = unfinished[-1]
            result.success = True
            result.to_stage = earlier["to_stage"]
            result.version = earlier.get("good_version") or earlier["bad_version"]
            result.previous_version = earlier["bad_version"]
            result.warnings.append(
                f"the rollback of {name} {earlier['bad_version']} begun at {earlier['at']} had "
                "stopped after its move; it is now completed, and nothing more was rolled back"
            )
            return result
        if only_if_live is not None and (not current or current[0].digest != only_if_live):
            result.success = result.unchanged = True
            result.warnings.append(
                f"the version of {name} to roll back is no longer live in {stage}: another "
                "process rolled it back first; nothing more was done"
            )
            return result
        if not current:
            raise PromotionError(
                f"{name} is not in {stage}",
                hint="`skillstage list` shows where each skill is",
            )
        live = in_project(project, current[0])
        target = Path(live.path)
        result.previous_version = live.version
        # The rule a promotion's conflicts gate applies: edits to the live copy that git has
        # not committed, other than skillstage's own write, are not thrown away.
        edits = (
            uncommitted_edits(project, store, name, stage, target, retry="roll back again")
            if target.exists()
            else None
        )
        if edits is not None and edits.blocks:
            raise PromotionError(
                f"{edits.message}; nothing was rolled back", hint="; ".join(edits.details)
            )
        if edits is not None:
            result.warnings.append(edits.message)
        good = (
            None
            if demote
            else _rollback_target(
                project, store, name, stage, live.version, live.digest, to_version
            )
        )
        if good is not None:
            entry = archive_path(project, name, *good)
            if directory_digest(project, entry) != good[1]:
                raise PromotionError(
                    f"the archive copy of {name} {good[0]} ({entry}) no longer holds it: its "
                    "content changed after it was archived; nothing was rolled back",
                    hint="restore the entry from a backup (`skillstage doctor` reports it), or "
                    "roll back to another version with --to-version",
                )
        at = _now()
        details: dict[str, Any] = {
            "kind": "rollback",
            "name": name,
            "stage": stage,
            "target": str(target),
            "bad_version": live.version,
            "bad_digest": live.digest,
            "reason": reason,
            "trigger_metric": trigger_metric,
            "actor": actor,
            "approver": approver,
            "hold": hold,
            "at": at.isoformat(),
        }
        if good is None:
            index = stages.index(stage)
            if index == 0:
                raise PromotionError(f"{name} has no earlier version and no earlier stage")
            back = stages[index - 1]
            destination = project.stage_path(back, name)
            if destination.exists():
                raise PromotionError(
                    f"{name} has no earlier version in {stage}, and {destination} is occupied",
                    hint=f"remove or promote the copy in {back} first",
                )
            details.update({"to_stage": back, "destination": str(destination)})
            result.to_stage, result.production_path = back, str(destination)
            result.version, result.digest = live.version, live.digest
        else:
            version, digest = good
            archive = archive_path(project, name, version, digest)
            details.update(
                {
                    "to_stage": stage,
                    "good_version": version,
                    "good_digest": digest,
                    "archive": str(archive),
                    "incoming": str(fs.sibling(target, "incoming")),
                }
            )
            result.to_stage, result.production_path = stage, str(target)
            result.version, result.digest = version, digest
        if dry_run:
            result.success = result.dry_run = True
            return result
        if repo is not None:
            details["git_commit"] = rollback_commit(
                repo,
                name,
                [str(target), *([details["destination"]] if "destination" in details else [])],
                version=result.version or "",
                from_version=live.version,
                at=at,
                actor=actor,
                reason=reason,
                trigger_metric=trigger_metric,
            )
        details["warnings"] = result.warnings  # what went wrong after the commit (`_tidy`)
        try:
            result.event_id, outbox_ids = move_rollback(project, store, details)
        except (OSError, KeyboardInterrupt) as exc:  # a full disk, a permission, Ctrl-C
            raise stopped_error(project, store, name, "rollback", exc) from None
        result.at = at
    result.success = True
    deliver_now(project, store, outbox_ids, result)
    return result


def _took_effect(details: Mapping[str, Any], current: list[Any]) -> bool:
    """Whether the rollback `details` describes is what the stage holds now."""
    if "destination" in details:  # the skill left the stage
        return not current
    return bool(current) and current[0].digest == details.get("good_digest")


def _rollback_target(
    project: Project,
    store: Store,
    name: str,
    stage: str,
    bad_version: str,
    bad_digest: str,
    to_version: str | None,
) -> tuple[str, str] | None:
    """(version, digest) to restore: the named one, else the newest earlier version that entered
    this stage, is archived, and was not rolled back as failed."""
    if to_version is not None:
        record = store.find_version(name, to_version)
        if record is None or not archive_path(project, name, to_version, record.digest).exists():
            raise PromotionError(
                f"{name} {to_version} is not in the archive",
                hint=f"`skillstage history {name}` lists the versions it has had",
            )
        if to_version == bad_version:
            raise PromotionError(f"{name} {to_version} is the version live now")
        return to_version, record.digest
    failed = {
        (e.details["failed_version"], e.details["failed_digest"])
        for e in store.events(name, limit=10_000, kind="rollback")
        if e.details and e.details.get("failed_version")
    }
    for event in store.events(name, limit=10_000):
        if event.to_stage != stage or event.kind not in ("promote", "rollback", "register"):
            continue
        if not event.success:
            continue
        if event.version is None or event.digest is None:
            continue
        candidate = (event.version, event.digest)
        if candidate == (bad_version, bad_digest) or candidate in failed:
            continue
        if archive_path(project, name, *candidate).exists():
            return candidate
    return None
