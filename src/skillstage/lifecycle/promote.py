"""Promote and roll back: the promoter (DESIGN.md "Promotion, the heart").

Every change follows one sequence, so that a crash (even SIGKILL) at any instant leaves a state
that `recover` makes whole:

1. under the skill's lock, finish any journal entry an earlier process left open;
2. write the intent to the journal (its own committed transaction) before touching the disk;
3. archive the version (immutable), copy it beside the live path, swap it in atomically;
4. in ONE transaction: move the stage pointer, append the event, close the journal entry.

Recovery looks at the disk: if the live directory already holds the new digest, the change rolls
forward (step 4 is done now); otherwise it rolls back (scratch directories are removed).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.errors import EXIT_INTERRUPTED, SkillReadError, SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.archive import archive_path as archive_path
from skillstage.lifecycle.archive import record_archive_reason as record_archive_reason
from skillstage.lifecycle.gates import GateContext, GateResult, uncommitted_edits
from skillstage.lifecycle.locks import DEFAULT_LOCK_TIMEOUT, skill_lock
from skillstage.lifecycle.readiness import AskedApproval
from skillstage.lifecycle.transition_gates import gates_for
from skillstage.rollout.guard import refuse_if_held, refuse_if_open
from skillstage.runtime.registry_file import export_registry
from skillstage.skill.checks import check_skill
from skillstage.skill.files import scan_skill_files
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill, stage_directories
from skillstage.store import Assignment, Store, Transaction
from skillstage.store import rollouts as store_rollouts
from skillstage.store.controls import HOLD, record_step, set_control


class PromotionError(SkillstageError):
    """A promotion or rollback was refused (gates failed, nothing to roll back to, …)."""

    code = "PROMOTION_FAILED"


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


def in_project(project: Project, assignment: Assignment) -> Assignment:
    """`assignment` with its path where the skill lives in this project now. The store keeps the
    path it was registered at, which is elsewhere once the project is moved or copied, or when
    another checkout shares the store: acting on it would touch another copy's files."""
    live = str(project.stage_path(assignment.stage, assignment.name))
    return assignment if assignment.path == live else dataclasses.replace(assignment, path=live)


def retired_path(project: Project) -> Path:
    """Where copies swapped out of a live directory wait out the readers that still hold them."""
    return project.state_dir / "retired"


def _live_digest(project: Project, path: Path) -> str | None:
    if not path.is_dir():
        return None
    policy = project.config.validation
    return scan_skill_files(
        path, max_files=policy.max_files, max_total_bytes=policy.max_total_bytes
    ).digest


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


# The longest skill directory name the promoter's scratch names (".skillstage-incoming-<name>-
# <12 hex>") leave room for within the usual 255-byte file name limit; the spec allows 64.
MAX_NAME_BYTES = 200


def _refuse_target(project: Project, name: str, target: Path) -> None:
    """Refuse, before anything is journaled or moved, a live path the move cannot use: a name
    too long for the scratch copies beside it (a forced promotion skips the name check), or a
    stage's folder, or one holding a stage folder (stage folders nest, e.g.
    `.claude/skills/staging` in `.claude/skills`: the swap would replace the whole stage)."""
    if len(os.fsencode(name)) > MAX_NAME_BYTES:
        raise UsageError(
            f"the skill name {name[:40]}… is {len(os.fsencode(name))} bytes long: at most "
            f"{MAX_NAME_BYTES} can be promoted",
            hint="skill names are at most 64 characters (Agent Skills spec)",
        )
    for stage in project.config.stages:
        root = project.stage_root(stage)
        if root == target or target in root.parents:
            raise UsageError(
                f"{name} cannot go to {target}: that is {stage}'s folder",
                hint="rename the skill (its directory and its frontmatter name)",
            )


