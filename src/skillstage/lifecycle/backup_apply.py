"""A restore's changes to the live project, journaled so that a restore killed part-way (even
by SIGKILL) is finished by `skillstage backup restore --resume` or `skillstage doctor --repair`.

Before the first live change the restore writes its journal (`<state_dir>/backups/
restore-journal.json`: which backup, the verified extraction in the scratch folder, the changes
planned, the backup taken first). It is a file, not a row of the store, because a whole restore
replaces the store. Every step can be done again:

1. the store (whole restores) is replaced in one transaction by the backup's, again on resume;
2. each skill directory and archive entry is swapped in from the extraction under the skill's
   lock, atomically (`renameat2(RENAME_EXCHANGE)`; else two renames, between which the live path
   is missing, which the next plan sees and fills). The extraction stays where it is until its
   step is done, so resuming re-plans against the disk and does what is still different;
3. one transaction records a `restore` event per skill, each carrying the restore's id, so a
   resume after it does not record them again;
4. the extraction (now holding the copies swapped out) is retired and the journal deleted.

Resuming always rolls forward: the extraction was verified, and rolling back would mean
restoring the backup taken first, which `backup restore` does when asked.
"""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.lifecycle import fs
from skillstage.lifecycle.backup import (
    BackupError,
    Progress,
    backups_dir,
    scan_directory,
    sha256_file,
    tree_fingerprint,
)
from skillstage.lifecycle.leftovers import RESTORE_JOURNAL
from skillstage.lifecycle.locks import skill_lock
from skillstage.lifecycle.move import retired_path

MANIFEST_COPY = "manifest.json"  # the backup's manifest, beside its extraction


@dataclass
class Change:
    """One thing a restore changes (or would): a skill directory, an archive entry, the store."""

    kind: str  # restore, remove, archive, store
    name: str
    stage: str | None = None
    path: str | None = None
    version: str | None = None
    detail: str = ""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


# (a change, or None for something already as in the backup; what to do: (member prefix, target))
Step = tuple[Change | None, tuple[str | None, Path]]


@dataclass
class RestoreJournal:
    """What a restore under way is doing, for whoever finishes it."""

    restore_id: str
    backup_id: str
    scratch: str
    skill: str | None
    who: str
    pre_restore_backup: str | None
    changes: list[dict[str, Any]] = field(default_factory=list)
    started_at: str = ""

    def changes_of(self) -> list[Change]:
        return [Change(**c) for c in self.changes]


def journal_path(project: Project) -> Path:
    return backups_dir(project) / RESTORE_JOURNAL


def read_journal(project: Project) -> RestoreJournal | None:
    """The journal of a restore that has not finished, or None."""
    path = journal_path(project)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return RestoreJournal(**json.loads(text))
    except (ValueError, TypeError) as exc:
        raise BackupError(
            f"the journal of an unfinished restore cannot be read: {exc}",
            path=path,
            hint="restore the backup again with --force (its own backup first), then delete "
            f"{path}",
        ) from exc


def write_journal(project: Project, journal: RestoreJournal) -> None:
    fs.write_atomically(journal_path(project), json.dumps(asdict(journal), indent=1))


# -- what differs --------------------------------------------------------------------------------


def plan_restore(project: Project, manifest: dict[str, Any], only: str | None) -> list[Step]:
    """Every skill directory and archive entry of the backup (of one skill, with `only`), each
    with the change that puts it back or None where the disk already matches; and the live
    skill directories the backup does not have, to be removed."""
    from skillstage.skill.read import stage_directories

    files = manifest["files"]
    steps: list[Step] = []
    in_backup: set[tuple[str, str]] = set()
    for name, stages in sorted(manifest["skills"].items()):
        if only is not None and name != only:
            continue
        for stage, entry in stages.items():
            if stage not in project.config.stages:
                raise BackupError(
                    f"the backup has {name} in stage {stage!r}, which this project's config "
                    f"does not declare (stages: {', '.join(project.config.stages)})",
                    hint=f"add [stages.{stage}] to skillstage.toml, or restore another backup",
                )
            in_backup.add((name, stage))
            target = project.stage_path(stage, name)
            prefix = f"stages/{stage}/{name}/"
            same = _same(target, prefix, entry["fingerprint"])
            change = (
                None
                if same
                else Change(
                    "restore",
                    name,
                    stage,
                    str(target),
                    entry.get("version"),
                    "missing" if not os.path.lexists(target) else "differs from the backup",
                )
            )
            steps.append((change, (prefix, target)))
    for live in stage_directories(project):
        if (only is None or live.name == only) and (live.name, live.stage) not in in_backup:
            steps.append(
                (
                    Change(
                        "remove", live.name, live.stage, str(live.path), None, "not in the backup"
                    ),
                    (None, live.path),
                )
            )
    # Each archive entry's files, gathered once (not a search of every file per entry).
    by_entry: dict[str, dict[str, dict[str, Any]]] = {}
    for path, value in files.items():
        parts = path.split("/", 3)
        if parts[0] == "archive" and len(parts) >= 3 and parts[2]:
            by_entry.setdefault("/".join(parts[:3]), {})[path] = value
    for entry in sorted(by_entry):
        name = entry.split("/")[1]
        if only is not None and name != only:
            continue
        target = project.state_dir / entry
        if entry in files or entry + "/" in files:
            kind = files.get(entry + "/", files.get(entry, {}))
            if kind.get("type") == "file":  # a sidecar: <entry>.json
                same = target.is_file() and sha256_file(os.fspath(target)) == kind["sha256"]
            else:
                expected = tree_fingerprint(by_entry[entry], entry + "/")
                same = _same(target, entry + "/", expected)
            change = None if same else Change("archive", name, None, str(target), None, entry)
            steps.append((change, (entry if kind.get("type") == "file" else entry + "/", target)))
    return steps


