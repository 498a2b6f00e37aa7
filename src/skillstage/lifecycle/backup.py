"""Backups (seed 003 §4): every stage's skill tree, the version archive and the store in one
compressed, checksummed file under `<state_dir>/backups/`, and listing and verifying them.
Restoring one is `restore.py`.

The file is a gzip-compressed tar that `tar xzf` opens. Its first member, `manifest.json`, names
every other member with its sha256 and size, and the store's fingerprint; the gzip header carries
the sha256 of the whole file (computed with that field zeroed), so any changed byte is found
before anything is read from it. The store is taken whole and consistent: SQLite through its
online backup API (`sqlite3.Connection.backup`), PostgreSQL as a logical export of the store's
own tables in one repeatable-read transaction (no client tool needed, and restored in one
transaction). The file is written under a scratch name and renamed: never half a backup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import re
import stat
import tarfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from skillstage.config import Project
from skillstage.errors import SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.backup_file import ChecksummedGzip, file_checksums
from skillstage.lifecycle.backup_store import fingerprint_of

FORMAT_VERSION = 1
SUFFIX = ".tar.gz"
MANIFEST = "manifest.json"
STORE_SQLITE = "store/state.db"
STORE_EXPORT = "store/export.jsonl"
STORE_UNREADABLE = "store/unreadable.db"  # a pre-restore backup of a store that cannot be opened
_BLOCK = 4 << 20  # the store is compressed in blocks of this size, two at a time
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")

Progress = Callable[[str, int, int], None]  # (what, done, total)


class BackupError(SkillstageError):
    """A backup cannot be made, read or restored."""

    code = "BACKUP"


class BackupCorruptedError(BackupError):
    """A backup's checksums do not match: it changed or was damaged after it was written."""

    code = "BACKUP_CORRUPTED"


def backups_dir(project: Project) -> Path:
    return project.state_dir / "backups"


# -- what a backup holds -----------------------------------------------------------------------


@dataclass
class BackupInfo:
    """A backup on disk, as its manifest describes it."""

    id: str
    path: Path
    size: int
    manifest: dict[str, Any]

    @property
    def created_at(self) -> str:
        return str(self.manifest.get("created_at", ""))

    def to_dict(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "id": self.id,
            "path": str(self.path),
            "size": self.size,
            "name": m.get("name"),
            "created_at": m.get("created_at"),
            "who": m.get("who"),
            "reason": m.get("reason"),
            "skillstage_version": m.get("skillstage_version"),
            "schema_revision": m.get("schema_revision"),
            "store": {k: v for k, v in (m.get("store") or {}).items() if k != "tables"},
            "skills": len(m.get("skills") or {}),
            "files": len(m.get("files") or {}),
        }


