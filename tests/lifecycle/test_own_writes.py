"""The live copy's uncommitted changes in a git repository: skillstage's own writes (a promotion
or rollback without --git-commit) do not block the next overwrite; someone's edits on top of
them do, for a promotion and for a rollback alike, and the refusal names the files that differ
from the version skillstage put there (seed 000 §4's "uncommitted changes in production")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from skillstage.config import Project
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
LIVE = Path(".claude/skills/auth-v2")


def git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout


def skillstage(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real command, in the project; the store is the fixture's (SKILLSTAGE_DATABASE_URL)."""
    return subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=root,
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=120,
    )


def live_version(root: Path) -> str:
    return (root / LIVE / "SKILL.md").read_text().split("version: ")[1].split()[0]


@pytest.fixture
def repo(project: Project, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The project in a git repository with one commit: auth-v2 1.0.0 waiting in staging. The
    machine's git configuration is shut out (an identity or hooks set up there change nothing)."""
    root = project.root
    home = root.parent / f"{root.name}-home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    git(root, "init", "-q")
    git(root, "config", "user.name", "Test")
    git(root, "config", "user.email", "test@example.com")
    (root / ".gitignore").write_text(".skillstage/\n")
    write_skill(root / STAGING, "auth-v2")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "start")
    return root