def _same(target: Path, prefix: str, fingerprint: str) -> bool:
    if not target.is_dir() or target.is_symlink():
        return False
    found: dict[str, dict[str, Any]] = {}
    scan_directory(target, prefix, found)
    return tree_fingerprint(found, prefix) == fingerprint


# -- doing it -------------------------------------------------------------------------------------


def apply_restore(
    project: Project, journal: RestoreJournal, progress: Progress | None = None
) -> list[int]:
    """Do, or finish, the restore `journal` describes; returns the ids of its events."""
    scratch = Path(journal.scratch)
    if not scratch.is_dir():
        raise BackupError(
            f"the restore of {journal.backup_id} cannot be finished: its verified extraction "
            f"({scratch}) is gone",
            hint=f"restore {journal.backup_id} again with --force, then delete "
            f"{journal_path(project)}",
        )
    manifest: dict[str, Any] = json.loads((scratch / MANIFEST_COPY).read_text(encoding="utf-8"))
    recorded = _recorded(project, journal)
    if recorded is None:
        if journal.skill is None:
            _restore_store(project, scratch, manifest["store"])
        fs.fault_point("restore:store")
        recorded = _swap_all(project, manifest, scratch, journal, progress)
    # The copies swapped out (in the extraction's folder now) wait out their readers.
    fs.retire(scratch, retired_path(project))
    journal_path(project).unlink(missing_ok=True)
    return recorded


def _recorded(project: Project, journal: RestoreJournal) -> list[int] | None:
    """The restore's events, if a run before this one recorded them (it then stopped before
    it could tidy up), else None."""
    from skillstage.errors import SkillstageError
    from skillstage.store import Store

    try:
        with Store.open(project.database_url) as store:
            found = store.events(kind="restore", limit=len(journal.changes) + 100)
    except SkillstageError:
        return None  # the store is the one being replaced
    ids = [e.id for e in found if (e.details or {}).get("restore_id") == journal.restore_id]
    return sorted(ids) if ids else None


def _restore_store(project: Project, scratch: Path, backed: dict[str, Any]) -> None:
    from skillstage.lifecycle.backup_store import restore_store

    restore_store(project, scratch / backed["member"], backed)


def _swap_all(
    project: Project,
    manifest: dict[str, Any],
    scratch: Path,
    journal: RestoreJournal,
    progress: Progress | None,
) -> list[int]:
    from skillstage.store import Store

    plan = plan_restore(project, manifest, journal.skill)
    by_skill: dict[str, list[tuple[str | None, Path]]] = {}
    for change, todo in plan:
        if change is not None:
            by_skill.setdefault(change.name, []).append(todo)
    planned: dict[str, list[Change]] = {}
    for change in journal.changes_of():
        if change.kind != "store":
            planned.setdefault(change.name, []).append(change)
    events: list[int] = []
    names = sorted(set(by_skill) | set(planned))  # (resumed: some may have nothing left to do)
    with Store.open(project.database_url) as store:
        for done, name in enumerate(names, 1):
            todos = by_skill.get(name, [])
            with skill_lock(project, store, name):
                try:
                    for prefix, target in todos:
                        _swap(project, scratch, scratch / prefix if prefix else None, target)
                except OSError as exc:
                    where = f" ({exc.filename})" if exc.filename else ""
                    raise BackupError(
                        f"the restore stopped at {name}: {exc.strerror or exc}{where}; "
                        f"{done - 1} of {len(names)} skills were restored",
                        hint="fix it, then `skillstage backup restore --resume` finishes the "
                        f"restore; {journal.pre_restore_backup} holds the state before",
                    ) from exc
                if done == 1:
                    fs.fault_point("restore:one-swapped")
                if journal.skill is not None:  # its stage pointers move under its lock
                    events.append(
                        _record(project, store, manifest, name, planned.get(name, []), journal)
                    )
            if progress:
                progress("skills", done, len(names))
        fs.fault_point("restore:swapped")
        if journal.skill is None:
            # One transaction for every skill's event (one commit, not one per skill).
            with store.atomic():
                for name, changes in sorted(planned.items()):
                    events.append(_record(project, store, manifest, name, changes, journal))
    fs.fault_point("restore:recorded")
    return events


