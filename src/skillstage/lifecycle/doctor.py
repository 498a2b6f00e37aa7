"""`skillstage doctor`: find, and with `repair` mend, drift between the store and the disk.

What can drift, and what a repair does (each under the skill's lock):

- `unfinished_restore`: a backup restore stopped part-way → finished from its journal (first:
  until then the rest of the disk is half the backup's).
- `open_journal`: a promotion or rollback stopped half done → `recover` (forward or back).
- `orphan_scratch`: a scratch copy a stopped process left → deleted (`recover`).
- `missing_live_dir`: the store puts a version where there is none → restored from the archive.
- `edited_live_dir`: the live copy is not the assigned version (edited in place, or another copy
  put there) → the edited copy is archived as "edited-in-place", the assigned one swapped back in.
- `unknown_dir`: a skill directory the store has no record of → registered, as `list` does.
- `archive_missing`: a live version with no archive copy → archived from the live copy.
- `archive_writable`: an archive entry that is not read-only → reported only.
- `archive_digest_mismatch`: an archive entry whose content is not its name → reported only.

With `repair`, copies swapped out of a stage and kept for their readers (`.skillstage/retired/`)
past their grace period are deleted too (`swept`): housekeeping the next promotion or rollback
would do, not drift.

A repair is planned from a fresh look at the disk and the store: first journals and scratch copies
(recovery can itself settle other findings, e.g. a promotion killed between its two renames leaves
the live path missing until it is rolled back), then the rest from a second look, and a last look
decides what remains. Repairs that change what is live (restores) append a `repair` event.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

from skillstage.config import Project
from skillstage.errors import LockError, SkillReadError, SkillstageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.archive import archive_path, record_archive_reason
from skillstage.lifecycle.leftovers import (
    in_project,
    scratch_dirs,
    scratch_owner,
    unfinished_restore,
)
from skillstage.lifecycle.locks import DEFAULT_LOCK_TIMEOUT, skill_lock
from skillstage.lifecycle.move import _swap_in, recover, retired_path
from skillstage.skill.files import scan_skill_files
from skillstage.skill.read import read_skill, stage_directories
from skillstage.store import Assignment, Store

UNFINISHED_RESTORE: Final = "unfinished_restore"
OPEN_JOURNAL: Final = "open_journal"
ORPHAN_SCRATCH: Final = "orphan_scratch"
MISSING_LIVE_DIR: Final = "missing_live_dir"
EDITED_LIVE_DIR: Final = "edited_live_dir"
UNKNOWN_DIR: Final = "unknown_dir"
ARCHIVE_MISSING: Final = "archive_missing"
ARCHIVE_WRITABLE: Final = "archive_writable"
ARCHIVE_DIGEST_MISMATCH: Final = "archive_digest_mismatch"

# The reason an edited live copy is kept under in the archive (its `.json` sidecar).
EDITED_IN_PLACE: Final = "edited-in-place"


@dataclass
class Finding:
    """One piece of drift: what (`kind`), whose (`skill`, `stage`), where (`path`), the facts
    (`detail`), and — after a repair run — whether it is gone and what was done or is left to do
    by hand (`action`)."""

    kind: str
    skill: str | None
    stage: str | None
    path: str
    detail: str
    repaired: bool = False
    action: str | None = None

    @property
    def key(self) -> tuple[str, str | None, str | None, str]:
        return (self.kind, self.skill, self.stage, self.path)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class DoctorReport:
    """What `doctor` found and, with `repair`, mended. `ok`: nothing remains."""

    findings: list[Finding]
    repair: bool
    swept: list[str] = field(default_factory=list)  # retired copies deleted

    @property
    def remaining(self) -> list[Finding]:
        return [f for f in self.findings if not f.repaired]

    @property
    def ok(self) -> bool:
        return not self.remaining

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "repair": self.repair,
            "found": len(self.findings),
            "repaired": sum(1 for f in self.findings if f.repaired),
            "remaining": len(self.remaining),
            "findings": [f.to_dict() for f in self.findings],
            "swept": self.swept,
        }


class _CannotRepair(SkillstageError):
    """A repair that would need something that is not there (an archive copy, …)."""


# -- looking ------------------------------------------------------------------------------------


def _digest(project: Project, path: Path) -> str | None:
    policy = project.config.validation
    return scan_skill_files(
        path, max_files=policy.max_files, max_total_bytes=policy.max_total_bytes
    ).digest


def _short(digest: str | None) -> str:
    return digest[:12] if digest else "unreadable"


def _lock_busy(project: Project, store: Store, name: str) -> bool:
    """Whether another process holds the skill's lock now (a promotion may be running)."""
    try:
        with skill_lock(project, store, name, timeout=0):
            return False
    except LockError:
        return True