def _sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as reading:
        while chunk := reading.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tree_fingerprint(files: dict[str, dict[str, Any]], prefix: str) -> str:
    """One digest over the files under `prefix` (their paths below it, modes and sha256s)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in files if p.startswith(prefix)):
        entry = files[path]
        digest.update(
            f"{path[len(prefix) :]}\0{entry.get('mode', 0) & 0o111}\0"
            f"{entry.get('sha256') or entry.get('link')}\n".encode()
        )
    return digest.hexdigest()


def scan_directory(root: Path, prefix: str, into: dict[str, dict[str, Any]]) -> None:
    """Every file, symlink and directory under `root`, keyed `prefix + relative path`, with its
    mode and (files) size and sha256."""

    def walk(directory: str, relative: str) -> None:
        with os.scandir(directory) as entries:
            for entry in sorted(entries, key=lambda e: e.name):
                key = f"{relative}{entry.name}"
                info = entry.stat(follow_symlinks=False)
                mode = stat.S_IMODE(info.st_mode)
                if entry.is_symlink():
                    into[prefix + key] = {"type": "link", "link": os.readlink(entry.path)}
                elif entry.is_dir(follow_symlinks=False):
                    into[prefix + key + "/"] = {"type": "dir", "mode": mode}
                    walk(entry.path, key + "/")
                elif entry.is_file(follow_symlinks=False):
                    into[prefix + key] = {
                        "type": "file",
                        "mode": mode,
                        "size": info.st_size,
                        "sha256": _sha256_file(entry.path),
                    }

    into[prefix] = {"type": "dir", "mode": stat.S_IMODE(os.stat(root).st_mode)}
    walk(os.fspath(root), "")


# -- making one --------------------------------------------------------------------------------


def _skill_sources(project: Project) -> list[tuple[str, str, Path]]:
    from skillstage.skill.read import stage_directories

    return [(entry.stage, entry.name, entry.path) for entry in stage_directories(project)]


def _store_snapshot(project: Project, scratch: Path) -> tuple[dict[str, Any], Path | None]:
    """The store, consistent, in a scratch file: (its description for the manifest, the file)."""
    from skillstage.store import SCHEMA_REVISION, Store
    from skillstage.store.db import parse_url

    url = parse_url(project.database_url)
    try:
        store = Store.open(project.database_url)
    except SkillstageError as exc:
        if url.backend == "sqlite" and url.database and os.path.exists(url.database):
            # Kept as it is, for whoever investigates; restores never read it.
            fs_path = scratch / "unreadable.db"
            with open(url.database, "rb") as src, open(fs_path, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
            return {"kind": "unreadable", "error": exc.message, "member": STORE_UNREADABLE}, fs_path
        return {"kind": "unreadable", "error": exc.message}, None
    with store:
        target = scratch / "store"
        if store.dialect == "sqlite":
            from skillstage.store.copy import copy_sqlite

            assert url.database is not None
            copy_sqlite(url.database, target)
            # The fingerprint of what was copied: read from the copy.
            with Store.open(f"sqlite:///{target}") as copied:
                fingerprint = store_fingerprint(copied)
            kind, member = "sqlite-backup-api", STORE_SQLITE
        else:
            from skillstage.lifecycle.backup_store import export_store

            fingerprint = export_store(store, target)
            kind, member = "logical-export", STORE_EXPORT
    description = {
        "kind": kind,
        "dialect": url.backend,
        "database": url.display,
        "member": member,
        "schema_revision": SCHEMA_REVISION,
        **fingerprint,
    }
    return description, target


def store_fingerprint(store: Any) -> dict[str, Any]:
    """What says how far a store has got: its latest event and every table's row count."""
    with store.reading() as tx:
        return fingerprint_of(tx)


def new_backup_id(name: str | None, at: dt.datetime) -> str:
    if name is not None and not _NAME.match(name):
        raise UsageError(
            f"backup name {name!r} is not usable in a file name",
            hint="use letters, digits, '.', '_' and '-' (at most 64), e.g. --name before-upgrade",
        )
    return f"{at:%Y%m%dT%H%M%S}{at.microsecond // 1000:03d}Z" + (f"-{name}" if name else "")


