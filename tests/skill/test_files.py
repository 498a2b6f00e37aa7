"""Skill files: the digest, and what makes a tree unsafe or too big."""

from __future__ import annotations

import os
from pathlib import Path

from skillstage.skill.files import scan_skill_files
from tests.skilltree import write_skill

LIMITS = {"max_files": 1000, "max_total_bytes": 50 * 1024 * 1024}


def digest(path: Path) -> str | None:
    return scan_skill_files(path, **LIMITS).digest


def test_digest_is_stable_and_ignores_timestamps(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", files={"references/x.md": "x"})
    first = digest(skill)
    os.utime(skill / "references" / "x.md", (1, 1))
    assert first is not None and len(first) == 64
    assert digest(skill) == first


def test_same_tree_elsewhere_has_the_same_digest(tmp_path: Path) -> None:
    assert digest(write_skill(tmp_path / "one", "a")) == digest(write_skill(tmp_path / "two", "a"))


def test_digest_changes_with_content_name_and_executable_bit(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", files={"notes.md": "one"})
    seen = {digest(skill)}
    (skill / "notes.md").write_text("two")
    seen.add(digest(skill))
    (skill / "notes.md").rename(skill / "notes2.md")
    seen.add(digest(skill))
    (skill / "notes2.md").chmod(0o755)
    seen.add(digest(skill))
    assert len(seen) == 4


def test_pycache_litter_does_not_change_the_digest(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a")
    before = digest(skill)
    (skill / "__pycache__").mkdir()
    (skill / "__pycache__" / "x.pyc").write_bytes(b"\0")
    assert digest(skill) == before


def test_symlink_leaving_the_skill_is_a_problem(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a")
    (tmp_path / "secret.txt").write_text("s")
    (skill / "link.txt").symlink_to(tmp_path / "secret.txt")
    scan = scan_skill_files(skill, **LIMITS)
    assert [p.code for p in scan.problems] == ["SYMLINK_ESCAPE"]
    assert scan.digest is None


def test_symlink_inside_the_skill_is_fine(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", files={"docs/real.md": "r"})
    (skill / "alias.md").symlink_to("docs/real.md")
    (skill / "docs-link").symlink_to("docs")
    scan = scan_skill_files(skill, **LIMITS)
    assert scan.problems == []
    assert {"alias.md", "docs-link", "docs/real.md"} <= {f.path for f in scan.files}


def test_broken_symlink_and_fifo_are_problems(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a")
    (skill / "gone").symlink_to("nowhere")
    os.mkfifo(skill / "pipe")
    codes = sorted(p.code for p in scan_skill_files(skill, **LIMITS).problems)
    assert codes == ["BROKEN_SYMLINK", "SPECIAL_FILE"]


def test_file_count_limit(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", files={f"f{i}.txt": "x" for i in range(10)})
    scan = scan_skill_files(skill, max_files=5, max_total_bytes=10**9)
    assert [p.code for p in scan.problems] == ["FILE_COUNT_LIMIT"]
    assert scan.digest is None


def test_total_size_limit(tmp_path: Path) -> None:
    skill = write_skill(tmp_path, "a", files={"big.bin": b"\0" * 5000})
    scan = scan_skill_files(skill, max_files=100, max_total_bytes=4000)
    assert [p.code for p in scan.problems] == ["SKILL_TOO_LARGE"]
    assert "4,000" in scan.problems[0].message


def test_digest_follows_its_definition(tmp_path: Path) -> None:
    """sha256 over the sorted (path, executable bit, bytes), each field length-prefixed. Stored
    digests are compared forever, so the definition must not drift."""
    import hashlib

    skill = tmp_path / "a"
    (skill / "scripts").mkdir(parents=True)
    files = {"SKILL.md": (b"---\nname: a\n---\n", False), "scripts/run.sh": (b"echo\n", True)}
    for relative, (data, executable) in files.items():
        (skill / relative).write_bytes(data)
        (skill / relative).chmod(0o755 if executable else 0o644)
    expected = hashlib.sha256()
    for relative in sorted(files):
        data, executable = files[relative]
        name = relative.encode()
        expected.update(len(name).to_bytes(4, "big") + name)
        expected.update((b"\x01" if executable else b"\x00") + len(data).to_bytes(8, "big") + data)
    assert digest(skill) == expected.hexdigest()
