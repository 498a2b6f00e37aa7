"""Read one skill directory into a `SkillVersion`, and find skill directories in a tree."""

from __future__ import annotations

import os
import unicodedata
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from skillstage.config import Project, ValidationPolicy
from skillstage.errors import SkillReadError
from skillstage.skill.files import SkillFile, scan_skill_files
from skillstage.skill.model import (
    Frontmatter,
    FrontmatterTypeError,
    SkillVersion,
    is_semantic_version,
    suggest_version,
)

SKILL_MD_NAMES = ("SKILL.md", "skill.md")
# Directories that never hold skills and can be huge.
_NOT_SKILL_TREES = frozenset(
    {".git", ".hg", ".svn", "node_modules", "__pycache__", ".venv", "venv", ".tox", ".skillstage"}
)


def read_skill(directory: Path, policy: ValidationPolicy | None = None) -> SkillVersion:
    """Read a skill: its SKILL.md, its files and its digest.

    Raises `SkillReadError` when the skill cannot be identified (no SKILL.md, unreadable
    frontmatter, no name, no semantic version) or its files are unsafe (symlink escape, over the
    limits). Validation is a separate, fuller step (`skillstage validate`).
    """
    policy = policy or ValidationPolicy()
    captured: dict[str, bytes] = {}

    def keep_skill_md(skill_file: SkillFile, data: bytes) -> None:
        if skill_file.path in SKILL_MD_NAMES:
            captured[skill_file.path] = data

    if not directory.is_dir():
        raise SkillReadError("not a skill directory", path=directory, code="SKILL_DIR_MISSING")
    scan = scan_skill_files(
        directory,
        max_files=policy.max_files,
        max_total_bytes=policy.max_total_bytes,
        inspect=keep_skill_md,
    )
    if scan.problems:
        problem = scan.problems[0]
        raise SkillReadError(
            problem.message,
            path=directory / problem.path if problem.path else directory,
            hint=problem.hint,
            code=problem.code,
        )
    skill_md = next((name for name in SKILL_MD_NAMES if name in captured), None)
    if skill_md is None or scan.digest is None:
        raise SkillReadError(
            "Missing required file: SKILL.md",
            path=directory,
            hint="create SKILL.md with name, version and description frontmatter",
            code="SKILL_MD_MISSING",
        )
    # The YAML reader is imported by what reads a SKILL.md: finding skill directories does not.
    from skillstage.skill.frontmatter import parse_skill_md

    document = parse_skill_md(captured[skill_md], directory / skill_md)
    try:
        meta = Frontmatter.from_mapping(document.frontmatter)
    except FrontmatterTypeError as exc:
        raise SkillReadError(
            f"frontmatter fields of the wrong type: {', '.join(exc.fields)}",
            path=directory / skill_md,
            hint=f"run `skillstage validate {directory}` for details",
            code="FRONTMATTER_WRONG_TYPE",
        ) from None
    if not meta.name:
        raise SkillReadError(
            "Missing required field in frontmatter: name",
            path=directory / skill_md,
            hint=f"add 'name: {directory.name}'",
            code="NAME_MISSING",
        )
    name = unicodedata.normalize("NFKC", meta.name.strip())
    if name in (".", "..") or any(c in name for c in "/\\\0"):
        # The name becomes part of paths (archive, evals, the inbox file): never a path itself.
        raise SkillReadError(
            f"name {meta.name!r} is a path, not a skill name",
            path=directory / skill_md,
            hint=f"write 'name: {directory.name}' (a-z, 0-9 and hyphens)",
            code="NAME_INVALID_CHARS",
        )
    version = meta.effective_version
    if version is None or not is_semantic_version(version):
        raise SkillReadError(
            "Missing required field in frontmatter: version"
            if version is None
            else f"version {version!r} is not semantic versioning MAJOR.MINOR.PATCH",
            path=directory / skill_md,
            hint="add 'version: 1.0.0'"
            if version is None
            else f"write e.g. 'version: {suggest_version(version)}'",
            code="VERSION_MISSING" if version is None else "VERSION_NOT_SEMVER",
        )
    return SkillVersion(
        name=name,
        version=version,
        digest=scan.digest,
        path=directory,
        frontmatter=meta,
        body=document.body,
        files=tuple(scan.files),
    )


def read_skill_md(directory: Path) -> bytes | None:
    """The bytes of a directory's SKILL.md (bounded), or None if it has none."""
    from skillstage.skill.frontmatter import MAX_SKILL_MD_BYTES

    for name in SKILL_MD_NAMES:
        try:
            with (directory / name).open("rb") as handle:
                return handle.read(MAX_SKILL_MD_BYTES + 1)
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            continue
    return None


def iter_skill_dirs(root: Path) -> Iterator[Path]:
    """Skill directories (holding a SKILL.md) at or under `root`, in a stable order, as they are
    found; skill directories are not searched further, nor are VCS, virtualenv and node_modules
    directories."""
    if any((root / name).is_file() for name in SKILL_MD_NAMES):
        yield root
        return
    for current, dirnames, filenames in os.walk(root):
        if any(name in filenames for name in SKILL_MD_NAMES) and current != str(root):
            yield Path(current)
            dirnames[:] = []
            continue
        dirnames[:] = sorted(name for name in dirnames if name not in _NOT_SKILL_TREES)


def find_skill_dirs(root: Path) -> list[Path]:
    """`iter_skill_dirs` as a sorted list."""
    return sorted(iter_skill_dirs(root))


@dataclass(frozen=True)
class StagedDirectory:
    """A directory found where a stage's path template puts skills."""

    stage: str
    name: str  # the skill name the location implies
    path: Path


def _is_directory(entry: os.DirEntry[str]) -> bool:
    """Whether a stage folder's entry is a directory (through a symlink too); a symlink loop or
    an entry that cannot be looked at is not one: it holds no skill to list."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def stage_directories(project: Project, stage: str | None = None) -> Iterator[StagedDirectory]:
    """Every directory in the stages' folders that matches its stage's path template.

    A stage folder may hold another stage's folder (seed 000 keeps staging/ inside the production
    folder); that folder is not a skill of the outer stage.
    """
    roots = {name: project.stage_root(name).resolve() for name in project.config.stages}
    for name, stage_config in project.config.stages.items():
        if stage is not None and name != stage:
            continue
        root = roots[name]
        if not root.is_dir():
            continue
        other_roots = {r for other, r in roots.items() if other != name}
        pattern = stage_config.directory_pattern()
        for entry in sorted(os.scandir(root), key=lambda e: e.name):
            if entry.name.startswith(".") or not _is_directory(entry):
                continue
            path = Path(entry.path)
            if any(path == r or path in r.parents for r in other_roots):
                continue
            match = pattern.match(entry.name)
            if match:
                yield StagedDirectory(name, unicodedata.normalize("NFKC", match["name"]), path)
