"""Restoring a backup (`backup.py`): the whole project, or one skill (seed 003 scenario 3).

A restore refuses a backup whose checksums do not match, and a store that has moved on since the
backup (events later than its latest) unless forced; it takes a backup of the current state
first. Every member is checked as it is extracted into a scratch folder, before anything live
changes; then the store is put back (whole restores), and each skill directory is swapped in
atomically under the skill's lock (`fs.exchange`, as the promoter does), the copy it replaces
retired as the promoter retires one; each restored skill gets a `restore` event.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.backup import (
    BackupCorruptedError,
    BackupError,
    Progress,
    backups_dir,
    scan_directory,
    sha256_file,
    tree_fingerprint,
    verify_backup,
)
from skillstage.lifecycle.backup_create import create_backup
from skillstage.lifecycle.locks import skill_lock
from skillstage.lifecycle.move import retired_path


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
        return {k: v for k, v in self.__dict__.items()}


@dataclass
class RestoreResult:
    backup_id: str
    dry_run: bool
    skill: str | None
    changes: list[Change] = field(default_factory=list)
    unchanged: int = 0
    pre_restore_backup: str | None = None
    warnings: list[str] = field(default_factory=list)
    events: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "backup": self.backup_id,
            "dry_run": self.dry_run,
            "skill": self.skill,
            "changes": [c.to_dict() for c in self.changes],
            "unchanged": self.unchanged,
            "pre_restore_backup": self.pre_restore_backup,
            "warnings": self.warnings,
            "events": self.events,
        }


def _live_fingerprint(project: Project) -> tuple[dict[str, Any] | None, str | None]:
    """The current store's fingerprint, or None and why it cannot be read."""
    from skillstage.lifecycle.backup_store import store_fingerprint
    from skillstage.store import Store

    try:
        with Store.open(project.database_url) as store:
            return store_fingerprint(store), None
    except SkillstageError as exc:
        return None, exc.message


def _newer(
    live: dict[str, Any], backed: dict[str, Any], skill: str | None, project: Project
) -> str | None:
    """Why the live store is newer than the backup, or None."""
    latest_id, latest_at = backed.get("latest_event_id") or 0, backed.get("latest_event_at")
    if skill is not None:
        from skillstage.store import Store

        with Store.open(project.database_url) as store:
            found = store.events(skill, 1)
        if not found:
            return None
        event = found[0]
        if event.id > latest_id or (latest_at and event.at > dt.datetime.fromisoformat(latest_at)):
            return (
                f"{skill} has events since the backup (the latest: {event.kind}, "
                f"{event.at:%Y-%m-%d %H:%M:%S})"
            )
        return None
    now_id, now_at = live.get("latest_event_id") or 0, live.get("latest_event_at")
    if (
        now_id > latest_id
        or (now_at and latest_at and now_at > latest_at)
        or (now_at and not latest_at)
    ):
        return (
            f"the store has {live.get('events')} events, the latest at {now_at}; the backup's "
            f"latest is at {latest_at or '(none)'}"
        )
    return None


def restore_backup(
    project: Project,
    path: Path,
    *,
    who: str,
    skill: str | None = None,
    dry_run: bool = False,
    force: bool = False,
    progress: Progress | None = None,
) -> RestoreResult:
    """Restore the backup at `path` (the whole project, or with `skill` that skill's directories
    and archive entries and its stage pointers)."""
    scratch = None if dry_run else fs.sibling(backups_dir(project) / path.name, "restoring")
    try:
        if scratch is not None:
            scratch.mkdir(parents=True)
        return _restore(project, path, scratch, who, skill, dry_run, force, progress)
    finally:
        if scratch is not None:
            fs.delete_scratch(scratch)


