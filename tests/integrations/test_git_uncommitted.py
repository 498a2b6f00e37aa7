"""uncommitted_paths: which files under a directory git has not committed, against real
repositories (the machine's git configuration shut out)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from skillstage.integrations.git import GitError, uncommitted_paths


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, check=True)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(tmp_path / "no-gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    root = tmp_path / "repo"
    skill = root / "skills" / "auth-v2"
    (skill / "docs").mkdir(parents=True)
    (skill / "SKILL.md").write_text("v1")
    (skill / "docs" / "usage.md").write_text("how")
    (root / "other.txt").write_text("elsewhere")
    git(root, "init", "-q")
    git(root, "config", "user.name", "Test")
    git(root, "config", "user.email", "test@example.com")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def test_a_clean_directory_has_none(repo: Path) -> None:
    (repo / "other.txt").write_text("changed outside the directory")
    assert uncommitted_paths(repo, repo / "skills" / "auth-v2") == []


def test_modified_deleted_staged_and_untracked_files_relative_to_the_directory(
    repo: Path,
) -> None:
    skill = repo / "skills" / "auth-v2"
    (skill / "SKILL.md").write_text("v2")
    (skill / "docs" / "usage.md").unlink()
    (skill / "docs" / "new.md").write_text("staged")
    git(repo, "add", "--", str(skill / "docs" / "new.md"))
    (skill / "notes" / "a.md").parent.mkdir()
    (skill / "notes" / "a.md").write_text("untracked, in a new folder")
    (repo / "skills" / "auth-v2-old").mkdir()  # a sibling whose name starts the same
    (repo / "skills" / "auth-v2-old" / "x").write_text("not under the directory")

    assert uncommitted_paths(repo, skill) == [
        "SKILL.md",
        "docs/new.md",
        "docs/usage.md",
        "notes/a.md",
    ]


def test_outside_a_repository_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="not in a git repository"):
        uncommitted_paths(tmp_path, tmp_path)
