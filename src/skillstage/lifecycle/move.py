"""The journaled move: how a promotion or rollback changes a live directory so that a crash
(even SIGKILL) at any instant leaves a state `recover` makes whole (DESIGN.md "Promotion, the
heart"). The orchestration around it (gates, confirmation, results) is `promote.py`.

Every change follows one sequence:

1. under the skill's lock, finish any journal entry an earlier process left open;
2. write the intent to the journal (its own committed transaction) before touching the disk;
3. archive the version (immutable), copy it beside the live path, swap it in atomically;
4. in ONE transaction: move the stage pointer, append the event, close the journal entry, and
   queue the side effects (`effects.py`), so that they happen if and only if the change did.

Recovery looks at the disk: if the live directory already holds the new digest, the change rolls
forward (step 4 is done now); otherwise it rolls back (scratch directories are removed).
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.errors import EXIT_INTERRUPTED, SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.archive import archive_path, directory_digest, record_archive_reason
from skillstage.lifecycle.effects import queue_side_effects
from skillstage.lifecycle.leftovers import scratch_dirs, to_recover
from skillstage.lifecycle.locks import DEFAULT_LOCK_TIMEOUT, skill_lock
from skillstage.runtime.registry_file import export_registry
from skillstage.skill.maturity import rewrite_maturity
from skillstage.skill.model import SkillVersion
from skillstage.store import Store, Transaction
from skillstage.store import rollouts as store_rollouts
from skillstage.store.controls import HOLD, record_step, set_control


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- before a move: what it refuses --------------------------------------------------------


class PromotionError(SkillstageError):
    """A promotion or rollback was refused (gates failed, nothing to roll back to, …)."""

    code = "PROMOTION_FAILED"


# The longest skill directory name the promoter's scratch names (".skillstage-incoming-<name>-
# <12 hex>") leave room for within the usual 255-byte file name limit; the spec allows 64.
MAX_NAME_BYTES = 200


def refuse_target(project: Project, name: str, target: Path) -> None:
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


def refuse_unwritable(*folders: Path) -> None:
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


# -- where things are ----------------------------------------------------------------------


def retired_path(project: Project) -> Path:
    """Where copies swapped out of a live directory wait out the readers that still hold them."""
    return project.state_dir / "retired"


# -- promote ------------------------------------------------------------------------------


def move_promotion(
    project: Project,
    store: Store,
    skill: SkillVersion,
    from_stage: str,
    source: Path,
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
    gates: list[dict[str, Any]],
    warnings: list[str],
    rollout_id: int | None = None,
    rollout_verdict: Mapping[str, Any] | None = None,
) -> tuple[int, list[int]]:
    """Promote `skill` (its copy at `source`, in `from_stage`) to `target` in `to_stage`, under
    the skill's lock: journaled, archived, swapped in, recorded (`gates`: the results, as
    recorded in the event). Returns the event's id and the outbox items queued with it."""
    archive = archive_path(project, skill.name, skill.version, skill.digest)
    incoming = fs.sibling(target, "incoming")
    previous = directory_digest(project, target)
    details = {
        "kind": "promote",
        "name": skill.name,
        "version": skill.version,
        "digest": skill.digest,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "source": str(source),
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
        "gates": gates,
        "warnings": warnings,  # what went wrong after the commit (`_tidy`)
        # The rollout this promotion completes, closed in its transaction (and so on recovery).
        "rollout_id": rollout_id,
        "rollout_verdict": dict(rollout_verdict) if rollout_verdict else None,
    }
    journal_id = store.open_journal(skill.name, "promote", details, at=at)
    fs.fault_point("promote:journaled")
    fs.archive_copy(source, archive)
    if previous is not None:
        _archive_overwritten(project, store, skill.name, to_stage, target, previous)
    fs.fault_point("promote:archived")
    target.parent.mkdir(parents=True, exist_ok=True)
    fs.copy_tree(archive, incoming)
    maturity = (commit or {}).get("maturity")
    if maturity:
        # Before the swap, so the live copy says its stage from its first instant; the digest
        # does not see maturity lines' values, so it is still the recorded one.
        details["maturity_files"] = rewrite_maturity(incoming, maturity["label"], maturity["files"])
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
        outbox_ids = queue_side_effects(project, tx, details, "promoted")
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
    # (the promotion's event and, when it was forced past gates, the force event)
    moved: dict[str, Any] = {
        "name": name,
        "version": details["version"],
        "digest": details["digest"],
        "from_stage": details["from_stage"],
        "to_stage": details["to_stage"],
        "actor": details["actor"],
        "reason": details.get("reason"),
        "at": at,
    }
    event_id = tx.append_event(
        "promote",
        **moved,
        path=details["target"],
        approver=details.get("approver"),
        approval_ticket=details.get("approval_ticket"),
        details={
            "forced": details.get("forced") or [],
            "gates": details.get("gates") or [],
            **({"rollout_id": details["rollout_id"]} if details.get("rollout_id") else {}),
            **(
                {"maturity_files": details["maturity_files"]}
                if details.get("maturity_files")
                else {}
            ),
        },
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
        tx.append_event("force", **moved, details={"gates": details["forced"]})
    return event_id


# -- rollback -----------------------------------------------------------------------------


def move_rollback(project: Project, store: Store, details: dict[str, Any]) -> tuple[int, list[int]]:
    """Roll back as `details` say (written by `promote.rollback`): the good version swapped in
    from the archive, or, with a `destination`, the live copy moved back a stage. Under the
    skill's lock; returns the event's id and the outbox items queued with it."""
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
        outbox_ids = queue_side_effects(project, tx, effects, "rolled_back", event_id=event_id)
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


def _record_step(store: Store, event_id: int, step: str, **fields: Any) -> None:
    with store.atomic() as tx:
        record_step(tx, event_id, step, at=_now(), **fields)


# -- a move stopped half-way --------------------------------------------------------------


def stopped_error(
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


# -- recovery -----------------------------------------------------------------------------


def recover(project: Project, store: Store, name: str | None = None) -> list[str]:
    """Finish or undo every change a crashed process left half done (call under the skill's
    lock). Returns what was done, one line per journal entry."""
    done = []
    for entry in store.open_journals(name):
        details = entry.details
        target = Path(details["target"])
        if entry.operation == "promote":
            if directory_digest(project, target) == details["digest"]:
                _finish_promote(project, store, entry.id, details)  # its outbox items stay queued
                done.append(f"{entry.name}: promotion of {details['version']} completed")
                continue
            _undo_swap(details)
        else:
            if "destination" in details:
                moved = Path(details["destination"])
                forward = (
                    not target.exists()
                    and directory_digest(project, moved) == details["bad_digest"]
                )
            else:
                forward = directory_digest(project, target) == details["good_digest"]
            if forward:
                _finish_rollback(project, store, entry.id, details)
                done.append(f"{entry.name}: rollback to {details.get('good_version')} completed")
                continue
            _undo_swap(details)
        store.close_journal(entry.id, outcome="rolled_back")
        done.append(f"{entry.name}: unfinished {entry.operation} undone")
    if name is not None:
        for orphan in scratch_dirs(project, name):
            fs.delete_scratch(orphan)
            done.append(f"{name}: removed leftover {orphan}")
    return done


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
    for name in to_recover(project, store):
        with skill_lock(project, store, name, timeout=lock_timeout):
            done += recover(project, store, name)
    return done