def _restore(
    project: Project,
    path: Path,
    scratch: Path | None,
    who: str,
    skill: str | None,
    dry_run: bool,
    force: bool,
    progress: Progress | None,
) -> RestoreResult:
    from skillstage.store import SCHEMA_REVISION

    # Checked and (unless a dry run) extracted in one pass: nothing live changes before the
    # whole backup is known to be intact.
    found = verify_backup(path, extract_to=scratch)
    if not found.ok:
        raise BackupCorruptedError(
            f"the backup {found.id} is damaged; nothing was restored: "
            + "; ".join(found.problems[:5]),
            path=path,
            hint="`skillstage backup verify` lists every problem; restore another backup "
            "(`skillstage backup list`)",
        )
    manifest = found.manifest
    result = RestoreResult(found.id, dry_run, skill)
    if manifest.get("schema_revision") != SCHEMA_REVISION:
        raise BackupError(
            f"the backup {found.id} holds a store at schema {manifest.get('schema_revision')}, "
            f"this skillstage uses {SCHEMA_REVISION}",
            hint=f"restore it with skillstage {manifest.get('skillstage_version')}, then upgrade",
        )
    backed_store = manifest["store"]
    if backed_store["kind"] == "unreadable" and skill is None:
        raise BackupError(
            f"the backup {found.id} holds no usable store ({backed_store.get('error')})",
            hint="restore one skill from it with --skill NAME, or restore another backup",
        )
    if skill is not None and skill not in manifest["skills"] and not _archived(manifest, skill):
        raise UsageError(
            f"the backup {found.id} holds no skill named {skill!r}",
            hint="`skillstage backup list --json` shows what each backup holds",
        )
    live, unreadable = _live_fingerprint(project)
    if unreadable is not None:
        if skill is not None:
            raise BackupError(
                f"the store cannot be opened ({unreadable}): a single skill cannot be restored "
                "into it",
                hint="restore the whole backup (without --skill), which puts the store back",
            )
        result.warnings.append(f"the current store cannot be read ({unreadable}); it is replaced")
    elif (why := _newer(live or {}, backed_store, skill, project)) is not None:
        if not force:
            raise BackupError(
                f"the store is newer than the backup {found.id}: {why}; nothing was restored",
                hint="restoring would lose what happened since; pass --force to restore anyway "
                "(a backup of the current state is taken first)",
                code="BACKUP_OLDER_THAN_STORE",
            )
        result.warnings.append(f"forced over a newer store: {why}")
    plan = _plan(project, manifest, skill)
    result.changes = [change for change, _ in plan if change is not None]
    result.unchanged = sum(1 for change, _ in plan if change is None)
    if skill is None:
        result.changes.insert(
            0,
            Change(
                "store",
                "store",
                detail=f"{backed_store.get('events')} events as of "
                f"{backed_store.get('latest_event_at')} (now: "
                + (f"{live.get('events')} events)" if live else "unreadable)"),
            ),
        )
    if dry_run:
        return result
    pre, _ = create_backup(
        project, name="pre-restore", who=who, reason=f"before restoring {found.id}"
    )
    result.pre_restore_backup = pre.id
    assert scratch is not None
    if skill is None:
        _restore_store(project, scratch, backed_store, result)
    result.events = _swap_all(project, manifest, scratch, plan, who, result, progress)
    return result


def _archived(manifest: dict[str, Any], skill: str) -> bool:
    return any(p.startswith(f"archive/{skill}/") for p in manifest["files"])


# -- what changes --------------------------------------------------------------------------------

# (a change, or None for something already as in the backup; what to do: (member prefix, target))
Step = tuple[Change | None, tuple[str | None, Path]]


def _plan(project: Project, manifest: dict[str, Any], only: str | None) -> list[Step]:
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
            same = _same(target, files, prefix, entry["fingerprint"])
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
    entries = sorted(
        {
            "/".join(p.split("/")[:3])
            for p in files
            if p.startswith("archive/") and len(p.split("/")) >= 3 and p.split("/")[2]
        }
    )
    # Each entry's files, gathered once (not a search of every file per entry).
    by_entry: dict[str, dict[str, dict[str, Any]]] = {}
    for path, value in files.items():
        parts = path.split("/", 3)
        if parts[0] == "archive" and len(parts) >= 3 and parts[2]:
            by_entry.setdefault("/".join(parts[:3]), {})[path] = value
    for entry in entries:
        name = entry.split("/")[1]
        if only is not None and name != only:
            continue
        target = project.state_dir / entry
        if entry in files or entry + "/" in files:
            kind = files.get(entry + "/", files.get(entry, {}))
            if kind.get("type") == "file":  # a sidecar: <entry>.json
                same = target.is_file() and _sha(target) == kind["sha256"]
            else:
                expected = tree_fingerprint(by_entry.get(entry, {}), entry + "/")
                same = _same(target, files, entry + "/", expected)
            change = None if same else Change("archive", name, None, str(target), None, entry)
            steps.append((change, (entry if kind.get("type") == "file" else entry + "/", target)))
    return steps


def _sha(path: Path) -> str:
    return sha256_file(os.fspath(path))


def _same(target: Path, files: dict[str, Any], prefix: str, fingerprint: str) -> bool:
    if not target.is_dir() or target.is_symlink():
        return False
    found: dict[str, dict[str, Any]] = {}
    scan_directory(target, prefix, found)
    return tree_fingerprint(found, prefix) == fingerprint


# -- doing it -------------------------------------------------------------------------------------


def _restore_store(
    project: Project, scratch: Path, backed: dict[str, Any], result: RestoreResult
) -> None:
    from skillstage.lifecycle.backup_store import import_store, restore_sqlite
    from skillstage.store import Store
    from skillstage.store.db import parse_url

    url = parse_url(project.database_url)
    copy = scratch / backed["member"]
    if backed["kind"] == "sqlite-backup-api":
        if url.backend != "sqlite" or url.database is None:
            raise BackupError(
                "the backup holds a SQLite store, and this project's store is "
                f"{url.backend} ({url.display})",
                hint="point `database` at a SQLite file to restore it",
            )
        restore_sqlite(url.database, copy)
        return
    if url.backend != "postgresql":
        raise BackupError(
            f"the backup holds a PostgreSQL export, and this project's store is {url.display}",
            hint="point `database` (or SKILLSTAGE_DATABASE_URL) at a PostgreSQL database",
        )
    with Store.open(project.database_url) as store:
        import_store(store, copy)


