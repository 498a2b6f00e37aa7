"""The files of one skill directory and its content digest.

The digest is sha256 over the sorted (relative path, executable bit, bytes) of every file, so it
changes when content, a file name or an executable bit changes, and never because of timestamps or
the order a filesystem lists entries in. The one exception: the values of maturity lines
(`__maturity__ = "…"`, `Maturity Stage: …`, a README's `**Status:** …`) are left out, so the
promotion's maturity hook does not change a version's digest (skill/maturity.py).
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from skillstage.skill.maturity import digest_view

# Build litter, not part of a skill: Python writes __pycache__ when test.sh runs a script, macOS
# writes .DS_Store. Counting them would make a skill's digest drift between stages.
IGNORED_NAMES = frozenset({"__pycache__", ".DS_Store"})


@dataclass(frozen=True, slots=True)
class SkillFile:
    """One file of a skill: its path relative to the skill directory, size and mode."""

    path: str  # POSIX, relative to the skill directory
    size: int
    mode: int
    is_symlink: bool = False

    @property
    def executable(self) -> bool:
        return bool(self.mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH))

    @property
    def world_writable(self) -> bool:
        return bool(self.mode & stat.S_IWOTH)


@dataclass(frozen=True, slots=True)
class FileProblem:
    """Something about the file tree that makes the skill unsafe or unreadable."""

    code: str
    message: str
    path: str  # relative to the skill directory; "" for the directory itself
    hint: str
    line: int | None = None


@dataclass
class FileScan:
    """What scanning a skill directory found. `digest` is None when the files could not be read."""

    files: list[SkillFile] = field(default_factory=list)
    problems: list[FileProblem] = field(default_factory=list)
    world_writable_dirs: list[str] = field(default_factory=list)
    digest: str | None = None
    total_bytes: int = 0


# Called with each file and its bytes, so content checks (secret scanning) read each file once.
ContentInspector = Callable[[SkillFile, bytes], None]


def _inside(root: str, target: str) -> bool:
    return target == root or target.startswith(root + os.sep)


def _read_all(fd: int, size: int) -> bytes:
    chunks = []
    remaining = size
    while remaining > 0:
        chunk = os.read(fd, remaining)
        if not chunk:
            break
        chunks.append(chunk)
        remaining -= len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


# Read without following a symlink, and without blocking should a FIFO have replaced the file
# since it was listed.
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)


def _list_tree(root: str, max_files: int, scan: FileScan) -> tuple[list[tuple[str, str]], bool]:
    """(relative path, absolute path) of every entry that is not a directory, unsorted.

    `os.scandir` gives each entry's type without a system call, so listing costs one call per
    directory; symlinks to directories are listed as entries and not descended into.
    """
    entries: list[tuple[str, str]] = []
    pending = [(root, "")]
    while pending:
        current, prefix = pending.pop()
        try:
            iterator = os.scandir(current)
        except OSError as exc:
            scan.problems.append(
                FileProblem(
                    "FILE_UNREADABLE",
                    f"cannot list {prefix or '.'}: {exc.strerror}",
                    prefix,
                    "check the directory's permissions",
                )
            )
            continue
        with iterator:
            for entry in iterator:
                if entry.name in IGNORED_NAMES:
                    continue
                relative = prefix + entry.name
                if entry.is_dir(follow_symlinks=False):
                    if entry.stat(follow_symlinks=False).st_mode & stat.S_IWOTH:
                        scan.world_writable_dirs.append(relative)
                    pending.append((entry.path, relative + "/"))
                    continue
                if len(entries) >= max_files:
                    return entries, True
                entries.append((relative, entry.path))
    return entries, False


def scan_skill_files(
    directory: Path,
    *,
    max_files: int,
    max_total_bytes: int,
    inspect: ContentInspector | None = None,
    read_content: bool = True,
) -> FileScan:
    """List, bound, read and digest the files of a skill directory.

    A symlink whose target lies outside the directory, a broken symlink, a special file (FIFO,
    socket, device) or a tree over the limits is reported as a problem; the digest is then None.
    """
    scan = FileScan()
    root = str(directory)
    entries, too_many = _list_tree(root, max_files, scan)
    if too_many:
        scan.problems.append(
            FileProblem(
                "FILE_COUNT_LIMIT",
                f"the skill has more than {max_files:,} files",
                "",
                "remove generated or vendored files, or raise validation.max_files",
            )
        )
        read_content = False  # reading would be the very cost the limit exists to refuse
    entries.sort()
    digest = hashlib.sha256()
    for relative, full in entries:
        follow = False
        try:
            lst = os.lstat(full) if not read_content else None
            fd = os.open(full, _OPEN_FLAGS) if read_content else -1
        except OSError as exc:
            if exc.errno != errno.ELOOP:  # ELOOP: it is a symlink (O_NOFOLLOW)
                scan.problems.append(
                    FileProblem(
                        "FILE_UNREADABLE",
                        f"cannot read {relative}: {exc.strerror}",
                        relative,
                        "check the file's permissions",
                    )
                )
                continue
            follow = True
            lst = None
            fd = -1
        if follow or (lst is not None and stat.S_ISLNK(lst.st_mode)):
            target = os.path.realpath(full)
            problem = _symlink_problem(os.path.realpath(root), full, relative, target)
            if problem is not None:
                scan.problems.append(problem)
                continue
            if os.path.isdir(target):
                # A link to a directory inside the skill: its files are listed under their real
                # path already; record the link itself by its target.
                link_text = os.readlink(full)
                mode = os.lstat(full).st_mode
                scan.files.append(SkillFile(relative, 0, mode, is_symlink=True))
                _feed(digest, relative, False, b"symlink:" + link_text.encode())
                continue
            if not read_content:
                st = os.stat(full)
                scan.files.append(SkillFile(relative, st.st_size, st.st_mode, is_symlink=True))
                continue
            fd = os.open(target, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            is_link = True
        else:
            is_link = False
        if fd < 0:
            assert lst is not None
            if not stat.S_ISREG(lst.st_mode):
                scan.problems.append(_special_file(relative))
                continue
            scan.files.append(SkillFile(relative, lst.st_size, lst.st_mode))
            scan.total_bytes += lst.st_size
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                scan.problems.append(_special_file(relative))
                continue
            skill_file = SkillFile(relative, st.st_size, st.st_mode, is_symlink=is_link)
            scan.files.append(skill_file)
            scan.total_bytes += st.st_size
            if scan.total_bytes > max_total_bytes:
                read_content = False
                continue
            data = _read_all(fd, st.st_size)
        finally:
            os.close(fd)
        # (a maturity line's value is not content: skill/maturity.py)
        _feed(digest, relative, skill_file.executable, digest_view(relative, data))
        if inspect is not None:
            inspect(skill_file, data)
    if scan.total_bytes > max_total_bytes:
        scan.problems.append(
            FileProblem(
                "SKILL_TOO_LARGE",
                f"the skill's files total more than {max_total_bytes:,} bytes (the limit)",
                "",
                "move large data out of the skill, or raise validation.max_total_bytes",
            )
        )
    if read_content and not scan.problems:
        scan.digest = digest.hexdigest()
    return scan


def _special_file(relative: str) -> FileProblem:
    return FileProblem(
        "SPECIAL_FILE",
        f"{relative} is not a regular file (a FIFO, socket or device)",
        relative,
        f"remove it: rm {relative}",
    )


def _symlink_problem(root: str, full: str, relative: str, target: str) -> FileProblem | None:
    if not _inside(root, target):
        return FileProblem(
            "SYMLINK_ESCAPE",
            f"{relative} is a symlink to {os.readlink(full)}, outside the skill directory",
            relative,
            f"replace the symlink with a copy of the file: cp --remove-destination "
            f'"$(readlink -f {relative})" {relative}',
        )
    if not os.path.exists(target):
        return FileProblem(
            "BROKEN_SYMLINK",
            f"{relative} is a symlink to {os.readlink(full)}, which does not exist",
            relative,
            f"remove it (rm {relative}) or point it at a file inside the skill",
        )
    return None


def _feed(digest: hashlib._Hash, rel: str, executable: bool, data: bytes) -> None:
    # Length-prefixed fields, so that no two different trees feed the same bytes.
    encoded = rel.encode("utf-8", "surrogateescape")
    digest.update(_HEADER.pack(len(encoded)) + encoded + _TRAILER.pack(executable, len(data)))
    digest.update(data)


_HEADER = struct.Struct(">I")
_TRAILER = struct.Struct(">?Q")