def _refuse_unwritable(*folders: Path) -> None:
    """Refuse, before anything is journaled or moved, a stage folder this process cannot change
    (read-only, immutable, another user's): the skill leaves one and enters the other, and
    finding out half-way would leave the new version live and the old one in place."""
    for folder in dict.fromkeys(folders):
        if folder.is_dir() and not os.access(folder, os.W_OK):
            raise PromotionError(
                f"{folder} cannot be written to: nothing was moved",
                hint="make the stage folder writable for this user (chmod, chattr -i, a "
                "read-write mount), then promote again",
            )


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
    repo = _git_repository(project) if git_commit or project.config.git.commit else None
    source = _resolve_source(project, ref)
    to_stage, transition = _transition(project, source.stage, to)
    target = project.stage_path(to_stage, source.name)
    _refuse_target(project, source.name, target)
    with store.reading() as tx:
        if tx.skill_id(source.name) is not None:
            refuse_if_open(tx, source.name, to_stage, "a promotion", rollout_id)
            refuse_if_held(tx, source.name, to_stage, "a promotion")
    _refuse_unwritable(source.path.parent, target.parent)
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
        commit = (
            _promotion_commit(
                project, store, repo, skill.name, source, to_stage, target, result, at, actor
            )
            if repo is not None
            else None
        )
        try:
            event_id, outbox_ids = _move(
                project,
                store,
                skill,
                source,
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
                gates=result.gates,
                warnings=result.warnings,
                rollout_id=rollout_id,
                rollout_verdict=rollout_verdict,
            )
        except (OSError, KeyboardInterrupt) as exc:  # a full disk, a permission, Ctrl-C
            raise _stopped(project, store, skill.name, "promotion", exc) from None
    result.success, result.at, result.event_id = True, at, event_id
    _deliver(project, store, outbox_ids, result)
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
            result.deliveries = _notify_now(project, store, "gate_failed", result)
    return False


def _move(
    project: Project,
    store: Store,
    skill: SkillVersion,
    source: _Source,
    to_stage: str,
    target: Path,
    *,
    at: dt.datetime,
    actor: str,
    reason: str | None,
    forced: list[str],
    approver: str | None,
    approval_ticket: str | None,
    deploy: bool,
    notify: bool,
    commit: dict[str, Any] | None,
    gates: list[GateResult],
    warnings: list[str],
    rollout_id: int | None = None,
    rollout_verdict: Mapping[str, Any] | None = None,
) -> tuple[int, list[int]]:
    archive = archive_path(project, skill.name, skill.version, skill.digest)
    incoming = fs.sibling(target, "incoming")
    previous = _live_digest(project, target)
    details = {
        "kind": "promote",
        "name": skill.name,
        "version": skill.version,
        "digest": skill.digest,
        "from_stage": source.stage,
        "to_stage": to_stage,
        "source": str(source.path),
        "target": str(target),
        "archive": str(archive),
        "incoming": str(incoming),
        "previous_digest": previous,
        "actor": actor,
        "reason": reason,
        "forced": forced,
        "approver": approver,
        "approval_ticket": approval_ticket,
        "frontmatter": skill.frontmatter_dict(),
        "at": at.isoformat(),
        "deploy": deploy,
        "notify": notify,
        "git_commit": commit,
        "gates": [g.to_dict() for g in gates],
        "warnings": warnings,  # what went wrong after the commit (`_tidy`)
        # The rollout this promotion completes, closed in its transaction (and so on recovery).
        "rollout_id": rollout_id,
        "rollout_verdict": dict(rollout_verdict) if rollout_verdict else None,
    }
    journal_id = store.open_journal(skill.name, "promote", details, at=at)
    fs.fault_point("promote:journaled")
    fs.archive_copy(source.path, archive)
    if previous is not None:
        _archive_overwritten(project, store, skill.name, to_stage, target, previous)
    fs.fault_point("promote:archived")
    target.parent.mkdir(parents=True, exist_ok=True)
    fs.copy_tree(archive, incoming)
    fs.fault_point("promote:copied")
    _swap_in(incoming, target)
    fs.fault_point("promote:swapped")
    return _finish_promote(project, store, journal_id, details)


def _archive_overwritten(
    project: Project, store: Store, name: str, stage: str, target: Path, digest: str
) -> None:
    """Seed 000's backup on overwrite: the version being replaced stays in the archive."""
    current = store.current_assignments(stage=stage, name=name)
    version = current[0].version if current and current[0].digest == digest else "unregistered"
    entry = archive_path(project, name, version, digest)
    fs.archive_copy(target, entry)
    # Once per version: each overwrite is in the event log; the sidecar says why it is kept.
    record_archive_reason(entry, "overwritten", once=True)