def _swap_all(
    project: Project,
    manifest: dict[str, Any],
    scratch: Path,
    plan: list[Step],
    who: str,
    result: RestoreResult,
    progress: Progress | None,
) -> list[int]:
    from skillstage.store import Store

    work = [(change, todo) for change, todo in plan if change is not None]
    events: list[int] = []
    with Store.open(project.database_url) as store:
        by_skill: dict[str, list[tuple[Change, tuple[str | None, Path]]]] = {}
        for change, todo in work:
            by_skill.setdefault(change.name, []).append((change, todo))
        for done, (name, changes) in enumerate(sorted(by_skill.items()), 1):
            with skill_lock(project, store, name):
                try:
                    for _change, (prefix, target) in changes:
                        source = scratch / prefix if prefix is not None else None
                        _swap(project, source, target)
                except OSError as exc:
                    where = f" ({exc.filename})" if exc.filename else ""
                    raise BackupError(
                        f"the restore stopped at {name}: {exc.strerror or exc}{where}; "
                        f"{done - 1} of {len(by_skill)} skills were restored",
                        hint="fix it and run the restore again (with --force: its own events "
                        f"are newer than the backup); {result.pre_restore_backup} holds the "
                        "state before",
                    ) from exc
                if result.skill is not None:  # its stage pointers move under its lock
                    events.append(_record(project, store, manifest, name, changes, who, result))
            if progress:
                progress("skills", done, len(by_skill))
        if result.skill is None:
            # One transaction for every skill's event (one commit, not one per skill).
            with store.atomic():
                for name, changes in sorted(by_skill.items()):
                    events.append(_record(project, store, manifest, name, changes, who, result))
    return events


def _swap(project: Project, source: Path | None, target: Path) -> None:
    """Put the extracted `source` at `target` atomically (None: take `target` away)."""
    if source is None:
        if os.path.lexists(target):
            aside = fs.sibling(target, "restored-away")
            os.rename(target, aside)
            fs.retire(aside, retired_path(project))
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    incoming = fs.sibling(target, "incoming")
    try:
        os.rename(source, incoming)
    except OSError:
        if source.is_dir():
            fs.copy_tree(source, incoming)
        else:
            import shutil

            shutil.copy2(source, incoming)
    if not os.path.lexists(target):
        os.rename(incoming, target)
        return
    if source.is_dir() or incoming.is_dir():
        if not fs.exchange(incoming, target):
            aside = incoming.with_name(incoming.name + "-old")
            os.rename(target, aside)
            os.rename(incoming, target)
            os.rename(aside, incoming)
        fs.retire(incoming, retired_path(project))
    else:
        os.replace(incoming, target)  # an archive entry's sidecar


def _record(
    project: Project,
    store: Any,
    manifest: dict[str, Any],
    name: str,
    changes: list[tuple[Change, tuple[str | None, Path]]],
    who: str,
    result: RestoreResult,
) -> int:
    """The skill's `restore` event; for a one-skill restore its stage pointers too, as the
    backup had them."""
    stages = manifest["skills"].get(name, {})
    restored = [c for c, _ in changes if c.kind == "restore"]
    removed = [c for c, _ in changes if c.kind == "remove"]
    first = restored[0] if restored else None
    at = dt.datetime.now(dt.UTC)
    with store.atomic() as tx:
        if result.skill is not None:
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
            actor=who,
            reason=f"restored from backup {result.backup_id}",
            path=first.path if first else None,
            details={
                "backup": result.backup_id,
                "pre_restore_backup": result.pre_restore_backup,
                "restored": [
                    {"stage": c.stage, "version": c.version, "path": c.path} for c in restored
                ],
                "removed": [{"stage": c.stage, "path": c.path} for c in removed],
                "archive": [c.detail for c, _ in changes if c.kind == "archive"],
                "whole": result.skill is None,
            },
            at=at,
        )
    return event_id


def iter_changes(result: RestoreResult) -> Iterator[str]:
    """The changes as lines a person reads."""
    verb = "would " if result.dry_run else ""
    for change in result.changes:
        if change.kind == "store":
            yield f"{verb}replace the store: {change.detail}"
        elif change.kind == "restore":
            yield (
                f"{verb}restore {change.name} {change.version or ''} in {change.stage} "
                f"({change.detail}): {change.path}"
            ).replace("  ", " ")
        elif change.kind == "remove":
            yield f"{verb}remove {change.name} from {change.stage} ({change.detail}): {change.path}"
        else:
            yield f"{verb}put back archive entry {change.detail}"
