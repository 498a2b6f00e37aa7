"""Maturity lines: where a component says which stage it is in (seed 001 Step 5), how the
promotion's maturity hook rewrites them, and why the content digest does not see their values.

A maturity line is one of:

- in a file named `__init__.py`: `__maturity__ = "<label>"` (the value in quotes) and
  `Maturity Stage: <label>` (seed 001's module docstring);
- in a file named `README.md`: the status line `**Status:** <label>` and `Maturity Stage: <label>`.

The digest rule: a maturity line's value is not content. The digest reads each such line with
its value left out, so a copy whose labels the hook rewrote has the digest of the copy it was made
from. That keeps a version one digest in every stage (the conflicts gate), and keeps what the
promoter put live equal to the store's record (`skillstage doctor`, recovery).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Final

INIT_FILE: Final = "__init__.py"
README_FILE: Final = "README.md"
MATURITY_FILES: Final = (INIT_FILE, README_FILE)

_VARIABLE = re.compile(
    rb"""^([ \t]*__maturity__[ \t]*(?::[^=\r\n]*)?=[ \t]*)(["'])([^"'\r\n]*)\2""", re.M
)
_STAGE = re.compile(rb"^([ \t]*Maturity Stage:)([^\r\n]*)", re.M)
_STATUS = re.compile(rb"^([ \t]*(?:[-*][ \t]+)?\*\*Status:\*\*)([^\r\n]*)", re.M)

# Build litter the digest leaves out too (skill/files.py's IGNORED_NAMES).
_SKIPPED_DIRECTORIES = frozenset({"__pycache__", ".git"})


def _kind(relative: str) -> str | None:
    name = relative.rsplit("/", 1)[-1]
    return name if name in MATURITY_FILES else None


def digest_view(relative: str, data: bytes) -> bytes:
    """The bytes of the file at `relative` as the content digest reads them: its maturity lines'
    values left out (every other file, and every other line, as it is)."""
    kind = _kind(relative)
    if kind is None or (
        b"__maturity__" not in data
        and b"Maturity Stage:" not in data
        and b"**Status:**" not in data
    ):
        return data
    data = _STAGE.sub(rb"\1", data)
    if kind == INIT_FILE:
        return _VARIABLE.sub(rb"\1\2\2", data)
    return _STATUS.sub(rb"\1", data)


def rewritten(relative: str, data: bytes, label: str) -> bytes:
    """The file's bytes with its maturity lines saying `label` (only lines already there)."""
    kind = _kind(relative)
    value = label.encode("utf-8")
    data = _STAGE.sub(lambda m: m.group(1) + b" " + value, data)
    if kind == INIT_FILE:
        return _VARIABLE.sub(lambda m: m.group(1) + m.group(2) + value + m.group(2), data)
    return _STATUS.sub(lambda m: m.group(1) + b" " + value, data)


def rewrite_maturity(
    directory: Path, label: str, files: Iterable[str] = MATURITY_FILES
) -> list[str]:
    """Make every maturity line of the files named `files` (`__init__.py`, `README.md`) under
    `directory` say `label`, in place; the relative paths of the files changed, sorted. A file
    keeps its mode; a symlink is not followed (its target is another file's business)."""
    wanted = set(files) & set(MATURITY_FILES)
    changed = []
    for folder, directories, names in os.walk(directory):
        directories[:] = [d for d in directories if d not in _SKIPPED_DIRECTORIES]
        for name in names:
            if name not in wanted:
                continue
            path = Path(folder) / name
            if path.is_symlink() or not path.is_file():
                continue
            relative = path.relative_to(directory).as_posix()
            data = path.read_bytes()
            new = rewritten(relative, data, label)
            if new != data:
                mode = path.stat().st_mode
                scratch = path.with_name(f".{name}.maturity")
                scratch.write_bytes(new)
                os.chmod(scratch, mode)
                os.replace(scratch, path)
                changed.append(relative)
    return sorted(changed)
