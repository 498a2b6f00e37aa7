"""Keep a directory of skills in step with what serves one subject (`skillstage sync`).

For agent hosts that read skill directories instead of calling the loader (Claude Code reads
`.claude/skills/<name>/`): `DIR/<name>` holds, for every skill serving in a stage, a read-only copy
of the version the subject resolves to, so a developer laptop or a CI runner joins a rollout the
way a request does (`RoutingTable.resolve` decides; nothing here routes).

What sync installed is listed in a manifest, `DIR/.skillstage-sync.json` (name → version, digest,
arm), written atomically. A sync compares the manifest with the routing table and touches only the
skills whose digest changed, so a sync of 1,000 skills with one change reads one file, makes one
`lstat` per skill, and copies one directory; it never rescans installed files. A directory in DIR
that sync did not install (no manifest entry) is never replaced or removed: it is reported, and
the skill is not installed over it.

Each copy is built beside its directory, verified against the digest the store names, made
read-only, and swapped in with one `renameat2(RENAME_EXCHANGE)` (two renames where the system has
none), so a reader sees the whole old copy or the whole new one. The copy swapped out waits out
its readers in the project's retired folder, as the promoter's do.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import os
import stat
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from skillstage.config import Project
from skillstage.errors import LockError, SkillReadError, SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.runtime.routing import (
    DISABLED,
    Resolution,
    RoutingTable,
    archive_entry,
    serving_stage,
)

MANIFEST_NAME = ".skillstage-sync.json"
MANIFEST_FORMAT = 1
# How long a sync waits for another one into the same directory (a `--watch` mid-pass).
LOCK_TIMEOUT_SECONDS = 30.0

# Scratch names in DIR that a sync killed half-way leaves behind: a copy being built or one
# swapped out (fs.sibling(path, "syncing")), and a manifest being written (fs.write_atomically).
_SCRATCH_PREFIXES = (".skillstage-syncing-", f".skillstage-writing-{MANIFEST_NAME}-")

READ_ONLY_FILE = 0o444
READ_ONLY_EXECUTABLE = 0o555
READ_ONLY_DIRECTORY = 0o555


class SyncError(SkillstageError):
    """A sync could not change the directory (a permission, a full disk)."""

    code = "SYNC"


@dataclass(frozen=True)
class SyncedSkill:
    """One copy a sync installed: which version, and why this subject gets it (`arm`, and the
    subject's bucket when a rollout decided)."""

    name: str
    version: str
    digest: str
    arm: str
    bucket: int | None = None
    previous: str | None = None  # the version it replaced (None: the directory was not there)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class SyncResult:
    """What one sync changed in `into`."""

    into: Path
    stage: str
    subject: str
    generation: int
    added: list[SyncedSkill] = field(default_factory=list)
    updated: list[SyncedSkill] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    unchanged: int = 0
    skipped: dict[str, str] = field(default_factory=dict)  # name -> why it was not installed
    foreign: list[str] = field(default_factory=list)  # directories in `into` sync did not put

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    @property
    def warnings(self) -> list[str]:
        """What a person should know: each skill not installed and why, and what sync left
        alone."""
        found = [f"{name}: {reason}" for name, reason in sorted(self.skipped.items())]
        if self.foreign:
            found.append(
                f"left alone in {self.into} (not installed by skillstage sync): "
                + ", ".join(self.foreign)
            )
        return found

    def to_dict(self) -> dict[str, Any]:
        return {
            "into": str(self.into),
            "stage": self.stage,
            "subject": self.subject,
            "generation": self.generation,
            "added": [skill.to_dict() for skill in self.added],
            "updated": [skill.to_dict() for skill in self.updated],
            "removed": list(self.removed),
            "unchanged": self.unchanged,
            "skipped": dict(self.skipped),
            "foreign": list(self.foreign),
            "warnings": self.warnings,
        }


# -- the manifest ------------------------------------------------------------------------------


class _Installed(msgspec.Struct, kw_only=True):
    """A manifest entry. `digest` None: claimed before its directory was put in place (a sync
    killed then left it half done), so it is installed again whatever the directory holds."""

    version: str
    digest: str | None
    arm: str


class _Manifest(msgspec.Struct, kw_only=True):
    format: int = MANIFEST_FORMAT
    stage: str | None = None
    subject: str | None = None
    skills: dict[str, _Installed] = msgspec.field(default_factory=dict)


def _read_manifest(into: Path) -> _Manifest:
    path = into / MANIFEST_NAME
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return _Manifest()
    except IsADirectoryError:
        data = b""
    problem = None
    try:
        manifest = msgspec.json.decode(data, type=_Manifest)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        problem = str(exc)
    else:
        if manifest.format != MANIFEST_FORMAT:
            problem = f"format {manifest.format}, this skillstage writes {MANIFEST_FORMAT}"
        elif bad := [name for name in manifest.skills if not _plain_name(name)]:
            problem = f"{bad[0]!r} is not a directory name in {into}"
        else:
            return manifest
    raise SyncError(
        f"not a skillstage sync manifest ({problem})",
        path=path,
        hint="sync writes this file itself: restore it, or delete it and move away the skill "
        "directories it listed (without it, sync leaves them alone and installs nothing over "
        "them)",
    )


def _write_manifest(into: Path, manifest: _Manifest) -> None:
    manifest.skills = dict(sorted(manifest.skills.items()))
    text = msgspec.json.format(msgspec.json.encode(manifest), indent=2).decode("utf-8")
    fs.write_atomically(into / MANIFEST_NAME, text + "\n")


def _plain_name(name: str) -> bool:
    """Whether `name` is one directory entry (never a path out of DIR, never hidden)."""
    return bool(name) and "/" not in name and "\0" not in name and not name.startswith(".")


# -- checking the arguments --------------------------------------------------------------------


def _checked_subject(subject: str | None) -> str:
    if subject is None or not subject.strip():
        # Without one every sync would draw a random bucket, and the directory would flip
        # between versions from one sync to the next.
        raise UsageError(
            "a sync needs a subject: the directory keeps the copies that subject resolves to",
            hint='pass --subject, e.g. your user name or the CI runner\'s id (--subject "$USER")',
        )
    return subject


def _prepared(project: Project, table: RoutingTable, into: Path) -> Path:
    """Check `into` can take the copies (created when missing); refuse one that would mix them
    with the project's own skill directories."""
    if os.path.lexists(into) and not into.is_dir():
        raise UsageError(
            f"{into} is not a directory", hint="--into names the directory to keep the skills in"
        )
    where = into.resolve()
    roots = {project.stage_root(stage).resolve(): stage for stage in project.config.stages}
    managed = {project.state_dir.resolve(): "the project's state directory"} | {
        project.stage_path(stage, name).resolve(): f"{name}'s directory in {stage}"
        for (stage, name) in table.routes
    }
    what = next((f"inside {w}" for path, w in managed.items() if where.is_relative_to(path)), None)
    if where in roots:
        what = f"the {roots[where]} stage folder"
    if what is not None:
        raise UsageError(
            f"{into} is {what}: sync would mix its copies with what skillstage manages",
            hint="sync into a directory of its own, e.g. --into ~/.claude/skills",
        )
    try:
        into.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create {into}: {exc.strerror}",
            hint="create it, or choose a directory you can write",
        ) from None
    if not os.access(into, os.W_OK | os.X_OK):
        raise UsageError(
            f"{into} is not writable by this user",
            hint=f"`chmod u+w {into}`, or choose a directory you can write",
        )
    return into


