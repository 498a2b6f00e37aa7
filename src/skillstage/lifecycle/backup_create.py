"""Making a backup (`backup.py` describes the file): every stage's skill tree, the version
archive and the store, in one compressed, checksummed file under `<state_dir>/backups/`.

The work is laid out so both cores are busy and every byte is read once:

- a second thread takes the store's consistent copy into the scratch folder (SQLite's online
  backup API, `pg_dump` or the logical export: `backup_store.py`) and its sha256;
- meanwhile this thread walks the skill trees and the archive, hashing each file as it streams
  it into the trees' compressed segment (a scratch file): the checksum in the manifest is of
  exactly the bytes in the backup;
- then the file is written: the manifest (first, so `backup list` reads nothing else), the
  trees' segment joined as it is, the store compressed in blocks on every core.

The file is written under a scratch name and renamed: never half a backup.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import mmap
import os
import struct
import tarfile
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillstageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.backup import (
    FORMAT_VERSION,
    MANIFEST,
    SUFFIX,
    BackupError,
    BackupInfo,
    Progress,
    apply_retention,
    backups_dir,
    new_backup_id,
    tree_fingerprint,
    walk_directory,
)
from skillstage.lifecycle.backup_file import ChecksummedGzip, DeflateStream, keep_freed_memory

TREE_LEVEL = 6  # the skill trees: small next to the store, and they compress well
_READ = 1 << 20


@dataclass
class StoreCopy:
    """The store's consistent copy in the scratch folder, as the manifest describes it."""

    description: dict[str, Any]
    path: Path | None
    sha256: str = ""
    size: int = 0


def _copy_store(project: Project, scratch: Path, hold: ExitStack) -> StoreCopy:
    from skillstage.lifecycle.backup_store import store_snapshot

    description, path = store_snapshot(project, scratch, hold)
    copy = StoreCopy(description, path)
    if path is not None:
        copy.size = path.stat().st_size
        with open(path, "rb") as reading:
            if copy.size:
                with mmap.mmap(reading.fileno(), 0, access=mmap.ACCESS_READ) as mapped:
                    copy.sha256 = hashlib.sha256(mapped).hexdigest()
            else:
                copy.sha256 = hashlib.sha256().hexdigest()
    return copy


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
    from skillstage.lifecycle.leftovers import unfinished_restore
    from skillstage.store import SCHEMA_REVISION

    keep_freed_memory()
    if unfinished_restore(project) is not None:
        raise BackupError(
            "a restore stopped part-way: a backup now would hold half of it",
            hint="`skillstage backup restore --resume` finishes it; then back up",
            code="BACKUP_RESTORE_UNFINISHED",
        )
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
    hold = ExitStack()  # what keeps the store's snapshot consistent while it is written
    try:
        if progress:
            progress("store", 0, 1)
        with ThreadPoolExecutor(1) as pool:
            copying = pool.submit(_copy_store, project, scratch, hold)
            files: dict[str, dict[str, Any]] = {}
            trees = scratch / "trees.deflate"
            with open(trees, "wb") as out:
                segment = DeflateStream(out, TREE_LEVEL)
                skills = _write_trees(project, segment, files, progress)
                segment.sync()
            store = copying.result()
        if store.path is not None:
            files[store.description["member"]] = {
                "type": "file",
                "mode": 0o600,
                "size": store.size,
                "sha256": store.sha256,
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
            "store": store.description,
            "skills": skills,
            "files": files,
        }
        with open(writing, "wb") as out:
            _write_file(project, out, manifest, (trees, segment), store)
            out.flush()
            os.fsync(out.fileno())
        hold.close()  # (the live store, when it was read in place, is let go)
        os.rename(writing, final)
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise BackupError(
            f"the backup could not be written: {exc.strerror or exc}{where}; no backup was kept",
            path=directory,
            hint="free some space or fix the permissions of the state directory, then run it again",
        ) from exc
    finally:
        hold.close()
        writing.unlink(missing_ok=True)
        fs.delete_scratch(scratch)
    removed = apply_retention(project, keep) if keep is not None else []
    return BackupInfo(backup_id, final, final.stat().st_size, manifest), removed


def _write_trees(
    project: Project,
    segment: DeflateStream,
    files: dict[str, dict[str, Any]],
    progress: Progress | None,
) -> dict[str, dict[str, Any]]:
    """Every stage's skill directories, then the archive, into `segment` as tar members (their
    entries into `files`); returns the manifest's skills (each stage's path and fingerprint, and
    the version the store has there)."""
    from skillstage.skill.read import stage_directories

    sources = list(stage_directories(project))
    assignments = _assignments(project)
    skills: dict[str, dict[str, Any]] = {}
    for done, source in enumerate(sources, 1):
        prefix = f"stages/{source.stage}/{source.name}/"
        found: dict[str, dict[str, Any]] = {}
        _write_directory(segment, source.path, prefix, found)
        files.update(found)
        skills.setdefault(source.name, {})[source.stage] = {
            "path": os.path.relpath(source.path, project.root),
            "fingerprint": tree_fingerprint(found, prefix),
            **assignments.get((source.name, source.stage), {}),
        }
        if progress:
            progress("skills", done, len(sources))
    archive = project.state_dir / "archive"
    if archive.is_dir():
        _write_directory(segment, archive, "archive/", files)
    return skills