def _swap_in(incoming: Path, target: Path) -> None:
    """Make `incoming` live at `target`; the old live copy (if any) ends up at `incoming`."""
    if not target.exists():
        os.rename(incoming, target)
        return
    if fs.exchange(incoming, target):
        return
    # No RENAME_EXCHANGE: two renames. Between them the live path is missing for an instant;
    # the journal names both paths, so recovery puts the old one back if we die there.
    aside = incoming.with_name(incoming.name + "-old")
    os.rename(target, aside)
    fs.fault_point("promote:between-renames")
    os.rename(incoming, target)
    os.rename(aside, incoming)


def _finish_promote(
    project: Project, store: Store, journal_id: int, details: Mapping[str, Any]
) -> tuple[int, list[int]]:
    """The database half (one transaction), then tidying the disk. Safe to run twice."""
    source, target = Path(details["source"]), Path(details["target"])
    if source.exists() and source != target:
        fs.remove_tree(source)  # the skill leaves its old stage folder (seed 000's "move")
    fs.fault_point("promote:source-removed")
    at = dt.datetime.fromisoformat(details["at"])
    with store.atomic() as tx:
        if not tx.close_journal(journal_id, outcome="committed", at=at):
            return -1, []  # another process finished it
        event_id = _record_promotion(tx, details, at)
        # Side effects are queued in the same transaction: they happen if and only if the
        # promotion did, and a crash after commit leaves them queued, not lost.
        outbox_ids = _queue_side_effects(project, tx, details, "promoted")
    fs.fault_point("promote:committed")
    _tidy(lambda: fs.retire(Path(details["incoming"]), retired_path(project)), details)
    _tidy(lambda: export_registry(project, store), details)
    return event_id, outbox_ids


def _record_promotion(tx: Transaction, details: Mapping[str, Any], at: dt.datetime) -> int:
    name = details["name"]
    version = tx.ensure_version(
        name,
        details["version"],
        details["digest"],
        path=details["target"],
        frontmatter=details.get("frontmatter") or {},
        at=at,
    )
    if tx.leave_stage(name, details["from_stage"], at=at) is None:
        # The copy was in the source stage though nothing registered it there (no `list` ran):
        # record that stay, from when the version was first registered (by `eval`, `approve`,
        # …), so its time there (seed 002's prototype baseline) is on record.
        tx.enter_stage(
            version.version_id,
            details["from_stage"],
            details.get("source") or details["target"],
            at=min(version.created_at, at),
        )
        tx.leave_stage(name, details["from_stage"], at=at)
    tx.enter_stage(version.version_id, details["to_stage"], details["target"], at=at)
    event_id = tx.append_event(
        "promote",
        name=name,
        version=details["version"],
        digest=details["digest"],
        from_stage=details["from_stage"],
        to_stage=details["to_stage"],
        actor=details["actor"],
        reason=details.get("reason"),
        path=details["target"],
        approver=details.get("approver"),
        approval_ticket=details.get("approval_ticket"),
        details={
            "forced": details.get("forced") or [],
            "gates": details.get("gates") or [],
            **({"rollout_id": details["rollout_id"]} if details.get("rollout_id") else {}),
        },
        at=at,
    )
    if details.get("rollout_id"):
        store_rollouts.update_rollout(
            tx,
            details["rollout_id"],
            state="completed",
            ended_at=at,
            verdict=details.get("rollout_verdict"),
        )
    if details.get("forced"):
        tx.append_event(
            "force",
            name=name,
            version=details["version"],
            digest=details["digest"],
            from_stage=details["from_stage"],
            to_stage=details["to_stage"],
            actor=details["actor"],
            reason=details.get("reason"),
            details={"gates": details["forced"]},
            at=at,
        )
    return event_id


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
    repo = _git_repository(project) if git_commit or project.config.git.commit else None
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
            if _live_digest(project, entry) != good[1]:
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
            from skillstage.integrations.git import rollback_message

            details["git_commit"] = {
                "repo_root": str(repo),
                "paths": [
                    str(target),
                    *([details["destination"]] if "destination" in details else []),
                ],
                "message": rollback_message(
                    name,
                    result.version or "",
                    at=at,
                    by=actor,
                    reason=reason,
                    trigger_metric=trigger_metric,
                    from_version=live.version,
                ),
            }
        details["warnings"] = result.warnings  # what went wrong after the commit (`_tidy`)
        try:
            result.event_id, outbox_ids = _roll(project, store, details)
        except (OSError, KeyboardInterrupt) as exc:  # a full disk, a permission, Ctrl-C
            raise _stopped(project, store, name, "rollback", exc) from None
        result.at = at
    result.success = True
    _deliver(project, store, outbox_ids, result)
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