@contextlib.contextmanager
def _locked(into: Path, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[None]:
    """One sync into a directory at a time (a `--watch` and a sync by hand would otherwise
    clear each other's half-built copies)."""
    handle = os.open(into, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockError(
                        f"another skillstage sync into {into} is running; gave up after "
                        f"{timeout:g} s",
                        hint="wait for it to finish, or stop the `skillstage sync --watch` "
                        "that keeps this directory",
                    ) from None
                time.sleep(0.05)
        yield
    finally:
        os.close(handle)  # releases the lock


# -- one sync ----------------------------------------------------------------------------------


def sync_directory(
    project: Project,
    table: RoutingTable,
    into: Path,
    *,
    subject: str | None,
    context: Mapping[str, Any] | None = None,
    stage: str | None = None,
) -> SyncResult:
    """Make `into/<name>` hold, for every skill serving in `stage` in `table`, a read-only copy
    of the version `subject` resolves to (with `context`, for canary segments).

    Only skills whose digest differs from the manifest's are copied; skills no longer serving
    are removed; a directory sync did not install is left alone (see `SyncResult.skipped` and
    `.foreign`). `UsageError` for a bad directory, stage or subject; `SyncError` when the
    directory cannot be changed (what was done by then is in the manifest)."""
    stage = serving_stage(project, stage)
    subject = _checked_subject(subject)
    into = _prepared(project, table, Path(into))
    with _locked(into):
        try:
            return _Sync(project, table, into, stage, subject, context).run()
        except OSError as exc:
            raise _sync_failed(into, exc) from exc


def _sync_failed(into: Path, exc: OSError) -> SyncError:
    where = exc.filename or into
    if exc.errno == errno.ENOSPC:
        hint = "free some space and sync again: the skills not yet changed keep their old copy"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        hint = f"check that this user can write {into} and what is in it"
    else:
        hint = "sync again once it is fixed: every skill keeps a whole copy meanwhile"
    return SyncError(f"cannot sync into {into}: {exc.strerror or exc}", path=where, hint=hint)


class _Sync:
    def __init__(
        self,
        project: Project,
        table: RoutingTable,
        into: Path,
        stage: str,
        subject: str,
        context: Mapping[str, Any] | None,
    ) -> None:
        self.project = project
        self.table = table
        self.into = into
        self.stage = stage
        self.subject = subject
        self.context = context
        self.result = SyncResult(into, stage, subject, table.generation)

    def run(self) -> SyncResult:
        _clear_leftovers(self.into)
        manifest = _read_manifest(self.into)
        before = msgspec.json.encode(manifest)
        wanted = self._wanted()
        installs: list[tuple[Resolution, _Installed | None]] = []
        for name, resolution in wanted.items():
            entry = manifest.skills.get(name)
            kind = _kind(self.into / name)
            if entry is None and kind != "missing":
                self.result.skipped[name] = (
                    f"{self.into / name} was not installed by skillstage sync, so it is left "
                    f"alone and {resolution.version} is not installed; move it away to get it"
                )
            elif entry is not None and kind == "other":
                self.result.skipped[name] = (
                    f"{self.into / name} is no longer the directory sync installed (a file or a "
                    f"symbolic link is there), so it is left alone; remove it to get "
                    f"{resolution.version} again"
                )
            elif entry is not None and kind == "directory" and entry.digest == resolution.digest:
                self.result.unchanged += 1
                entry.version, entry.arm = resolution.version, resolution.arm
            else:
                installs.append((resolution, entry))
        claims = [r.name for r, entry in installs if entry is None]
        for name in claims:
            # Claimed before the directory appears: a sync killed after putting it in place
            # must still know the directory is its own.
            resolution = wanted[name]
            manifest.skills[name] = _Installed(
                version=resolution.version, digest=None, arm=resolution.arm
            )
        try:
            if claims:
                _write_manifest(self.into, manifest)
            for resolution, entry in installs:
                self._install(manifest, resolution, entry)
            for name in sorted(set(manifest.skills) - set(wanted)):
                self._remove(manifest, name)
            self.result.foreign = self._foreign(manifest, wanted)
        finally:
            manifest.stage, manifest.subject = self.stage, self.subject
            if msgspec.json.encode(manifest) != before:
                _write_manifest(self.into, manifest)
        return self.result

    def _wanted(self) -> dict[str, Resolution]:
        """Each skill serving in the stage, as the subject resolves it."""
        wanted: dict[str, Resolution] = {}
        for name in self.table.names(self.stage):
            if not _plain_name(name):
                self.result.skipped[name] = "its name is not a plain directory name"
                continue
            resolution = self.table.resolve(name, self.stage, self.subject, self.context)
            if resolution.arm != DISABLED:
                wanted[name] = resolution
        return wanted

    def _install(
        self, manifest: _Manifest, resolution: Resolution, entry: _Installed | None
    ) -> None:
        name = resolution.name
        target = self.into / name
        replacing = _kind(target) == "directory"
        incoming = fs.sibling(target, "syncing")
        problems = self._build_copy(resolution, incoming)
        if problems:
            self.result.skipped[name] = (
                f"no intact copy of {resolution.version} ({resolution.digest[:12]}) to install"
                + (", the directory keeps what it had" if replacing else "")
                + ": "
                + "; ".join(problems)
            )
            if entry is None:
                del manifest.skills[name]  # the claim: nothing was put there
            return
        try:
            if replacing:
                old = _swap_in(incoming, target)
                self._retire(old)
            else:
                try:
                    os.rename(incoming, target)
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
                    # Something was put there since it was looked at: it is not ours.
                    fs.delete_scratch(incoming)
                    del manifest.skills[name]
                    self.result.skipped[name] = (
                        f"{target} appeared while sync was installing it; left alone"
                    )
                    return
        except BaseException:
            fs.delete_scratch(incoming)
            raise
        manifest.skills[name] = _Installed(
            version=resolution.version, digest=resolution.digest, arm=resolution.arm
        )
        synced = SyncedSkill(
            name,
            resolution.version,
            resolution.digest,
            resolution.arm,
            resolution.bucket,
            entry.version if entry is not None and replacing else None,
        )
        (self.result.updated if replacing else self.result.added).append(synced)

    def _build_copy(self, resolution: Resolution, incoming: Path) -> list[str]:
        """Copy the resolved version to `incoming`, verified and read-only; what was wrong with
        each place tried when none holds it (then nothing is left at `incoming`)."""
        from skillstage.skill.read import read_skill

        policy = self.project.config.validation
        problems = []
        for place in self._places(resolution):
            if not place.is_dir():
                problems.append(f"{place} is missing")
                continue
            try:
                fs.copy_tree(place, incoming)
                digest = read_skill(incoming, policy).digest
            except (OSError, SkillReadError) as exc:
                fs.delete_scratch(incoming)
                if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise
                problems.append(f"{place}: {exc}")
                continue
            if digest != resolution.digest:
                fs.delete_scratch(incoming)
                problems.append(f"{place} holds digest {digest[:12]}")
                continue
            _make_read_only(incoming)
            return []
        return problems

    def _places(self, resolution: Resolution) -> list[Path]:
        """Where the version may be, best first: its archive entry (immutable), the path the
        table names, then the skill's directory in each stage (a checkout whose archive is not
        there still has the candidate waiting in the stage before). Each is verified."""
        places = [
            archive_entry(self.project, resolution.name, resolution.version, resolution.digest),
            Path(resolution.path),
            *(self.project.stage_path(s, resolution.name) for s in self.project.config.stages),
        ]
        return list(dict.fromkeys(places))

    def _remove(self, manifest: _Manifest, name: str) -> None:
        target = self.into / name
        kind = _kind(target)
        if kind == "directory":
            aside = fs.sibling(target, "syncing")
            os.rename(target, aside)
            self._retire(aside)
            self.result.removed.append(name)
        elif kind == "other":
            self.result.skipped[name] = (
                f"{target} no longer serves in {self.stage}, but it is not the directory sync "
                "installed (a file or a symbolic link is there): left alone"
            )
        del manifest.skills[name]

    def _retire(self, old: Path) -> None:
        """Keep a swapped-out copy for the readers that hold it, out of DIR, as the promoter
        does; deleted at once where that cannot be (another filesystem, no permission)."""
        from skillstage.lifecycle.move import retired_path

        try:
            fs.retire(old, retired_path(self.project))
        except OSError:
            fs.delete_scratch(old)  # (a no-op when it was moved and only the sweep failed)

    def _foreign(self, manifest: _Manifest, wanted: Mapping[str, Resolution]) -> list[str]:
        """The directories (and symbolic links) in DIR that sync did not install and that no
        skill it installs would have gone to (those are in `skipped`)."""
        found = []
        with os.scandir(self.into) as entries:
            for entry in entries:
                if entry.name.startswith(".") or entry.name in manifest.skills:
                    continue
                if entry.name in wanted or entry.name in self.result.skipped:
                    continue
                if entry.is_symlink() or entry.is_dir(follow_symlinks=False):
                    found.append(entry.name)
        return sorted(found)


def _kind(path: Path) -> str:
    """missing, directory (a real one: a symbolic link to one is not), or other."""
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return "missing"
    return "directory" if stat.S_ISDIR(mode) else "other"


def _swap_in(incoming: Path, target: Path) -> Path:
    """Make `incoming` live at `target`; where the old copy is now."""
    if fs.exchange(incoming, target):
        return incoming
    # No RENAME_EXCHANGE: two renames, and the name is missing between them for an instant. A
    # sync killed there leaves the old copy under a scratch name (cleared by the next sync) and
    # the manifest's entry with the old digest, so the next sync installs it again.
    aside = fs.sibling(target, "syncing")
    os.rename(target, aside)
    try:
        os.rename(incoming, target)
    except BaseException:
        os.rename(aside, target)
        raise
    return aside


def _make_read_only(root: Path) -> None:
    """Files 0444 (0555 when executable: the digest keeps that bit), directories 0555; symbolic
    links are left as they are (chmod would follow them)."""
    for directory, _subdirectories, files in os.walk(root, topdown=False):
        for name in files:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if stat.S_ISREG(mode):
                executable = mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
                os.chmod(path, READ_ONLY_EXECUTABLE if executable else READ_ONLY_FILE)
        os.chmod(directory, READ_ONLY_DIRECTORY)


def _clear_leftovers(into: Path) -> None:
    """Delete what a sync killed half-way left in DIR (under the lock: no sync is running)."""
    with os.scandir(into) as entries:
        leftovers = [Path(e.path) for e in entries if e.name.startswith(_SCRATCH_PREFIXES)]
    for path in leftovers:
        fs.delete_scratch(path)


# -- keeping a directory in step ---------------------------------------------------------------


def watch(
    project: Project,
    into: Path,
    *,
    subject: str,
    stop: threading.Event,
    on_change: Callable[[SyncResult], None],
    context: Mapping[str, Any] | None = None,
    stage: str | None = None,
    on_error: Callable[[Exception], None] | None = None,
    interval: float | None = None,
) -> None:
    """Sync `into` now, then again whenever what serves changes, until `stop` is set.

    The store's routing generation is read every `interval` seconds (default
    `runtime.refresh_ms`); when it moved, the table is rebuilt and the directory synced.
    `on_change` gets the first sync's result and every later one that changed something (or
    whose warnings changed). The first sync's errors are raised; a later one's are passed to
    `on_error` (once until they change) and the sync is tried again at the next interval, the
    directory keeping what it had."""
    from skillstage.runtime.routing import build_table
    from skillstage.store import Store
    from skillstage.store.rollouts import generation

    stage = serving_stage(project, stage)
    subject = _checked_subject(subject)
    wait = interval if interval is not None else project.config.runtime.refresh_ms / 1000

    def sync_now(store: Store) -> SyncResult:
        with store.reading() as tx:
            table = build_table(project, tx, built_at=dt.datetime.now(dt.UTC))
        return sync_directory(project, table, into, subject=subject, context=context, stage=stage)

    with Store.open(project.database_url) as store:
        result = sync_now(store)
        on_change(result)
        applied, warnings = result.generation, result.warnings
        failing: str | None = None  # the last error reported; None when the last sync worked
        while not stop.wait(wait):
            try:
                if failing is None:
                    with store.reading() as tx:
                        if generation(tx) == applied:
                            continue
                result = sync_now(store)
            except Exception as exc:  # the store went away, the disk filled: try again later
                if on_error is not None and str(exc) != failing:
                    on_error(exc)
                failing = str(exc)
                continue
            failing = None
            if result.changed or result.warnings != warnings:
                on_change(result)
            applied, warnings = result.generation, result.warnings
