"""--git-commit: seed 000's message, only the touched paths, real repositories."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import load_config_file
from skillstage.integrations.git import GitError
from tests.skilltree import write_skill


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout


def test_promotion_and_rollback_commits(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.name", "Test")
    git(tmp_path, "config", "user.email", "test@example.com")
    api.init(tmp_path)
    (tmp_path / ".gitignore").write_text(".skillstage/\n")
    write_skill(tmp_path / ".claude/skills/staging", "auth-v2")
    (tmp_path / "unrelated.txt").write_text("not part of the promotion")
    git(tmp_path, "add", "-A")
    git(tmp_path, "commit", "-q", "-m", "start")
    (tmp_path / "unrelated.txt").write_text("changed, and must stay uncommitted")
    project = load_config_file(tmp_path / "skillstage.toml")

    (result,) = api.promote(project, ["auth-v2"], actor="admin@example.com", git_commit=True)
    assert result.success and result.commit_hash
    assert git(tmp_path, "rev-parse", "HEAD").strip() == result.commit_hash
    message = git(tmp_path, "log", "-1", "--format=%B")
    lines = message.splitlines()
    assert lines[0] == "feat(skills): Promote auth-v2 from staging to production"
    assert lines[2:6] == [
        "Automated promotion via skillstage",
        "Validation: PASSED",
        "Tests: PASSED",
        "SLA: Within 48 hours",
    ]
    assert "Promoted-by: admin@example.com" in lines
    changed = set(git(tmp_path, "show", "--name-only", "--no-renames", "--format=", "HEAD").split())
    assert changed == {
        ".claude/skills/auth-v2/SKILL.md",
        ".claude/skills/auth-v2/execute.sh",
        ".claude/skills/auth-v2/test.sh",
        ".claude/skills/staging/auth-v2/SKILL.md",
        ".claude/skills/staging/auth-v2/execute.sh",
        ".claude/skills/staging/auth-v2/test.sh",
    }
    assert "unrelated.txt" in git(tmp_path, "status", "--porcelain")

    back = api.rollback(project, "auth-v2", reason="broken", git_commit=True)
    assert back.commit_hash
    assert git(tmp_path, "log", "-1", "--format=%s").strip() == (
        "revert(skills): Roll back auth-v2 to 1.0.0"
    )


def test_not_a_repository_fails_before_anything_moves(tmp_path: Path) -> None:
    api.init(tmp_path)
    write_skill(tmp_path / ".claude/skills/staging", "auth-v2")
    project = load_config_file(tmp_path / "skillstage.toml")
    with pytest.raises(GitError, match="Git commit failed") as caught:
        api.promote(project, ["auth-v2"], actor="t", git_commit=True)
    assert caught.value.hint and "git init" in caught.value.hint
    assert (tmp_path / ".claude/skills/staging/auth-v2").is_dir()
    assert not (tmp_path / ".claude/skills/auth-v2").exists()


def test_uncommitted_changes_in_the_live_copy_block_an_overwrite(tmp_path: Path) -> None:
    git(tmp_path, "init", "-q")
    git(tmp_path, "config", "user.name", "Test")
    git(tmp_path, "config", "user.email", "test@example.com")
    api.init(tmp_path)
    (tmp_path / ".gitignore").write_text(".skillstage/\n")
    project = load_config_file(tmp_path / "skillstage.toml")
    write_skill(tmp_path / ".claude/skills/staging", "auth-v2")
    assert api.promote(project, ["auth-v2"], actor="t", git_commit=True)[0].success
    (tmp_path / ".claude/skills/auth-v2/notes.md").write_text("hand edit, never committed")
    write_skill(tmp_path / ".claude/skills/staging", "auth-v2", extra={"version": "1.1.0"})
    (result,) = api.promote(project, ["auth-v2"], actor="t", overwrite=True)
    assert not result.success
    (conflict,) = [g for g in result.gates if g.gate == "conflicts"]
    assert conflict.status == "fail" and conflict.message.startswith("uncommitted changes in")