def create_backup(
    project: Project,
    *,
    name: str | None = None,
    who: str,
    reason: str | None = None,
    keep: int | None = None,
    progress: Progress | None = None,
) -> tuple[BackupInfo, list[str]]:
    """Write a backup of the whole project; returns it and the ids retention removed."""
    from skillstage import __version__
    from skillstage.store import SCHEMA_REVISION

    at = dt.datetime.now(dt.UTC)
    backup_id = new_backup_id(name, at)
    directory = backups_dir(project)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / f"{backup_id}{SUFFIX}"
    if final.exists():
        raise BackupError(f"a backup named {backup_id} already exists", path=final)
    scratch = fs.sibling(final, "backing-up")
    scratch.mkdir()
    writing = scratch.with_name(scratch.name + ".part")
    try:
        if progress:
            progress("store", 0, 1)
        store, store_file = _store_snapshot(project, scratch)
        files: dict[str, dict[str, Any]] = {}
        skills: dict[str, dict[str, Any]] = {}
        sources = _skill_sources(project)
        assignments = _assignments(project) if store["kind"] != "unreadable" else {}
        for done, (stage, skill, path) in enumerate(sources, 1):
            prefix = f"stages/{stage}/{skill}/"
            found: dict[str, dict[str, Any]] = {}
            scan_directory(path, prefix, found)
            files.update(found)
            skills.setdefault(skill, {})[stage] = {
                "path": os.path.relpath(path, project.root),
                "fingerprint": tree_fingerprint(found, prefix),
                **assignments.get((skill, stage), {}),
            }
            if progress:
                progress("skills", done, len(sources))
        archive = project.state_dir / "archive"
        if archive.is_dir():
            scan_directory(archive, "archive/", files)
        if store_file is not None:
            files[store["member"]] = {
                "type": "file",
                "mode": 0o600,
                "size": store_file.stat().st_size,
                "sha256": _sha256_file(os.fspath(store_file)),
            }
        manifest = {
            "format_version": FORMAT_VERSION,
            "id": backup_id,
            "name": name,
            "skillstage_version": __version__,
            "schema_revision": SCHEMA_REVISION,
            "created_at": at.isoformat(),
            "who": who,
            "reason": reason,
            "project": str(project.root),
            "stages": {s: project.config.stages[s].path for s in project.config.stages},
            "store": store,
            "skills": skills,
            "files": files,
        }
        with open(writing, "wb") as out:
            _write_tar(project, out, manifest, store_file, progress)
            out.flush()
            os.fsync(out.fileno())
        os.rename(writing, final)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise BackupError(
            f"the backup could not be written: {exc.strerror or exc}{where}; no backup was kept",
            path=directory,
            hint="free some space or fix the permissions of the state directory, then run it again",
        ) from exc
    finally:
        writing.unlink(missing_ok=True)
        fs.delete_scratch(scratch)
    removed = apply_retention(project, keep) if keep is not None else []
    return BackupInfo(backup_id, final, final.stat().st_size, manifest), removed


def _assignments(project: Project) -> dict[tuple[str, str], dict[str, Any]]:
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        return {
            (a.name, a.stage): {"version": a.version, "digest": a.digest}
            for a in store.current_assignments()
        }


def _member(name: str, entry: dict[str, Any]) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name.rstrip("/") or name)
    info.mtime = 0
    if entry["type"] == "dir":
        info.type, info.mode = tarfile.DIRTYPE, entry["mode"]
    elif entry["type"] == "link":
        info.type, info.linkname, info.mode = tarfile.SYMTYPE, entry["link"], 0o777
    else:
        info.size, info.mode = entry["size"], entry["mode"]
    return info


def _write_tar(
    project: Project,
    out: IO[bytes],
    manifest: dict[str, Any],
    store_file: Path | None,
    progress: Progress | None,
) -> None:
    gz = ChecksummedGzip(out, 6)
    # Not a stream ("w|"): tarfile then writes each block at once, so the store's bytes, written
    # past it straight into the gzip stream, land in their place.
    tar = tarfile.TarFile(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT)  # type: ignore[arg-type]
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    info = tarfile.TarInfo(MANIFEST)
    info.size, info.mode = len(body), 0o644
    tar.addfile(info, io.BytesIO(body))
    files = manifest["files"]
    store_member = manifest["store"].get("member")
    for number, (name, entry) in enumerate(files.items(), 1):
        if name == store_member:
            continue
        source = _source_of(project, manifest, name)
        info = _member(name, entry)
        if entry["type"] != "file":
            tar.addfile(info)
            continue
        with open(source, "rb") as reading:
            data = reading.read()
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            raise BackupError(
                f"{source} changed while it was being backed up",
                hint="run the backup again when no promotion is running",
            )
        tar.addfile(info, io.BytesIO(data))
        if progress and number % 500 == 0:
            progress("files", number, len(files))
    if store_file is not None and store_member:
        info = _member(store_member, files[store_member])
        # The header through tarfile, the bulk (the store: most of the bytes) in parallel blocks.
        tar.addfile(info)
        with open(store_file, "rb") as reading:
            gz.write_blocks(
                iter(lambda: reading.read(_BLOCK), b""),
                project.config.backups.store_compression_level,
            )
        padding = -info.size % tarfile.BLOCKSIZE
        gz.write(b"\0" * padding)
        tar.offset += info.size + padding
    tar.close()
    gz.close()


