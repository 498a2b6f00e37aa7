"""What a crashed promotion leaves behind, found without loading the promoter: open journal
entries and scratch copies. `list`, the watcher and `doctor` look for them on every run; the
promoter (lifecycle/move.py) is imported only when there is something to finish or undo."""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from skillstage.config import Project

if TYPE_CHECKING:
    from skillstage.store import Assignment, Store


def in_project(project: Project, assignment: Assignment) -> Assignment:
    """`assignment` with its path where the skill lives in this project now. The store keeps the
    path it was registered at, which is elsewhere once the project is moved or copied, or when
    another checkout shares the store: acting on it would touch another copy's files."""
    live = str(project.stage_path(assignment.stage, assignment.name))
    return assignment if assignment.path == live else dataclasses.replace(assignment, path=live)


RESTORE_JOURNAL = "restore-journal.json"  # in <state_dir>/backups/: a restore under way


def unfinished_restore(project: Project) -> Path | None:
    """The journal of a restore that stopped part-way (`backup_apply.py`), or None."""
    path = project.state_dir / "backups" / RESTORE_JOURNAL
    return path if path.exists() else None


_SCRATCH = re.compile(r"\.skillstage-[a-z]+-(?P<dir>.+)-[0-9a-f]{12}(?:-old)?")


def scratch_dirs(project: Project, name: str | None = None) -> Iterator[Path]:
    """Scratch copies a crashed process left beside live directories or in the archive (of one
    skill, or of all). Only safe to delete under the skill's lock with its journal closed."""
    roots = {project.stage_root(stage) for stage in project.config.stages}
    patterns = [config.directory_pattern() for config in project.config.stages.values()]
    for root in roots:
        if not root.is_dir():
            continue
        for entry in root.iterdir():
            match = _SCRATCH.fullmatch(entry.name)
            if match is None:
                continue
            owners = {m["name"] for p in patterns if (m := p.match(match["dir"]))} or {match["dir"]}
            if name is None or name in owners:
                yield entry
    archive = project.state_dir / "archive"
    for skill_dir in [archive / name] if name else (archive.iterdir() if archive.is_dir() else []):
        if skill_dir.is_dir():
            yield from (e for e in skill_dir.iterdir() if _SCRATCH.fullmatch(e.name))


def scratch_owner(project: Project, path: Path) -> str:
    if path.parent.parent == project.state_dir / "archive":
        return path.parent.name
    match = _SCRATCH.fullmatch(path.name)
    assert match is not None
    for config in project.config.stages.values():
        if (found := config.directory_pattern().match(match["dir"])) is not None:
            return found["name"]
    return match["dir"]


def to_recover(project: Project, store: Store) -> list[str]:
    """The skills a crashed promotion or rollback left unfinished: an open journal entry, or a
    scratch copy beside a live directory or in the archive."""
    names = [entry.name for entry in store.open_journals()]
    names += [scratch_owner(project, path) for path in scratch_dirs(project)]
    return list(dict.fromkeys(names))