def _swap(project: Project, scratch: Path, source: Path | None, target: Path) -> None:
    """Put the extracted `source` at `target` atomically (None: take `target` away). The old
    copy ends up in the scratch folder; `source` leaves it only once it is live (a copy is
    made when it cannot be moved: another filesystem), so a step stopped half-way is done
    again from the same extraction."""
    aside = scratch / "replaced" / os.urandom(6).hex()
    if source is None:
        if os.path.lexists(target):
            _move(target, aside)
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        if not os.path.lexists(target):
            os.rename(source, target)
        elif source.is_dir() and not target.is_symlink() and target.is_dir():
            if not fs.exchange(source, target):
                # No RENAME_EXCHANGE: two renames. Between them the live path is missing, and
                # the plan of a resumed restore sees that and fills it.
                _move(target, aside)
                fs.fault_point("restore:between-renames")
                os.rename(source, target)
        else:
            os.replace(source, target)  # an archive entry's sidecar, or a file in the way
        return
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EACCES, errno.EPERM):
            raise
    # Another filesystem (or a read-only archive directory that may not change parent): a copy
    # beside the target, swapped in; the extraction keeps its copy until this is done.
    incoming = fs.sibling(target, "incoming")
    if source.is_dir():
        fs.copy_tree(source, incoming)
    else:
        shutil.copy2(source, incoming)
    if not os.path.lexists(target):
        os.rename(incoming, target)
    elif incoming.is_dir() and fs.exchange(incoming, target):
        fs.retire(incoming, retired_path(project))
    elif incoming.is_dir():
        _move(target, aside)
        os.rename(incoming, target)
    else:
        os.replace(incoming, target)


def _move(path: Path, destination: Path) -> None:
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.rename(path, destination)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        fs.remove_tree(path)  # on another filesystem than the scratch folder


def _record(
    project: Project,
    store: Any,
    manifest: dict[str, Any],
    name: str,
    changes: list[Change],
    journal: RestoreJournal,
) -> int:
    """The skill's `restore` event; for a one-skill restore its stage pointers too, as the
    backup had them."""
    stages = manifest["skills"].get(name, {})
    restored = [c for c in changes if c.kind == "restore"]
    removed = [c for c in changes if c.kind == "remove"]
    first = restored[0] if restored else None
    at = dt.datetime.now(dt.UTC)
    with store.atomic() as tx:
        if journal.skill is not None:
            for stage, entry in stages.items():
                if entry.get("version") and entry.get("digest"):
                    version = tx.ensure_version(
                        name,
                        entry["version"],
                        entry["digest"],
                        path=str(project.stage_path(stage, name)),
                        frontmatter={},
                        at=at,
                    )
                    current = tx.current_assignments(stage=stage, name=name)
                    if not current or current[0].digest != entry["digest"]:
                        tx.enter_stage(
                            version.version_id, stage, str(project.stage_path(stage, name)), at=at
                        )
            for change in removed:
                assert change.stage is not None
                tx.leave_stage(name, change.stage, at=at)
        event_id: int = tx.append_event(
            "restore",
            name=name,
            version=first.version if first else None,
            digest=stages.get(first.stage, {}).get("digest") if first and first.stage else None,
            to_stage=first.stage if first else None,
            actor=journal.who,
            reason=f"restored from backup {journal.backup_id}",
            path=first.path if first else None,
            details={
                "backup": journal.backup_id,
                "restore_id": journal.restore_id,
                "pre_restore_backup": journal.pre_restore_backup,
                "restored": [
                    {"stage": c.stage, "version": c.version, "path": c.path} for c in restored
                ],
                "removed": [{"stage": c.stage, "path": c.path} for c in removed],
                "archive": [c.detail for c in changes if c.kind == "archive"],
                "whole": journal.skill is None,
            },
            at=at,
        )
    return event_id