def _source_of(project: Project, manifest: dict[str, Any], member: str) -> str:
    """Where a member of the manifest was read from."""
    if member.startswith("archive/"):
        return os.fspath(project.state_dir / member)
    _, stage, skill, rest = member.split("/", 3)
    base = project.root / str(manifest["skills"][skill][stage]["path"])
    return os.fspath(base / rest) if rest else os.fspath(base)


# -- reading them ------------------------------------------------------------------------------


@contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    # gzip's reader, not tarfile's "r|gz": tarfile's skips a header's extra field wrongly, and
    # gzip's checks the stream's CRC and length at its end.
    import gzip

    with gzip.open(path, "rb") as unzipped, tarfile.open(fileobj=unzipped, mode="r|") as tar:
        yield tar


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the backup at `path` (its first member)."""
    try:
        with _open_tar(path) as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST:
                raise BackupCorruptedError(
                    f"{path.name} does not start with a skillstage manifest", path=path
                )
            reading = tar.extractfile(first)
            assert reading is not None
            manifest: dict[str, Any] = json.loads(reading.read())
    except (OSError, EOFError, tarfile.TarError, zlib.error, ValueError) as exc:
        raise BackupCorruptedError(
            f"the backup {path.name} cannot be read: {exc}",
            path=path,
            hint="it is damaged: use another backup (`skillstage backup list`)",
        ) from exc
    return manifest


def list_backups(project: Project) -> list[BackupInfo]:
    """The backups under `<state_dir>/backups/`, newest first (a damaged one with an empty
    manifest and its error)."""
    directory = backups_dir(project)
    if not directory.is_dir():
        return []
    found = []
    for path in directory.iterdir():
        if not path.name.endswith(SUFFIX) or fs.is_scratch(path.name):
            continue
        try:
            manifest = read_manifest(path)
        except BackupCorruptedError as exc:
            manifest = {"error": exc.message}
        found.append(BackupInfo(path.name[: -len(SUFFIX)], path, path.stat().st_size, manifest))
    return sorted(found, key=lambda b: b.id, reverse=True)


def find_backup(project: Project, backup_id: str) -> Path:
    """The file of backup `backup_id`: its id, the start of one, its name (the newest backup
    of that name), its file name, or a path to it."""
    given = Path(backup_id)
    if given.suffixes and given.is_file():
        return given
    directory = backups_dir(project)
    path = directory / (backup_id if backup_id.endswith(SUFFIX) else backup_id + SUFFIX)
    if path.is_file():
        return path
    found = list_backups(project)  # newest first
    named = [b.path for b in found if b.id.endswith(f"-{backup_id}")]
    if named:
        return named[0]  # by its --name: the newest of that name
    matches = [b.path for b in found if b.id.startswith(backup_id)]
    if len(matches) == 1:
        return matches[0]
    raise UsageError(
        f"no backup {backup_id!r} in {directory}"
        + (f" ({len(matches)} start with it)" if matches else ""),
        hint="`skillstage backup list` shows their ids",
    )


@dataclass
class Verification:
    """What `verify` found: every problem, each naming the member and how it differs."""

    id: str
    path: Path
    checked: int = 0
    problems: list[str] = field(default_factory=list)
    manifest: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "ok": self.ok,
            "checked": self.checked,
            "problems": self.problems,
        }


def verify_backup(path: Path, *, extract_to: Path | None = None) -> Verification:
    """Check the file's checksum, then every member's sha256 and size against the manifest
    (and, with `extract_to`, write each member there as it is checked)."""
    result = Verification(
        path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name, path
    )
    recorded, actual = file_checksums(path)
    if recorded is None:
        result.problems.append("not a skillstage backup: its header has no checksum")
        return result
    if recorded != actual:
        result.problems.append(
            f"the file's checksum does not match (recorded {recorded[:12]}, now {actual[:12]}): "
            "it changed or was damaged after it was written"
        )
    try:
        manifest = read_manifest(path)
    except BackupCorruptedError as exc:
        result.problems.append(exc.message)
        return result
    result.manifest = manifest
    files: dict[str, dict[str, Any]] = manifest.get("files", {})
    seen: set[str] = set()
    made: set[Path] = set()
    try:
        with _open_tar(path) as tar:
            for member in tar:
                if member.name == MANIFEST:
                    continue
                name = member.name + ("/" if member.isdir() and member.name + "/" in files else "")
                entry = files.get(name)
                if entry is None:
                    result.problems.append(f"{member.name}: not in the manifest")
                    continue
                seen.add(name)
                result.checked += 1
                if name.startswith("/") or ".." in name.split("/"):
                    # A crafted backup must not write outside the folder it is extracted to.
                    result.problems.append(f"{member.name}: a path outside the backup")
                    continue
                if not member.isfile():
                    if extract_to is not None:
                        _extract_other(extract_to, name, entry, made)
                    continue
                reading = tar.extractfile(member)
                assert reading is not None
                digest = hashlib.sha256()
                size = 0
                target = None
                if extract_to is not None:
                    target_path = extract_to / name
                    _make_parent(target_path, made)
                    target = open(target_path, "wb")  # noqa: SIM115 (closed below)
                try:
                    while chunk := reading.read(1 << 20):
                        digest.update(chunk)
                        size += len(chunk)
                        if target is not None:
                            target.write(chunk)
                finally:
                    if target is not None:
                        target.close()
                        os.chmod(extract_to / name, entry.get("mode", 0o644))  # type: ignore[operator]
                if digest.hexdigest() != entry["sha256"] or size != entry["size"]:
                    result.problems.append(
                        f"{name}: sha256 {digest.hexdigest()[:12]} ({size} bytes), the manifest "
                        f"says {entry['sha256'][:12]} ({entry['size']} bytes)"
                    )
    except (OSError, EOFError, tarfile.TarError, zlib.error) as exc:
        result.problems.append(f"the archive is damaged after {result.checked} members: {exc}")
        return result
    for name in sorted(set(files) - seen):
        result.problems.append(f"{name}: in the manifest but missing from the archive")
    if extract_to is not None:
        # Directory modes last, deepest first: the archive's copies are read-only.
        for name in sorted((n for n in files if n.endswith("/")), reverse=True):
            if (extract_to / name).is_dir():
                os.chmod(extract_to / name, files[name]["mode"])
    return result


def _make_parent(target: Path, made: set[Path]) -> None:
    # Members come parents first: a directory made for one need not be looked at again (on
    # some filesystems each mkdir that finds the directory there costs a millisecond).
    if target.parent not in made:
        target.parent.mkdir(parents=True, exist_ok=True)
        made.add(target.parent)


def _extract_other(root: Path, name: str, entry: dict[str, Any], made: set[Path]) -> None:
    target = root / name.rstrip("/")
    _make_parent(target, made)
    if entry["type"] == "dir":
        target.mkdir(exist_ok=True)
        made.add(target)
    else:
        os.symlink(entry["link"], target)


def apply_retention(
    project: Project, keep: int, *, protect: frozenset[str] = frozenset()
) -> list[str]:
    """Delete all but the newest `keep` backups (never one in `protect`: the backup a restore
    just used); the ids deleted."""
    found = sorted(
        (p for p in backups_dir(project).iterdir() if p.name.endswith(SUFFIX)),
        key=lambda p: p.name,
        reverse=True,
    )
    removed = []
    for path in found[keep:]:
        if path.name[: -len(SUFFIX)] in protect:
            continue
        path.unlink(missing_ok=True)
        removed.append(path.name[: -len(SUFFIX)])
    return removed
