"""The files of one skill directory and its content digest.

The digest is sha256 over the sorted (relative path, executable bit, bytes) of every file, so it
changes when content, a file name or an executable bit changes, and never because of timestamps or
the order a filesystem lists entries in.
"""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

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
    root = os.path.realpath(directory)
    entries: list[tuple[str, str, os.stat_result, bool]] = []  # (relpath, abspath, stat, link)
    too_many = False
    # os.walk does not follow directory symlinks; a symlink to a directory is listed among the
    # directory names, so it is checked and recorded below without being descended into.
    for current, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(current, root)
        rel_prefix = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
        kept = []
        for name in dirnames:
            if name in IGNORED_NAMES:
                continue
            full = os.path.join(current, name)
            if os.path.islink(full):
                filenames.append(name)
                continue
            kept.append(name)
            mode = os.lstat(full).st_mode
            if mode & stat.S_IWOTH:
                scan.world_writable_dirs.append(rel_prefix + name)
        dirnames[:] = kept
        for name in filenames:
            if name in IGNORED_NAMES:
                continue
            if len(entries) >= max_files:
                too_many = True
                break
            full = os.path.join(current, name)
            rel = rel_prefix + name
            try:
                lst = os.lstat(full)
            except OSError as exc:
                scan.problems.append(
                    FileProblem("FILE_UNREADABLE", f"cannot stat {rel}: {exc.strerror}", rel, "")
                )
                continue
            is_link = stat.S_ISLNK(lst.st_mode)
            if is_link:
                target = os.path.realpath(full)
                if not _inside(root, target):
                    scan.problems.append(
                        FileProblem(
                            "SYMLINK_ESCAPE",
                            f"{rel} is a symlink to {os.readlink(full)}, outside the skill "
                            "directory",
                            rel,
                            f"replace the symlink with a copy of the file: "
                            f"cp --remove-destination \"$(readlink -f {rel})\" {rel}",
                        )
                    )
                    continue
                try:
                    st = os.stat(full)
                except OSError:
                    scan.problems.append(
                        FileProblem(
                            "BROKEN_SYMLINK",
                            f"{rel} is a symlink to {os.readlink(full)}, which does not exist",
                            rel,
                            f"remove it (rm {rel}) or point it at a file inside the skill",
                        )
                    )
                    continue
                if stat.S_ISDIR(st.st_mode):
                    # A link to a directory inside the skill: its files are already listed under
                    # their real path; record the link itself by its target.
                    link_text = os.readlink(full)
                    entries.append((rel, link_text, lst, True))
                    continue
            else:
                st = lst
            if not stat.S_ISREG(st.st_mode):
                scan.problems.append(
                    FileProblem(
                        "SPECIAL_FILE",
                        f"{rel} is not a regular file (a FIFO, socket or device)",
                        rel,
                        f"remove it: rm {rel}",
                    )
                )
                continue
            entries.append((rel, full, st, is_link))
        if too_many:
            break

    if too_many:
        scan.problems.append(
            FileProblem(
                "FILE_COUNT_LIMIT",
                f"the skill has more than {max_files:,} files",
                "",
                "remove generated or vendored files, or raise validation.max_files",
            )
        )
    scan.total_bytes = sum(st.st_size for _, _, st, link in entries if not stat.S_ISLNK(st.st_mode))
    if scan.total_bytes > max_total_bytes:
        scan.problems.append(
            FileProblem(
                "SKILL_TOO_LARGE",
                f"the skill's files total {scan.total_bytes:,} bytes; the limit is "
                f"{max_total_bytes:,}",
                "",
                "move large data out of the skill, or raise validation.max_total_bytes",
            )
        )
    entries.sort(key=lambda entry: entry[0])
    # Over a limit, reading would be the very cost the limit exists to refuse.
    read_content = read_content and all(
        problem.code not in ("FILE_COUNT_LIMIT", "SKILL_TOO_LARGE") for problem in scan.problems
    )
    digest = hashlib.sha256()
    for rel, full, st, is_link in entries:
        if is_link and stat.S_ISLNK(st.st_mode):
            skill_file = SkillFile(rel, 0, st.st_mode, is_symlink=True)
            scan.files.append(skill_file)
            _feed(digest, rel, False, b"symlink:" + full.encode())
            continue
        skill_file = SkillFile(rel, st.st_size, st.st_mode, is_symlink=is_link)
        scan.files.append(skill_file)
        if not read_content:
            continue
        try:
            with open(full, "rb") as handle:
                data = handle.read()
        except OSError as exc:
            scan.problems.append(
                FileProblem("FILE_UNREADABLE", f"cannot read {rel}: {exc.strerror}", rel, "")
            )
            continue
        _feed(digest, rel, skill_file.executable, data)
        if inspect is not None:
            inspect(skill_file, data)
    if read_content and not scan.problems:
        scan.digest = digest.hexdigest()
    return scan


def _feed(digest: hashlib._Hash, rel: str, executable: bool, data: bytes) -> None:
    encoded = rel.encode("utf-8", "surrogateescape")
    digest.update(len(encoded).to_bytes(4, "big"))
    digest.update(encoded)
    digest.update(b"\x01" if executable else b"\x00")
    digest.update(len(data).to_bytes(8, "big"))
    digest.update(data)
