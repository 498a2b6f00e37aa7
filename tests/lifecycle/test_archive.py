"""How a skill directory differs from an archived version's copy, file by file."""

from __future__ import annotations

import shutil
from pathlib import Path

from skillstage.config import ValidationPolicy
from skillstage.lifecycle import fs
from skillstage.lifecycle.archive import differing_files
from tests.skilltree import write_skill


def _archived(tmp_path: Path) -> tuple[Path, Path]:
    live = write_skill(tmp_path / "live", "auth-v2", files={"docs/usage.md": "how to use it"})
    entry = tmp_path / "archive" / "1.0.0-0123456789ab"
    fs.archive_copy(live, entry)  # read-only, as the promoter keeps it
    return live, entry


def test_an_identical_copy_differs_in_nothing(tmp_path: Path) -> None:
    live, entry = _archived(tmp_path)
    (live / "__pycache__").mkdir()  # build litter: the digest does not count it either
    (live / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert differing_files(live, entry, ValidationPolicy()) == []


def test_added_changed_removed_and_mode_changes_are_named(tmp_path: Path) -> None:
    live, entry = _archived(tmp_path)
    (live / "notes.md").write_text("by hand")
    (live / "SKILL.md").write_text((live / "SKILL.md").read_text() + "\nmore\n")
    shutil.rmtree(live / "docs")
    (live / "test.sh").chmod(0o644)

    assert differing_files(live, entry, ValidationPolicy()) == [
        "SKILL.md (changed)",
        "docs/usage.md (removed)",
        "notes.md (added)",
        "test.sh (executable bit changed)",
    ]