def _roll(project: Project, store: Store, details: dict[str, Any]) -> tuple[int, list[int]]:
    name, target = details["name"], Path(details["target"])
    journal_id = store.open_journal(name, "rollback", details)
    fs.fault_point("rollback:journaled")
    bad_archive = archive_path(project, name, details["bad_version"], details["bad_digest"])
    fs.archive_copy(target, bad_archive)
    fs.fault_point("rollback:archived")
    if "destination" in details:
        destination = Path(details["destination"])
        destination.parent.mkdir(parents=True, exist_ok=True)
        os.rename(target, destination)
    else:
        incoming = Path(details["incoming"])
        fs.copy_tree(Path(details["archive"]), incoming)
        fs.fault_point("rollback:copied")
        _swap_in(incoming, target)
    fs.fault_point("rollback:swapped")
    return _finish_rollback(project, store, journal_id, details)


def _finish_rollback(
    project: Project, store: Store, journal_id: int, details: Mapping[str, Any]
) -> tuple[int, list[int]]:
    at = dt.datetime.fromisoformat(details["at"])
    name = details["name"]
    with store.atomic() as tx:
        if not tx.close_journal(journal_id, outcome="committed", at=at):
            return -1, []
        tx.leave_stage(name, details["stage"], at=at)
        if "destination" in details:
            restored = tx.find_version(name, details["bad_version"])
            assert restored is not None
            tx.enter_stage(restored.version_id, details["to_stage"], details["destination"], at=at)
            version, digest = details["bad_version"], details["bad_digest"]
            path = details["destination"]
        else:
            restored = tx.find_version(name, details["good_version"])
            assert restored is not None
            tx.enter_stage(restored.version_id, details["stage"], details["target"], at=at)
            version, digest, path = (
                details["good_version"],
                details["good_digest"],
                details["target"],
            )
        event_id = tx.append_event(
            "rollback",
            name=name,
            version=version,
            digest=digest,
            from_stage=details["stage"],
            to_stage=details["to_stage"],
            actor=details["actor"],
            reason=details["reason"],
            trigger_metric=details.get("trigger_metric"),
            approver=details.get("approver"),
            path=path,
            details={
                "failed_version": details["bad_version"],
                "failed_digest": details["bad_digest"],
                **({"automated": True} if details.get("hold") else {}),
                **({"override": True} if details.get("approver") else {}),
            },
            at=at,
        )
        if details.get("hold"):
            set_control(
                tx,
                HOLD,
                name,
                stage=details["stage"],
                actor=details["actor"],
                reason=f"rolled back automatically: {details['reason']}"
                + (f" ({details['trigger_metric']})" if details.get("trigger_metric") else ""),
                digest=details["bad_digest"],
                details={"event_id": event_id, "failed_version": details["bad_version"]},
                at=at,
            )
        # Seed 002 §3.2's timeline: the switch is this commit (loaders see the routing bump).
        record_step(tx, event_id, "switched", at=_now())
        effects = {
            **details,
            "version": version,
            "digest": digest,
            "from_stage": details["stage"],
            "target": path,
            "notify": True,  # seed 002 §3.2: an alert within a minute of every rollback
        }
        outbox_ids = _queue_side_effects(project, tx, effects, "rolled_back", event_id=event_id)
    fs.fault_point("rollback:committed")
    entry = archive_path(project, name, details["bad_version"], details["bad_digest"])
    if entry.exists():
        _tidy(
            lambda: record_archive_reason(
                entry, "failed", why=details["reason"], trigger_metric=details.get("trigger_metric")
            ),
            details,
        )
        _tidy(lambda: _record_step(store, event_id, "archived", detail=str(entry)), details)
    if "incoming" in details:
        _tidy(lambda: fs.retire(Path(details["incoming"]), retired_path(project)), details)
    _tidy(lambda: export_registry(project, store), details)
    return event_id, outbox_ids


