"""Backups (seed 003 §4): every stage's skill tree, the version archive and the store in one
compressed, checksummed file under `<state_dir>/backups/`; listing and verifying them. Making
one is `backup_create.py`, restoring one `backup_restore.py`, the store's copy `backup_store.py`.

The file is a gzip-compressed tar that `tar xzf` opens. Its first member, `manifest.json`, names
every other member with its sha256 and size, and the store's fingerprint; the gzip header carries
the sha256 of the whole file (computed with that field zeroed), so any changed byte is found
before anything is read from it (`backup_file.py`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
from typing import Any

from isal import igzip, isal_zlib

from skillstage.config import Project
from skillstage.errors import SkillstageError, UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.backup_file import TarReader, file_checksums, keep_freed_memory

FORMAT_VERSION = 1
SUFFIX = ".tar.gz"
MANIFEST = "manifest.json"
# What reading a damaged file raises (a bad deflate block, a CRC that does not match, a tar
# header that makes no sense, a file cut short).
# (isal's stub types its error as an instance of Exception: it is a class)
_ISAL_ERROR: type[Exception] = isal_zlib.error  # type: ignore[assignment]
_DAMAGED = (OSError, EOFError, tarfile.TarError, zlib.error, _ISAL_ERROR)
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


def sha256_file(path: str) -> str:
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


def walk_directory(root: Path, prefix: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """`root` and every file, symlink and directory under it, parents first and in name order:
    (its key, `prefix + relative path`, with "/" after a directory; its path; its entry: type,
    mode, and a file's size, the sha256 to be added by the caller, or a link's target)."""

    def walk(directory: str, relative: str) -> Iterator[tuple[str, str, dict[str, Any]]]:
        with os.scandir(directory) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            key = f"{relative}{entry.name}"
            info = entry.stat(follow_symlinks=False)
            mode = stat.S_IMODE(info.st_mode)
            if stat.S_ISLNK(info.st_mode):
                yield prefix + key, entry.path, {"type": "link", "link": os.readlink(entry.path)}
            elif stat.S_ISDIR(info.st_mode):
                yield prefix + key + "/", entry.path, {"type": "dir", "mode": mode}
                yield from walk(entry.path, key + "/")
            elif stat.S_ISREG(info.st_mode):
                yield prefix + key, entry.path, {"type": "file", "mode": mode, "size": info.st_size}

    yield prefix, os.fspath(root), {"type": "dir", "mode": stat.S_IMODE(os.stat(root).st_mode)}
    yield from walk(os.fspath(root), "")


def scan_directory(root: Path, prefix: str, into: dict[str, dict[str, Any]]) -> None:
    """Every file, symlink and directory under `root`, keyed `prefix + relative path`, with its
    mode and (files) size and sha256."""
    for key, path, entry in walk_directory(root, prefix):
        if entry["type"] == "file":
            entry["sha256"] = sha256_file(path)
        into[key] = entry


def new_backup_id(name: str | None, at: dt.datetime) -> str:
    if name is not None and not _NAME.match(name):
        raise UsageError(
            f"backup name {name!r} is not usable in a file name",
            hint="use letters, digits, '.', '_' and '-' (at most 64), e.g. --name before-upgrade",
        )
    return f"{at:%Y%m%dT%H%M%S}{at.microsecond // 1000:03d}Z" + (f"-{name}" if name else "")


# -- reading them ------------------------------------------------------------------------------


@contextmanager
def _open_tar(path: Path) -> Iterator[TarReader]:
    # ISA-L's gzip reader inflates several times faster than zlib's, and checks the stream's
    # CRC and length at its end (tarfile's own "r|gz" skips a header's extra field wrongly).
    with igzip.open(path, "rb") as unzipped:  # type: ignore[no-untyped-call]
        yield TarReader(unzipped)


def read_manifest(path: Path) -> dict[str, Any]:
    """The manifest of the backup at `path` (its first member)."""
    try:
        with _open_tar(path) as tar:
            first = next(iter(tar), None)
            if first is None or first.name != MANIFEST:
                raise BackupCorruptedError(
                    f"{path.name} does not start with a skillstage manifest", path=path
                )
            manifest: dict[str, Any] = json.loads(b"".join(tar.chunks(first)))
    except (*_DAMAGED, ValueError) as exc:
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


def backup_name(path: Path) -> str:
    """A backup's id, from its file's name."""
    return path.name[: -len(SUFFIX)] if path.name.endswith(SUFFIX) else path.name


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
    keep_freed_memory()
    result = Verification(backup_name(path), path)
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
                isdir = member.kind == "dir"
                name = member.name + ("/" if isdir and member.name + "/" in files else "")
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
                if member.kind != "file":
                    if extract_to is not None:
                        _extract_other(extract_to, name, entry, made)
                    continue
                digest = hashlib.sha256()
                size = 0
                target = None
                if extract_to is not None:
                    target_path = extract_to / name
                    _make_parent(target_path, made)
                    target = open(target_path, "wb")  # noqa: SIM115 (closed below)
                try:
                    for chunk in tar.chunks(member):
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
    except _DAMAGED as exc:
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
