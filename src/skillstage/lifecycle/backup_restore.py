"""Restoring a backup (`backup.py`): the whole project, or one skill (seed 003 scenario 3).

A restore refuses a backup whose checksums do not match, and a store that has moved on since the
backup (events later than its latest) unless forced; it takes a backup of the current state
first. Every member is checked as it is extracted into a scratch folder, before anything live
changes; then, journaled (`backup_apply.py`: a restore killed part-way is finished by
`--resume`), the store is put back (whole restores), each skill directory is swapped in
atomically under the skill's lock, and each restored skill gets a `restore` event.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
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
    Verification,
    backup_name,
    backups_dir,
    read_manifest,
    verify_backup,
)
from skillstage.lifecycle.backup_apply import (
    MANIFEST_COPY,
    Change,
    RestoreJournal,
    apply_restore,
    plan_restore,
    read_journal,
    write_journal,
)
from skillstage.lifecycle.backup_create import create_backup
from skillstage.lifecycle.backup_file import file_checksums


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
    resumed: bool = False  # finished a restore that had stopped part-way

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
            "resumed": self.resumed,
        }


def _live_fingerprint(project: Project) -> tuple[dict[str, Any] | None, str | None]:
    """The current store's fingerprint, or None and why it cannot be read."""
    from skillstage.store import Store
    from skillstage.store.export import store_fingerprint

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
    if not dry_run:
        refuse_unfinished(project)
    scratch = None if dry_run else fs.sibling(backups_dir(project) / path.name, "restoring")
    try:
        if scratch is not None:
            scratch.mkdir(parents=True)
        return _restore(project, path, scratch, who, skill, dry_run, force, progress)
    finally:
        # Once the journal is written the extraction is the restore's: it goes when it is done.
        if scratch is not None and not (scratch / MANIFEST_COPY).exists():
            fs.delete_scratch(scratch)


def refuse_unfinished(project: Project) -> None:
    """Refuse to start a restore or a backup while a restore that stopped part-way is open."""
    journal = read_journal(project)
    if journal is not None:
        raise BackupError(
            f"a restore of {journal.backup_id} stopped part-way (started {journal.started_at})",
            hint="`skillstage backup restore --resume` finishes it "
            + (
                f"({journal.pre_restore_backup} holds the state before it)"
                if journal.pre_restore_backup
                else ""
            ),
            code="BACKUP_RESTORE_UNFINISHED",
        )


def resume_restore(project: Project, progress: Progress | None = None) -> RestoreResult:
    """Finish the restore that stopped part-way (`backup_apply.py`)."""
    journal = read_journal(project)
    if journal is None:
        raise UsageError(
            "no restore stopped part-way: there is nothing to resume",
            hint="`skillstage backup restore ID` restores a backup",
        )
    result = RestoreResult(journal.backup_id, False, journal.skill, resumed=True)
    result.changes = journal.changes_of()
    result.pre_restore_backup = journal.pre_restore_backup
    result.events = apply_restore(project, journal, progress)
    return result


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

    # The whole file's checksum first (one read): a damaged backup changes nothing, and takes
    # no backup of the current state either.
    recorded, actual = file_checksums(path)
    if recorded is None or recorded != actual:
        _refuse_damaged(verify_backup(path))
    try:
        manifest = read_manifest(path)
    except BackupCorruptedError:
        _refuse_damaged(verify_backup(path))
        raise
    found = Verification(backup_name(path), path, manifest=manifest)
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
    if skill is None:
        from skillstage.lifecycle.backup_store import refuse_unrestorable

        refuse_unrestorable(backed_store)
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
    plan = plan_restore(project, manifest, skill)
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
        _refuse_damaged(verify_backup(path))
        return result
    assert scratch is not None
    # The backup of the current state is taken while every member is checked as it is
    # extracted (both cores busy): nothing live changes before the whole backup is known to be
    # intact, and the backup taken first is deleted if it is not.
    with ThreadPoolExecutor(1) as pool:
        taking = pool.submit(
            create_backup,
            project,
            name="pre-restore",
            who=who,
            reason=f"before restoring {found.id}",
        )
        try:
            checked = verify_backup(path, extract_to=scratch)
        finally:
            pre, _ = taking.result()
    if not checked.ok:
        pre.path.unlink(missing_ok=True)
        _refuse_damaged(checked)
    result.pre_restore_backup = pre.id
    (scratch / MANIFEST_COPY).write_text(json.dumps(manifest), encoding="utf-8")
    journal = RestoreJournal(
        restore_id=os.urandom(8).hex(),
        backup_id=found.id,
        scratch=str(scratch),
        skill=skill,
        who=who,
        pre_restore_backup=pre.id,
        changes=[c.to_dict() for c in result.changes],
        started_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    )
    write_journal(project, journal)
    fs.fault_point("restore:journaled")
    result.events = apply_restore(project, journal, progress)
    return result


def _refuse_damaged(found: Verification) -> None:
    if not found.ok:
        raise BackupCorruptedError(
            f"the backup {found.id} is damaged; nothing was restored: "
            + "; ".join(found.problems[:5]),
            path=found.path,
            hint="`skillstage backup verify` lists every problem; restore another backup "
            "(`skillstage backup list`)",
        )


def _archived(manifest: dict[str, Any], skill: str) -> bool:
    return any(p.startswith(f"archive/{skill}/") for p in manifest["files"])


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