def _assignments(project: Project) -> dict[tuple[str, str], dict[str, Any]]:
    """What the store says is in each stage (nothing when the store cannot be opened: the
    backup then keeps it as it is, for whoever investigates)."""
    from skillstage.store import Store

    try:
        with Store.open(project.database_url) as store:
            return {
                (a.name, a.stage): {"version": a.version, "digest": a.digest}
                for a in store.current_assignments()
            }
    except SkillstageError:
        return {}


_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12x")
_TYPES = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE, "link": tarfile.SYMTYPE}
_ZERO = b"0000000\0"


def tar_header(name: str, entry: dict[str, Any]) -> bytes:
    """The tar header of a manifest entry, as `tarfile` writes it (PAX where a field needs it).

    The plain case (an ASCII name and link of at most 100 bytes, which is every member of a
    usual backup) is packed here: tarfile's general path costs ~60 µs a member, most of the
    time a backup spends on a tree of small files."""
    member = name.rstrip("/") or name
    kind = entry["type"]
    size = entry.get("size", 0) if kind == "file" else 0
    mode = 0o777 if kind == "link" else entry["mode"]
    link = entry.get("link", "") if kind == "link" else ""
    encoded = (member + "/" if kind == "dir" else member).encode("ascii", "replace")
    target = link.encode("ascii", "replace")
    if len(encoded) > 100 or len(target) > 100 or not (member + link).isascii() or size >= 8**11:
        return _tarfile_header(member, kind, size, mode, link)
    fields = [
        encoded,
        b"%07o\0" % mode,
        _ZERO,
        _ZERO,
        b"%011o\0" % size,
        b"00000000000\0",
        b" " * 8,
        _TYPES[kind],
        target,
        b"ustar\x0000",
        b"",  # user and group names,
        b"",
        b"",  # device numbers (tarfile leaves them empty but for devices),
        b"",
        b"",  # and the name's prefix
    ]
    header = bytearray(_USTAR.pack(*fields))
    header[148:155] = b"%06o\0" % sum(header)
    return bytes(header)


def _tarfile_header(member: str, kind: str, size: int, mode: int, link: str) -> bytes:
    info = tarfile.TarInfo(member)
    info.mtime, info.type, info.mode, info.size, info.linkname = (
        0,
        _TYPES[kind],
        mode,
        size,
        link,
    )
    return info.tobuf(tarfile.PAX_FORMAT, tarfile.ENCODING, "surrogateescape")


def _padding(size: int) -> bytes:
    return b"\0" * (-size % tarfile.BLOCKSIZE)


def _write_directory(
    segment: DeflateStream, root: Path, prefix: str, into: dict[str, dict[str, Any]]
) -> None:
    """`root` and everything under it as tar members, each file hashed as it is written."""
    for key, path, entry in walk_directory(root, prefix):
        into[key] = entry
        segment.write(tar_header(key, entry))
        if entry["type"] != "file":
            continue
        digest = hashlib.sha256()
        size = 0
        with open(path, "rb") as reading:
            while chunk := reading.read(_READ):
                digest.update(chunk)
                size += len(chunk)
                segment.write(chunk)
        if size != entry["size"]:  # (the backup is not kept: its member would be wrong)
            raise BackupError(
                f"{path} changed while it was being backed up",
                hint="run the backup again when no promotion is running",
            )
        entry["sha256"] = digest.hexdigest()
        segment.write(_padding(size))


def _write_file(
    project: Project,
    out: Any,
    manifest: dict[str, Any],
    trees: tuple[Path, DeflateStream],
    store: StoreCopy,
) -> None:
    gz = ChecksummedGzip(out, TREE_LEVEL)
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    gz.write(tar_header(MANIFEST, {"type": "file", "size": len(body), "mode": 0o644}))
    gz.write(body)
    gz.write(_padding(len(body)))
    path, segment = trees
    gz.join(path, segment.crc, segment.size)
    if store.path is not None:
        member = store.description["member"]
        gz.write(tar_header(member, manifest["files"][member]))
        with open(store.path, "rb") as reading:
            if os.fstat(reading.fileno()).st_size != store.size:
                raise BackupError(
                    f"{store.path} changed size while it was being backed up",
                    hint="run the backup again",
                )
            if store.size:
                with (
                    mmap.mmap(reading.fileno(), store.size, access=mmap.ACCESS_READ) as mapped,
                    memoryview(mapped) as view,
                ):
                    gz.write_blocks(view, project.config.backups.store_compression_level)
        gz.write(_padding(store.size))
    # The end of the archive as tarfile writes it: two zero blocks, padded to a whole record.
    end = 2 * tarfile.BLOCKSIZE
    gz.write(b"\0" * (end + (-(gz.position + end) % tarfile.RECORDSIZE)))
    gz.close()