def _busy_note(project: Project, store: Store, name: str) -> str:
    if _lock_busy(project, store, name):
        return " (its lock is held: a promotion may be running now; look again when it is done)"
    return ""


def _stage_of(project: Project, path: Path) -> str | None:
    for stage in project.config.stages:
        if project.stage_root(stage) == path.parent:
            return stage
    return None


def _registered_as(project: Project, store: Store, name: str, path: Path) -> str | None:
    """The registered version whose content this directory holds, if any. One digest means one
    SKILL.md, so the version its frontmatter names is the only candidate."""
    try:
        skill = read_skill(path, project.config.validation)
    except SkillReadError:
        return None
    record = store.find_version(name, skill.version)
    return record.version if record is not None and record.digest == skill.digest else None


def _restore_findings(project: Project) -> Iterator[Finding]:
    path = unfinished_restore(project)
    if path is not None:
        from skillstage.lifecycle.backup_apply import RestoreJournal, read_journal

        journal: RestoreJournal | None = None
        try:
            journal = read_journal(project)
            what = f"of {journal.backup_id} (started {journal.started_at})" if journal else ""
        except SkillstageError as exc:
            what = f"({exc.message})"
        yield Finding(
            UNFINISHED_RESTORE,
            journal.skill if journal else None,
            None,
            str(path),
            f"a backup restore {what} stopped part-way",
        )


def _finish_restore(project: Project) -> str:
    from skillstage.lifecycle.backup_restore import resume_restore

    try:
        result = resume_restore(project)
    except (SkillstageError, OSError) as exc:
        return _failed(exc)
    return f"finished the restore of {result.backup_id} ({len(result.changes)} change(s))"


def _journal_findings(project: Project, store: Store) -> Iterator[Finding]:
    for entry in store.open_journals():
        details = entry.details
        version = (
            details.get("version") or details.get("good_version") or details.get("bad_version")
        )
        yield Finding(
            OPEN_JOURNAL,
            entry.name,
            details.get("to_stage") or details.get("stage"),
            str(details.get("target", "")),
            f"{entry.operation} of {entry.name} {version} (journal #{entry.id}) left open since "
            f"{entry.created_at:%Y-%m-%d %H:%M:%S} UTC{_busy_note(project, store, entry.name)}",
        )


def _scratch_findings(project: Project, store: Store) -> Iterator[Finding]:
    for path in scratch_dirs(project):
        owner = scratch_owner(project, path)
        yield Finding(
            ORPHAN_SCRATCH,
            owner,
            _stage_of(project, path),
            str(path),
            f"a scratch copy left by a process that stopped{_busy_note(project, store, owner)}",
        )


def _live_findings(project: Project, store: Store) -> Iterator[Finding]:
    assigned = {(a.name, a.stage): in_project(project, a) for a in store.current_assignments()}
    for a in assigned.values():
        target = Path(a.path)
        entry = archive_path(project, a.name, a.version, a.digest)
        if not target.is_dir():
            where = "in the archive" if entry.is_dir() else "not in the archive"
            yield Finding(
                MISSING_LIVE_DIR,
                a.name,
                a.stage,
                a.path,
                f"{a.name} {a.version} is in {a.stage} by the store, but {a.path} does not "
                f"exist; {a.version} is {where}",
            )
            continue
        live = _digest(project, target)
        if live != a.digest:
            registered = _registered_as(project, store, a.name, target)
            matches = (
                f"it holds registered version {registered}"
                if registered
                else "it matches no registered version"
            )
            yield Finding(
                EDITED_LIVE_DIR,
                a.name,
                a.stage,
                a.path,
                f"the live copy's digest is {_short(live)}, the assigned {a.name} {a.version} "
                f"has {_short(a.digest)}: {matches} (edited in place?)",
            )
        elif not entry.is_dir():
            yield Finding(
                ARCHIVE_MISSING,
                a.name,
                a.stage,
                str(entry),
                f"{a.name} {a.version} is live in {a.stage} but has no archive copy, so it "
                "could not be rolled back to",
            )
    for directory in stage_directories(project):
        if (directory.name, directory.stage) in assigned:
            continue
        digest = _digest(project, directory.path)
        registered = _registered_as(project, store, directory.name, directory.path)
        holds = f"registered version {registered}" if registered else "no registered version"
        yield Finding(
            UNKNOWN_DIR,
            directory.name,
            directory.stage,
            str(directory.path),
            f"the store has no version of {directory.name} in {directory.stage}; the directory "
            f"(digest {_short(digest)}) holds {holds}",
        )