def promoted(root: Path, *flags: str, version: str | None = None) -> None:
    """`skillstage promote auth-v2 --yes FLAGS…`, which must succeed (`version`: written to
    staging first), without --git-commit unless FLAGS say so."""
    if version is not None:
        write_skill(root / STAGING, "auth-v2", extra={"version": version})
    done = skillstage(root, "promote", "auth-v2", "--yes", *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    assert live_version(root) == (version or "1.0.0")


def promoted_twice_without_commit(root: Path) -> None:
    """1.0.0 then 1.1.0 promoted without --git-commit: the live copy is skillstage's own write,
    never committed."""
    promoted(root)
    promoted(root, "--overwrite", version="1.1.0")


def test_promoting_over_its_own_uncommitted_write_succeeds(repo: Path) -> None:
    promoted(repo)
    assert git(repo, "status", "--porcelain", "--", str(LIVE)).strip(), "live copy untracked"
    write_skill(repo / STAGING, "auth-v2", extra={"version": "1.1.0"})

    again = skillstage(repo, "promote", "auth-v2", "--yes", "--overwrite")

    assert again.returncode == 0, again.stdout + again.stderr
    assert "uncommitted changes" not in again.stdout + again.stderr
    assert live_version(repo) == "1.1.0"


def test_promoting_over_its_own_write_after_a_commit_succeeds(repo: Path) -> None:
    """Committed once (--git-commit), then promoted over without a commit: the live copy is
    modified against HEAD, and still exactly what skillstage put there."""
    promoted(repo, "--git-commit")
    promoted(repo, "--overwrite", version="1.1.0")
    assert git(repo, "status", "--porcelain", "--", str(LIVE)).strip(), "live copy modified"

    promoted(repo, "--overwrite", version="1.2.0")


def test_an_edit_on_top_of_its_own_write_blocks_a_promotion(repo: Path) -> None:
    promoted(repo)
    skill_md = repo / LIVE / "SKILL.md"
    skill_md.write_text(skill_md.read_text() + "\nA hot fix made in production.\n")
    (repo / LIVE / "notes.md").write_text("written by hand in the live copy")
    write_skill(repo / STAGING, "auth-v2", extra={"version": "1.1.0"})

    refused = skillstage(repo, "promote", "auth-v2", "--yes", "--overwrite")

    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "uncommitted changes in" in output
    assert "SKILL.md (changed)" in output and "notes.md (added)" in output
    assert "execute.sh" not in output.split("uncommitted changes in")[1].split("\n")[0]
    assert "skillstage doctor" in output and "commit" in output
    assert "discard" not in output
    # Nothing moved: the edits are where they were, 1.1.0 still waits in staging.
    assert "A hot fix made in production." in skill_md.read_text()
    assert (repo / LIVE / "notes.md").is_file()
    assert (repo / STAGING / "auth-v2").is_dir()


def test_edits_once_committed_no_longer_block_a_promotion(repo: Path) -> None:
    """Committing the edits (the first step the refusal offers) keeps them in git's history,
    and the promotion then goes through."""
    promoted(repo)
    (repo / LIVE / "notes.md").write_text("written by hand in the live copy")
    write_skill(repo / STAGING, "auth-v2", extra={"version": "1.1.0"})
    assert skillstage(repo, "promote", "auth-v2", "--yes", "--overwrite").returncode != 0
    git(repo, "add", "-A", "--", str(LIVE))
    git(repo, "commit", "-q", "-m", "keep the hand edits")

    promoted(repo, "--overwrite", version="1.1.0")


def test_rolling_back_over_its_own_uncommitted_write_succeeds(repo: Path) -> None:
    promoted_twice_without_commit(repo)

    back = skillstage(repo, "rollback", "auth-v2", "--yes", "--reason", "fidelity dropped")

    assert back.returncode == 0, back.stdout + back.stderr
    assert live_version(repo) == "1.0.0"
    # And a promotion over the rollback's own write goes through too.
    promoted(repo, "--overwrite", version="1.2.0")


def test_an_edit_on_top_of_its_own_write_blocks_a_rollback(repo: Path) -> None:
    promoted_twice_without_commit(repo)
    script = repo / LIVE / "execute.sh"
    script.write_text("#!/bin/bash\necho patched in production\n")

    refused = skillstage(repo, "rollback", "auth-v2", "--yes", "--reason", "fidelity dropped")

    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "uncommitted changes in" in output and "execute.sh (changed)" in output
    assert "SKILL.md" not in output.split("uncommitted changes in")[1].split("\n")[0]
    assert "skillstage doctor" in output and "discard" not in output
    assert "nothing was rolled back" in output
    assert live_version(repo) == "1.1.0"
    assert "patched in production" in script.read_text()
    # The dry run says so as well, before anything would move.
    dry = skillstage(
        repo, "rollback", "auth-v2", "--yes", "--reason", "fidelity dropped", "--dry-run"
    )
    assert dry.returncode != 0 and "execute.sh (changed)" in dry.stdout + dry.stderr


def test_a_rollback_to_the_stage_before_refuses_edits_too(repo: Path) -> None:
    """With no earlier version the rollback moves the skill back a stage: the same rule."""
    promoted(repo)
    (repo / LIVE / "notes.md").write_text("written by hand in the live copy")

    refused = skillstage(repo, "rollback", "auth-v2", "--yes", "--reason", "fidelity dropped")

    output = refused.stdout + refused.stderr
    assert refused.returncode != 0 and "notes.md (added)" in output, output
    assert (repo / LIVE / "notes.md").is_file()
    assert not (repo / STAGING / "auth-v2").exists()


def test_after_doctor_repair_keeps_the_edits_a_promotion_goes_through(repo: Path) -> None:
    """The other step the refusal offers: `doctor --repair` keeps the edited copy in the archive
    and puts the recorded version back, which is skillstage's own write again."""
    promoted(repo)
    (repo / LIVE / "notes.md").write_text("written by hand in the live copy")
    write_skill(repo / STAGING, "auth-v2", extra={"version": "1.1.0"})
    assert skillstage(repo, "promote", "auth-v2", "--yes", "--overwrite").returncode != 0

    repaired = skillstage(repo, "doctor", "--repair")
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    assert not (repo / LIVE / "notes.md").exists()
    kept = list((repo / ".skillstage/archive/auth-v2").glob("unregistered-*/notes.md"))
    assert [p.read_text() for p in kept] == ["written by hand in the live copy"]

    promoted(repo, "--overwrite", version="1.1.0")


def test_a_live_copy_skillstage_never_recorded_is_refused_with_its_files(repo: Path) -> None:
    """A copy put in the live folder by hand, which the store has no version of: its uncommitted
    files are what git lists."""
    write_skill(repo / LIVE.parent, "auth-v2", extra={"version": "0.9.0"}, test=None)

    refused = skillstage(repo, "promote", "auth-v2", "--yes", "--overwrite")

    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "which holds no version skillstage put there: SKILL.md, execute.sh" in output
    assert "discard" not in output
    assert live_version(repo) == "0.9.0"