def _stopped(
    project: Project, store: Store, name: str, what: str, exc: OSError | KeyboardInterrupt
) -> PromotionError:
    """A move stopped half-way (by the system, or by Ctrl-C), finished or undone as after a
    crash (the caller holds the skill's lock), as the error that says so: the user learns now
    whether it happened, not from the next command."""
    if isinstance(exc, KeyboardInterrupt):
        cause = "interrupted"
    else:
        cause = f"{exc.strerror or exc}" + (f" ({exc.filename})" if exc.filename else "")
    try:
        done = recover(project, store, name)
        outcome = "; ".join(done) if done else "nothing was changed"
    except OSError as again:
        outcome = (
            f"and it could not be undone yet ({again.strerror or again}): "
            "`skillstage doctor --repair` finishes or undoes it once that is fixed"
        )
    error = PromotionError(
        f"the {what} of {name} stopped: {cause}; {outcome}",
        hint=None
        if isinstance(exc, KeyboardInterrupt)
        else "free some space or fix the permissions, then run it again",
    )
    if isinstance(exc, KeyboardInterrupt):
        error.exit_code = EXIT_INTERRUPTED
    return error


def _tidy(step: Callable[[], Any], details: Mapping[str, Any]) -> None:
    """A step after the commit (the failed version's note in the archive, retiring the copy
    swapped out): the move is done and recorded, so a full disk or a permission here is a
    warning (`details["warnings"]`, which the result shows), not a failure of the move: a
    "failed" move would be retried, and a rollback would then go back a second version."""
    try:
        step()
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        warnings = details.get("warnings")
        if isinstance(warnings, list):
            warnings.append(
                f"done, but tidying up after it failed: {exc.strerror or exc}{where}; "
                "`skillstage doctor --repair` finishes it"
            )


# -- side effects (git, hooks, notifications) -------------------------------------------------

GIT_COMMIT_KIND = "git_commit"
SMOKE_KIND = "smoke"  # the stage's post-promotion check (seed 001 Step 6)


def _git_repository(project: Project) -> Path:
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


def _promotion_commit(
    project: Project,
    store: Store,
    repo: Path,
    name: str,
    source: _Source,
    to_stage: str,
    target: Path,
    result: PromotionResult,
    at: dt.datetime,
    actor: str,
) -> dict[str, Any]:
    """The git_commit outbox payload: seed 000's message over the paths this move touches."""
    from skillstage.integrations.git import promotion_message

    stages = project.config.stages
    tests = next((g for g in result.gates if g.gate == "tests"), None)
    message = promotion_message(
        name,
        stages[source.stage].label or source.stage,
        stages[to_stage].label or to_stage,
        at=at,
        by=actor,
        validation="FORCED" if result.forced else "PASSED",
        tests={"pass": "PASSED", "skip": "SKIPPED", "warn": "WARNED"}.get(
            tests.status if tests else "skip", "FAILED (forced)"
        ),
        sla=_sla_line(project, store, name, source.stage, at),
    )
    return {"repo_root": str(repo), "paths": [str(source.path), str(target)], "message": message}


def _record_step(store: Store, event_id: int, step: str, **fields: Any) -> None:
    with store.atomic() as tx:
        record_step(tx, event_id, step, at=_now(), **fields)