def _writable_paths(root: Path) -> list[str]:
    """Paths under `root` (itself included) that someone could write to; symlinks have no mode
    of their own."""
    found = ["."] if os.lstat(root).st_mode & 0o222 else []
    for current, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = os.path.join(current, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o222:
                found.append(os.path.relpath(path, root))
    return found


def _archive_findings(project: Project) -> Iterator[Finding]:
    archive = project.state_dir / "archive"
    if not archive.is_dir():
        return
    for skill_dir in sorted(archive.iterdir()):
        if not skill_dir.is_dir() or fs.is_scratch(skill_dir.name):
            continue
        for entry in sorted(skill_dir.iterdir()):
            if fs.is_scratch(entry.name) or not entry.is_dir():
                continue  # scratch copies are reported apart; `.json` files are reasons
            writable = _writable_paths(entry)
            if writable:
                shown = ", ".join(writable[:3]) + (" …" if len(writable) > 3 else "")
                yield Finding(
                    ARCHIVE_WRITABLE,
                    skill_dir.name,
                    None,
                    str(entry),
                    f"archive entries are immutable, but {len(writable)} path(s) in it are "
                    f"writable: {shown}",
                )
            _, _, named = entry.name.rpartition("-")
            digest = _digest(project, entry)
            if digest is None or digest[:12] != named:
                yield Finding(
                    ARCHIVE_DIGEST_MISMATCH,
                    skill_dir.name,
                    None,
                    str(entry),
                    f"the entry is named for digest {named}, its content has {_short(digest)}",
                )


def diagnose(project: Project, store: Store) -> list[Finding]:
    """Every piece of drift between the store and the disk, changing nothing."""
    return [
        *_restore_findings(project),
        *_journal_findings(project, store),
        *_scratch_findings(project, store),
        *_live_findings(project, store),
        *_archive_findings(project),
    ]


# -- repairing ----------------------------------------------------------------------------------


def _current(project: Project, store: Store, finding: Finding) -> Assignment | None:
    assert finding.skill is not None and finding.stage is not None
    found = store.current_assignments(stage=finding.stage, name=finding.skill)
    return in_project(project, found[0]) if found else None


def _checked_archive(project: Project, a: Assignment) -> Path:
    """The archive copy of the assigned version, verified; `_CannotRepair` if there is none."""
    entry = archive_path(project, a.name, a.version, a.digest)
    if not entry.is_dir():
        raise _CannotRepair(
            f"{a.name} {a.version} is not in the archive ({entry})",
            hint=f"put {a.name} {a.version} back at {a.path} by hand (e.g. `git checkout -- "
            f"{a.path}`), or roll back to an archived version with `skillstage rollback "
            f"{a.name} --stage {a.stage} --reason ...`",
        )
    if _digest(project, entry) != a.digest:
        raise _CannotRepair(
            f"the archive copy {entry} does not hold {a.name} {a.version} (its content changed)",
            hint=f"restore {a.path} by hand; `skillstage doctor` reports the damaged entry",
        )
    return entry


def _restore(project: Project, a: Assignment) -> Path:
    """Put the archived assigned version live at its path atomically. Returns the scratch path
    that held the copy; after an exchange it holds what was live before (deleted by the caller
    once kept)."""
    entry = _checked_archive(project, a)
    target = Path(a.path)
    incoming = fs.sibling(target, "restoring")
    target.parent.mkdir(parents=True, exist_ok=True)
    fs.copy_tree(entry, incoming)
    # A reader sees the edited copy or the restored one, never a mix and never nothing (the
    # promoter's own swap; without RENAME_EXCHANGE, two renames and a leftover scratch copy
    # that the next doctor or promotion removes).
    _swap_in(incoming, target)
    return incoming


def _restore_and_record(
    project: Project,
    store: Store,
    a: Assignment,
    actor: str,
    reason: str,
    details: dict[str, Any],
) -> None:
    """Put the assigned version back live from the archive and record the repair."""
    fs.delete_scratch(_restore(project, a))
    store.append_event(
        "repair",
        name=a.name,
        version=a.version,
        digest=a.digest,
        to_stage=a.stage,
        actor=actor,
        reason=reason,
        path=a.path,
        details=details,
    )


def _restore_missing(project: Project, store: Store, finding: Finding, actor: str) -> str:
    a = _current(project, store, finding)
    if a is None or Path(a.path).is_dir():
        return "already resolved"
    _restore_and_record(
        project,
        store,
        a,
        actor,
        "doctor: the live directory was missing; restored from the archive",
        {"finding": MISSING_LIVE_DIR},
    )
    return f"restored {a.name} {a.version} from the archive"


def _restore_edited(project: Project, store: Store, finding: Finding, actor: str) -> str:
    a = _current(project, store, finding)
    target = Path(a.path) if a is not None else None
    if a is None or target is None or not target.is_dir():
        return "already resolved"
    edited = _digest(project, target)
    if edited == a.digest:
        return "already resolved"
    if edited is None:
        raise _CannotRepair(
            f"the live copy at {target} cannot be read whole, so it cannot be kept in the archive",
            hint=f"look at {target}, move what you need elsewhere, then run "
            "`skillstage doctor --repair` again",
        )
    _checked_archive(project, a)  # before anything moves
    # The edited copy is kept first, immutable, under the version it is (or "unregistered"), with
    # the reason beside it: the repair loses nothing.
    label = _registered_as(project, store, a.name, target) or "unregistered"
    kept = archive_path(project, a.name, label, edited)
    fs.archive_copy(target, kept)
    record_archive_reason(
        kept,
        EDITED_IN_PLACE,
        stage=a.stage,
        path=a.path,
        replaced_by_version=a.version,
        replaced_by_digest=a.digest,
    )
    _restore_and_record(
        project,
        store,
        a,
        actor,
        "doctor: the live copy was edited in place; the assigned version was restored",
        {"finding": EDITED_LIVE_DIR, "edited_digest": edited, "kept": str(kept)},
    )
    return f"restored {a.name} {a.version}; the edited copy is kept in the archive at {kept}"


def _archive_live(project: Project, store: Store, finding: Finding, actor: str) -> str:
    a = _current(project, store, finding)
    if a is None:
        return "already resolved"
    entry = archive_path(project, a.name, a.version, a.digest)
    if entry.is_dir():
        return "already resolved"
    if _digest(project, Path(a.path)) != a.digest:
        raise _CannotRepair(f"the live copy at {a.path} is not {a.name} {a.version} any more")
    fs.archive_copy(Path(a.path), entry)
    return f"archived the live copy of {a.name} {a.version} at {entry}"


_Repair = Callable[[Project, Store, Finding, str], str]
_REPAIRS: dict[str, _Repair] = {
    MISSING_LIVE_DIR: _restore_missing,
    EDITED_LIVE_DIR: _restore_edited,
    ARCHIVE_MISSING: _archive_live,
}

_BY_HAND = {
    # (shown after "to do:" or "not repaired:")
    ARCHIVE_WRITABLE: "by hand: check that nobody changed the entry (its digest is checked "
    "too), then make it read-only: chmod -R a-w {path}",
    ARCHIVE_DIGEST_MISMATCH: "by hand: the entry's content changed after it was archived; do "
    "not roll back to it (rollback refuses it) — restore the entry from a backup, or move it "
    "out of the archive",
}


def _failed(exc: Exception) -> str:
    if isinstance(exc, SkillstageError):
        return f"repair failed: {exc.message}" + (f"; {exc.hint}" if exc.hint else "")
    return f"repair failed: {type(exc).__name__}: {exc}"


def _recover_skills(
    project: Project, store: Store, findings: Sequence[Finding], lock_timeout: float
) -> None:
    """Open journals and scratch copies: `recover`, once per skill, under its lock."""
    names = dict.fromkeys(f.skill for f in findings if f.skill is not None)
    for name in names:
        mine = [f for f in findings if f.skill == name]
        try:
            with skill_lock(project, store, name, timeout=lock_timeout):
                done = recover(project, store, name)
        except (SkillstageError, OSError) as exc:
            action = _failed(exc)
        else:
            action = "; ".join(done) if done else "nothing left to do (finished by another process)"
        for finding in mine:
            finding.action = action


def _register_unknown(
    project: Project, store: Store, findings: Sequence[Finding], lock_timeout: float
) -> None:
    """Unknown directories: registered by `list` (recovery first, then first sight; it takes
    each skill's lock while it registers it)."""
    from skillstage import api

    try:
        listing = api.list_skills(project)
    except (SkillstageError, OSError) as exc:
        for finding in findings:
            finding.action = _failed(exc)
        return
    unreadable = {str(path): error for path, error in listing.unreadable}
    for finding in findings:
        finding.action = _registration_outcome(project, store, finding, unreadable)


def _registration_outcome(
    project: Project, store: Store, finding: Finding, unreadable: dict[str, str]
) -> str:
    """What `list` made of an unknown directory, in words."""
    if finding.path in unreadable:
        return f"not registered: {unreadable[finding.path]}"
    path = Path(finding.path)
    current = _current(project, store, finding)
    if current is not None and current.digest == _digest(project, path):
        return "registered (as `list` does)"
    try:
        skill = read_skill(path, project.config.validation)
    except SkillReadError as exc:
        return f"not registered: {exc.message}"
    known = store.find_version(skill.name, skill.version)
    if known is not None and known.digest != skill.digest:
        return (
            f"not registered: {skill.name} {skill.version} is already registered with other "
            f"content (digest {known.short_digest}, this copy {skill.short_digest}); bump the "
            "version in its SKILL.md, or replace it with the registered copy"
        )
    return "not registered (it changed while `list` ran?); run `skillstage doctor` again"


def _repair(
    project: Project,
    store: Store,
    findings: Sequence[Finding],
    *,
    actor: str,
    lock_timeout: float,
) -> None:
    unknown = [f for f in findings if f.kind == UNKNOWN_DIR]
    # A skill whose unfinished move recovery could not settle (its folder read-only, the disk
    # full) is left alone: its live copy is that move half done, not an edit to undo.
    unsettled = {f.skill for f in findings if f.kind == OPEN_JOURNAL}
    for finding in findings:
        repair = _REPAIRS.get(finding.kind)
        if repair is None:
            continue
        assert finding.skill is not None
        if finding.skill in unsettled:
            finding.action = (
                f"left alone: {finding.skill} has an unfinished move to settle first "
                "(fix what stopped it, then run doctor --repair again)"
            )
            continue
        try:
            with skill_lock(project, store, finding.skill, timeout=lock_timeout):
                finding.action = repair(project, store, finding, actor)
        except (SkillstageError, OSError) as exc:
            finding.action = _failed(exc)
    if unknown:
        _register_unknown(project, store, unknown, lock_timeout)


def doctor(
    project: Project,
    store: Store,
    *,
    repair: bool = False,
    actor: str = "skillstage doctor",
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> DoctorReport:
    """Report drift between the store and the disk; with `repair`, mend what can be mended, each
    repair under the skill's lock, and report what remains (`DoctorReport.ok`)."""
    found = diagnose(project, store)
    if not repair:
        for finding in found:
            finding.action = _BY_HAND.get(finding.kind, "").format(path=finding.path) or None
        return DoctorReport(found, repair=False)
    for finding in found:
        if finding.kind == UNFINISHED_RESTORE:  # before all else: the rest is half restored
            finding.action = _finish_restore(project)
    settled = [f for f in found if f.kind in (OPEN_JOURNAL, ORPHAN_SCRATCH)]
    _recover_skills(project, store, settled, lock_timeout)
    # Recovery moves directories and stage pointers: plan the other repairs from a fresh look.
    fresh = diagnose(project, store)
    _repair(project, store, fresh, actor=actor, lock_timeout=lock_timeout)
    left = {f.key: f for f in diagnose(project, store)}
    report: dict[tuple[str, str | None, str | None, str], Finding] = {}
    for finding in [*found, *fresh, *left.values()]:
        known = report.setdefault(finding.key, finding)
        if known is not finding and finding.action and not known.action:
            known.action = finding.action
    for finding in report.values():
        failed = (finding.action or "").startswith("repair failed")
        finding.repaired = finding.key not in left and not failed
        if finding.repaired and not finding.action:
            finding.action = "resolved by the repairs above"
        if not finding.repaired and finding.kind in _BY_HAND and not finding.action:
            finding.action = _BY_HAND[finding.kind].format(path=finding.path)
    swept = sorted(fs.sweep_retired(retired_path(project)))
    return DoctorReport(list(report.values()), repair=True, swept=[str(p) for p in swept])


def run_doctor(
    project: Project,
    *,
    repair: bool = False,
    actor: str = "skillstage doctor",
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
) -> DoctorReport:
    """`doctor` on the project's store (what `skillstage doctor` runs)."""
    with Store.open(project.database_url) as store:
        return doctor(project, store, repair=repair, actor=actor, lock_timeout=lock_timeout)
