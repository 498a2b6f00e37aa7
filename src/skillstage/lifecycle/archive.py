"""The archive: the immutable copy of every version that went live (seed 000's backups), why an
entry was kept, and how a skill directory differs from a recorded version's copy.

An entry lives at `<state_dir>/archive/<name>/<version>-<digest12>`, with its reasons (overwritten,
failed, …) beside it in `<entry>.json`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path
from typing import Any

from skillstage.config import Project, ValidationPolicy
from skillstage.lifecycle import fs
from skillstage.skill.files import SkillFile, scan_skill_files
from skillstage.skill.maturity import digest_view


def archive_path(project: Project, name: str, version: str, digest: str) -> Path:
    """Where a version's immutable copy lives: `<state_dir>/archive/<name>/<version>-<digest12>`."""
    return project.state_dir / "archive" / name / f"{version}-{digest[:12]}"


def record_archive_reason(entry: Path, reason: str, *, once: bool = False, **details: Any) -> None:
    """Reasons an archive entry was kept (overwritten, failed, …), beside the immutable copy."""
    sidecar = entry.with_name(entry.name + ".json")
    reasons = json.loads(sidecar.read_text()) if sidecar.exists() else []
    if once and any(r.get("reason") == reason for r in reasons):
        return
    reasons.append({"reason": reason, "at": dt.datetime.now(dt.UTC).isoformat(), **details})
    fs.write_atomically(sidecar, json.dumps(reasons, indent=2))


def directory_digest(project: Project, directory: Path) -> str | None:
    """The content digest of a skill directory (None when it is missing or cannot be read whole),
    under the project's limits: what a version's digest and its archive entry's name are."""
    if not directory.is_dir():
        return None
    policy = project.config.validation
    return scan_skill_files(
        directory, max_files=policy.max_files, max_total_bytes=policy.max_total_bytes
    ).digest


def _fingerprints(directory: Path, policy: ValidationPolicy) -> dict[str, tuple[bool, str]]:
    """Each file's (executable bit, content hash), as the digest sees them (the same files, the
    same build litter left out). A file the scan did not read (a link to a directory, a tree over
    the size limit) is known by its size."""
    found: dict[str, tuple[bool, str]] = {}

    def keep(file: SkillFile, data: bytes) -> None:
        found[file.path] = (
            file.executable,
            hashlib.sha256(digest_view(file.path, data)).hexdigest(),
        )

    scan = scan_skill_files(
        directory, max_files=policy.max_files, max_total_bytes=policy.max_total_bytes, inspect=keep
    )
    for file in scan.files:
        found.setdefault(file.path, (file.executable, f"{file.size} bytes"))
    return found


def differing_files(directory: Path, recorded: Path, policy: ValidationPolicy) -> list[str]:
    """The files of `directory` that differ from the archive entry `recorded`, sorted, each with
    how: `notes.md (added)`, `SKILL.md (changed)`, `test.sh (removed)`, `run.sh (executable bit
    changed)`."""
    live, kept = _fingerprints(directory, policy), _fingerprints(recorded, policy)
    found = []
    for path in sorted(live.keys() | kept.keys()):
        if path not in kept:
            found.append(f"{path} (added)")
        elif path not in live:
            found.append(f"{path} (removed)")
        elif live[path][1] != kept[path][1]:
            found.append(f"{path} (changed)")
        elif live[path][0] != kept[path][0]:
            found.append(f"{path} (executable bit changed)")
    return found