def _queue_side_effects(
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
    from skillstage.integrations.notify import notification_items
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
        title, body = _message(event, details)
        automated = bool(details.get("hold"))
        for payload in notification_items(
            project.config.notifications,
            event,  # type: ignore[arg-type]
            title=title,
            body=body,
            skill=details["name"],
            severity="critical" if automated else "warning" if event == "rolled_back" else "info",
        ):
            if event_id is not None:
                payload["timeline"] = {"event_id": event_id, "step": "alert_sent"}
            ids.append(enqueue(tx, "notify", payload))
    return ids


def _message(event: str, details: Mapping[str, Any]) -> tuple[str, str]:
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


def _notify_now(
    project: Project, store: Store, event: str, result: PromotionResult
) -> list[dict[str, Any]]:
    """A notification that follows no state change (a gate failed): queued, then delivered."""
    from skillstage.integrations.notify import notification_items
    from skillstage.store.outbox import enqueue

    details = {
        "name": result.skill_name,
        "version": result.version,
        "to_stage": result.to_stage,
        "error": result.error,
    }
    title, body = _message(event, details)
    with store.atomic() as tx:
        ids = [
            enqueue(tx, "notify", payload)
            for payload in notification_items(
                project.config.notifications,
                event,  # type: ignore[arg-type]
                title=title,
                body=body,
                skill=result.skill_name,
            )
        ]
    probe = PromotionResult(success=False, skill_name=result.skill_name)
    _deliver(project, store, ids, probe)
    return probe.deliveries


def _deliver(project: Project, store: Store, ids: list[int], result: PromotionResult) -> None:
    """Deliver this change's outbox items now (after commit). A failure is recorded in the
    outbox and retried later (`skillstage outbox --retry`); it never undoes the change."""
    if not ids:
        return
    from skillstage.integrations.outbox import deliver

    for delivery in deliver(project, store, ids=ids):
        result.deliveries.append(delivery.to_dict())
        if delivery.kind == GIT_COMMIT_KIND and delivery.ok:
            result.commit_hash = delivery.output
        elif delivery.deployment_id:
            result.deployment_id = delivery.deployment_id


# -- recovery -------------------------------------------------------------------------------


def recover(project: Project, store: Store, name: str | None = None) -> list[str]:
    """Finish or undo every change a crashed process left half done (call under the skill's
    lock). Returns what was done, one line per journal entry."""
    done = []
    for entry in store.open_journals(name):
        details = entry.details
        target = Path(details["target"])
        if entry.operation == "promote":
            if _live_digest(project, target) == details["digest"]:
                _finish_promote(project, store, entry.id, details)  # its outbox items stay queued
                done.append(f"{entry.name}: promotion of {details['version']} completed")
                continue
            _undo_swap(details)
        else:
            if "destination" in details:
                moved = Path(details["destination"])
                forward = (
                    not target.exists() and _live_digest(project, moved) == details["bad_digest"]
                )
            else:
                forward = _live_digest(project, target) == details["good_digest"]
            if forward:
                _finish_rollback(project, store, entry.id, details)
                done.append(f"{entry.name}: rollback to {details.get('good_version')} completed")
                continue
            _undo_swap(details)
        store.close_journal(entry.id, outcome="rolled_back")
        done.append(f"{entry.name}: unfinished {entry.operation} undone")
    if name is not None:
        for orphan in _scratch_dirs(project, name):
            fs.delete_scratch(orphan)
            done.append(f"{name}: removed leftover {orphan}")
    return done


_SCRATCH = re.compile(r"\.skillstage-[a-z]+-(?P<dir>.+)-[0-9a-f]{12}(?:-old)?")


def _scratch_dirs(project: Project, name: str | None = None) -> Iterator[Path]:
    """Scratch copies a crashed process left beside live directories or in the archive (of one
    skill, or of all). Only safe to delete under the skill's lock with its journal closed."""
    roots = {project.stage_root(stage) for stage in project.config.stages}
    patterns = [config.directory_pattern() for config in project.config.stages.values()]
    for root in roots:
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            match = _SCRATCH.fullmatch(entry.name)
            if match is None:
                continue
            owners = {m["name"] for p in patterns if (m := p.match(match["dir"]))} or {match["dir"]}
            if name is None or name in owners:
                yield entry
    archive = project.state_dir / "archive"
    for skill_dir in [archive / name] if name else (archive.iterdir() if archive.is_dir() else []):
        if skill_dir.is_dir():
            yield from (e for e in skill_dir.iterdir() if _SCRATCH.fullmatch(e.name))


def _scratch_owner(project: Project, path: Path) -> str:
    if path.parent.parent == project.state_dir / "archive":
        return path.parent.name
    match = _SCRATCH.fullmatch(path.name)
    assert match is not None
    for config in project.config.stages.values():
        if (found := config.directory_pattern().match(match["dir"])) is not None:
            return found["name"]
    return match["dir"]


def _undo_swap(details: Mapping[str, Any]) -> None:
    """The change never went live: put back a live copy moved aside, drop scratch copies."""
    target = Path(details["target"])
    incoming = Path(details["incoming"]) if details.get("incoming") else None
    if incoming is not None:
        aside = incoming.with_name(incoming.name + "-old")
        if not target.exists() and aside.exists():
            os.rename(aside, target)  # died between the two fallback renames
        fs.delete_scratch(incoming)
        fs.delete_scratch(aside)


def recover_all(
    project: Project, store: Store, *, lock_timeout: float = DEFAULT_LOCK_TIMEOUT
) -> list[str]:
    """`recover` for every skill with an open journal entry, each under its lock."""
    done: list[str] = []
    names = [entry.name for entry in store.open_journals()]
    names += [_scratch_owner(project, path) for path in _scratch_dirs(project)]
    for name in dict.fromkeys(names):
        with skill_lock(project, store, name, timeout=lock_timeout):
            done += recover(project, store, name)
    return done
