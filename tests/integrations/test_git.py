"""Git integration, against real repositories in tmp_path.

Every test runs with the machine's git configuration shut out (GIT_CONFIG_GLOBAL, HOME,
GIT_CONFIG_NOSYSTEM), so an identity, a hooks path or commit signing set up on the machine cannot
change results.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest

from skillstage.errors import EXIT_USAGE
from skillstage.integrations.git import (
    GitError,
    commit_paths,
    has_uncommitted_changes,
    promotion_message,
    repository_root,
    rollback_message,
)

AT = datetime(2025, 11, 15, 10, 30, tzinfo=UTC)

# Seed 000, "Promote with Git Commit", with our tool's name and a person as the promoter.
SEED_MESSAGE = """\
feat(skills): Promote auth-v2 from staging to production

Automated promotion via skillstage
Validation: PASSED
Tests: PASSED
SLA: Within 48 hours

Promoted-at: 2025-11-15T10:30:00.000Z
Promoted-by: admin@example.com
"""


@pytest.fixture(autouse=True)
def isolated_git(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(home / "gitconfig"))  # does not exist: empty
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    for name in (
        "XDG_CONFIG_HOME",
        "EMAIL",
        "GIT_AUTHOR_NAME",
        "GIT_AUTHOR_EMAIL",
        "GIT_AUTHOR_DATE",
        "GIT_COMMITTER_NAME",
        "GIT_COMMITTER_EMAIL",
        "GIT_COMMITTER_DATE",
        "GIT_DIR",
        "GIT_WORK_TREE",
        "GIT_INDEX_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def git(repo: Path, *args: str) -> str:
    """Run git in `repo` the way a user would; fail the test if it fails."""
    completed = subprocess.run(
        ["git", *args], cwd=repo, capture_output=True, text=True, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def init_repo(path: Path, *, identity: bool = True) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "-c", "init.defaultBranch=main", "init", "-q")
    if identity:
        git(path, "config", "user.name", "Test User")
        git(path, "config", "user.email", "test@example.com")
    return path


def write(path: Path, text: str = "x\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def head(repo: Path) -> str:
    return git(repo, "rev-parse", "HEAD").strip()


def committed_changes(repo: Path, commit: str = "HEAD") -> set[str]:
    """`STATUS<TAB>path` for each file the commit changed, renames as delete + add."""
    out = git(repo, "show", "--no-renames", "--name-status", "--format=", commit)
    return {line for line in out.splitlines() if line}


def staged(repo: Path) -> set[str]:
    return set(git(repo, "diff", "--cached", "--name-only").split())


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A repository with one commit: a staged skill and an unrelated file."""
    root = init_repo(tmp_path / "repo")
    write(root / "skills" / "staging" / "auth-v2" / "SKILL.md", "v1\n")
    write(root / "skills" / "staging" / "auth-v2" / "notes.md", "notes\n")
    write(root / "README.md", "readme\n")
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")
    return root


# Messages


def test_promotion_message_is_seed_000s_format() -> None:
    message = promotion_message("auth-v2", "staging", "production", at=AT, by="admin@example.com")
    assert message == SEED_MESSAGE


def test_promotion_time_is_utc_with_truncated_milliseconds() -> None:
    at = datetime(2025, 11, 15, 11, 30, 0, 123999, tzinfo=timezone(timedelta(hours=1)))
    message = promotion_message("a", "prototype", "staged", at=at, by="ci")
    assert "\nPromoted-at: 2025-11-15T10:30:00.123Z\n" in message


def test_a_naive_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        promotion_message("a", "prototype", "staged", at=datetime(2025, 1, 1), by="ci")


def test_promotion_message_carries_other_gate_results() -> None:
    message = promotion_message(
        "a", "staged", "production", at=AT, by="ci", tests="SKIPPED", sla="Within 24 hours"
    )
    assert "\nValidation: PASSED\nTests: SKIPPED\nSLA: Within 24 hours\n" in message


def test_rollback_message() -> None:
    message = rollback_message(
        "auth-v2",
        "1.2.0",
        at=AT,
        by="oncall@example.com",
        reason="error rate 7% over 5% threshold",
        trigger_metric="error_rate",
        from_version="1.3.0",
    )
    assert message == (
        "revert(skills): Roll back auth-v2 to 1.2.0\n"
        "\n"
        "Automated rollback via skillstage\n"
        "Rolled back from 1.3.0\n"
        "Reason: error rate 7% over 5% threshold\n"
        "Trigger-metric: error_rate\n"
        "\n"
        "Rolled-back-at: 2025-11-15T10:30:00.000Z\n"
        "Rolled-back-by: oncall@example.com\n"
    )


def test_rollback_message_without_optional_lines() -> None:
    message = rollback_message("auth-v2", "1.2.0", at=AT, by="ci", reason="manual")
    assert "Rolled back from" not in message
    assert "Trigger-metric" not in message
    assert "\n\nAutomated rollback via skillstage\nReason: manual\n\nRolled-back-at:" in message


def interpret_trailers(tmp_path: Path, message: str) -> str:
    completed = subprocess.run(
        ["git", "interpret-trailers", "--parse"],
        cwd=tmp_path,
        input=message,
        capture_output=True,
        text=True,
        check=True,
    )
    return completed.stdout


def test_trailers_are_parsed_by_git(tmp_path: Path) -> None:
    promotion = promotion_message("auth-v2", "staging", "production", at=AT, by="a@example.com")
    assert interpret_trailers(tmp_path, promotion) == (
        "Promoted-at: 2025-11-15T10:30:00.000Z\nPromoted-by: a@example.com\n"
    )
    rollback = rollback_message(
        "auth-v2", "1.2.0", at=AT, by="ci", reason="r", trigger_metric="m", from_version="1.3.0"
    )
    assert interpret_trailers(tmp_path, rollback) == (
        "Rolled-back-at: 2025-11-15T10:30:00.000Z\nRolled-back-by: ci\n"
    )


def test_multi_line_values_cannot_break_the_trailers(tmp_path: Path) -> None:
    message = rollback_message(
        "auth-v2", "1.2.0", at=AT, by="ci\n\nFake: trailer", reason="line one\n\nline two"
    )
    assert "Reason: line one line two\n" in message
    assert interpret_trailers(tmp_path, message) == (
        "Rolled-back-at: 2025-11-15T10:30:00.000Z\nRolled-back-by: ci Fake: trailer\n"
    )


def test_an_empty_promoter_is_refused() -> None:
    with pytest.raises(ValueError, match="promoter"):
        promotion_message("a", "prototype", "staged", at=AT, by="  ")


# repository_root


def test_repository_root_from_inside(repo: Path) -> None:
    skill = repo / "skills" / "staging" / "auth-v2"
    assert repository_root(skill) == repo.resolve()
    assert repository_root(skill / "SKILL.md") == repo.resolve()
    assert repository_root(repo / "does" / "not" / "exist") == repo.resolve()


def test_repository_root_outside_any_repository(tmp_path: Path) -> None:
    assert repository_root(write(tmp_path / "plain" / "f.txt").parent) is None


def test_without_git_there_is_no_repository_and_no_commit(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert repository_root(repo) is None
    with pytest.raises(GitError, match="git is not installed"):
        commit_paths(repo, [repo / "README.md"], "m")


@pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0, reason="needs root to chown the repository"
)
def test_a_repository_git_refuses_is_an_error_not_none(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "theirs")
    shutil.chown(root, user="nobody")
    shutil.chown(root / ".git", user="nobody")
    with pytest.raises(GitError, match="dubious ownership"):
        repository_root(root)


# commit_paths


def test_first_commit_in_an_empty_repository(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "new")
    write(root / "skills" / "a" / "SKILL.md")
    write(root / "other.txt")
    git(root, "add", "other.txt")
    message = promotion_message("a", "prototype", "staged", at=AT, by="ci")

    commit = commit_paths(root, [root / "skills" / "a"], message)

    assert commit == head(root)
    assert committed_changes(root) == {"A\tskills/a/SKILL.md"}
    assert git(root, "log", "-1", "--format=%B") == message + "\n"
    assert staged(root) == {"other.txt"}


def test_commits_only_the_given_paths(repo: Path) -> None:
    write(repo / "README.md", "staged change\n")
    git(repo, "add", "README.md")
    write(repo / "skills" / "staging" / "auth-v2" / "notes.md", "not staged, not ours\n")
    write(repo / "skills" / "production" / "auth-v2" / "SKILL.md", "v1\n")
    before = head(repo)

    commit = commit_paths(repo, [repo / "skills" / "production" / "auth-v2"], "promote")

    assert git(repo, "rev-parse", f"{commit}^").strip() == before
    assert committed_changes(repo) == {"A\tskills/production/auth-v2/SKILL.md"}
    assert staged(repo) == {"README.md"}
    unstaged = git(repo, "diff", "--name-only").split()
    assert unstaged == ["skills/staging/auth-v2/notes.md"]


def test_a_moved_directory_is_one_commit(repo: Path) -> None:
    old = repo / "skills" / "staging" / "auth-v2"
    new = repo / "skills" / "production" / "auth-v2"
    new.parent.mkdir(parents=True)
    old.rename(new)

    commit_paths(repo, [old, new], "promote")

    assert committed_changes(repo) == {
        "D\tskills/staging/auth-v2/SKILL.md",
        "D\tskills/staging/auth-v2/notes.md",
        "A\tskills/production/auth-v2/SKILL.md",
        "A\tskills/production/auth-v2/notes.md",
    }
    assert git(repo, "status", "--porcelain") == ""


def test_a_directory_whose_contents_changed(repo: Path) -> None:
    skill = repo / "skills" / "staging" / "auth-v2"
    (skill / "notes.md").unlink()
    write(skill / "SKILL.md", "v2\n")
    write(skill / "references" / "new.md")

    commit_paths(repo, [skill], "update")

    assert committed_changes(repo) == {
        "D\tskills/staging/auth-v2/notes.md",
        "M\tskills/staging/auth-v2/SKILL.md",
        "A\tskills/staging/auth-v2/references/new.md",
    }


@pytest.mark.parametrize("already_removed_from_index", [False, True])
def test_a_deletion_only_commit(repo: Path, already_removed_from_index: bool) -> None:
    skill = repo / "skills" / "staging" / "auth-v2"
    if already_removed_from_index:
        git(repo, "rm", "-q", "-r", "skills/staging/auth-v2")
    else:
        shutil.rmtree(skill)

    commit_paths(repo, [skill], "remove")

    assert committed_changes(repo) == {
        "D\tskills/staging/auth-v2/SKILL.md",
        "D\tskills/staging/auth-v2/notes.md",
    }
    assert git(repo, "status", "--porcelain") == ""


def test_a_never_committed_source_that_moved_away_is_skipped(repo: Path) -> None:
    prototype = write(repo / "skills" / "prototype" / "b" / "SKILL.md").parent
    staged_dir = repo / "skills" / "staging" / "b"
    prototype.rename(staged_dir)

    commit_paths(repo, [prototype, staged_dir], "promote")

    assert committed_changes(repo) == {"A\tskills/staging/b/SKILL.md"}


def test_relative_paths_are_from_the_repository_root(repo: Path) -> None:
    write(repo / "skills" / "staging" / "auth-v2" / "SKILL.md", "v2\n")
    commit_paths(repo, [Path("skills/staging/auth-v2")], "update")
    assert committed_changes(repo) == {"M\tskills/staging/auth-v2/SKILL.md"}


def test_paths_are_literal_not_patterns(repo: Path) -> None:
    write(repo / "notes" / "v[1].md")
    write(repo / "notes" / "v1.md")  # what `notes/v[1].md` matches as a glob
    commit_paths(repo, [repo / "notes" / "v[1].md"], "add")
    assert committed_changes(repo) == {"A\tnotes/v[1].md"}


def test_the_message_is_kept_as_given(repo: Path) -> None:
    git(repo, "config", "commit.cleanup", "strip")  # would drop lines starting with '#'
    write(repo / "README.md", "changed\n")
    message = "subject\n\n# not a comment: kept\n"
    commit_paths(repo, [repo / "README.md"], message)
    assert git(repo, "log", "-1", "--format=%B") == message + "\n"


def test_nothing_changed_is_an_error(repo: Path) -> None:
    before = head(repo)
    with pytest.raises(GitError, match="nothing changed under skills/staging/auth-v2") as caught:
        commit_paths(repo, [repo / "skills" / "staging" / "auth-v2"], "promote")
    assert caught.value.code == "GIT_FAILED"
    assert head(repo) == before


def test_a_path_outside_the_repository_is_an_error(repo: Path, tmp_path: Path) -> None:
    outside = write(tmp_path / "elsewhere" / "f.txt")
    with pytest.raises(GitError, match="is outside the repository"):
        commit_paths(repo, [outside], "m")


def test_not_a_repository(tmp_path: Path) -> None:
    plain = tmp_path / "plain"
    write(plain / "skills" / "a" / "SKILL.md")

    with pytest.raises(GitError) as caught:
        commit_paths(plain, [plain / "skills" / "a"], "m")

    error = caught.value
    assert error.message == f"Git commit failed: {plain} is not in a git repository"
    assert error.exit_code == EXIT_USAGE
    assert error.code == "GIT_FAILED"
    hint = error.hint or ""
    for solution in (
        "git init",
        'git config user.name "Your Name"',
        'git config user.email "your@email.com"',
        "without --git-commit",
    ):
        assert solution in hint


def test_missing_identity(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "anon", identity=False)
    # Without this, git may make up an identity from the host name, depending on the machine.
    git(root, "config", "user.useConfigOnly", "true")
    write(root / "skills" / "a" / "SKILL.md")

    with pytest.raises(GitError) as caught:
        commit_paths(root, [root / "skills" / "a"], "m")

    assert caught.value.message.startswith("Git commit failed: git does not know who the author")
    assert 'git config user.email "your@email.com"' in (caught.value.hint or "")
    assert staged(root) == set()  # refused before anything was added


def test_an_identity_from_the_environment_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = init_repo(tmp_path / "ci", identity=False)
    git(root, "config", "user.useConfigOnly", "true")
    for role in ("AUTHOR", "COMMITTER"):
        monkeypatch.setenv(f"GIT_{role}_NAME", "CI Bot")
        monkeypatch.setenv(f"GIT_{role}_EMAIL", "ci@example.com")
    write(root / "f.txt")

    commit_paths(root, [root / "f.txt"], "m")

    assert git(root, "log", "-1", "--format=%an <%ae>").strip() == "CI Bot <ci@example.com>"


def test_the_global_config_named_by_the_environment_is_used(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = init_repo(tmp_path / "global", identity=False)
    global_config = write(
        tmp_path / "elsewhere" / "gitconfig",
        "[user]\n\tname = Global User\n\temail = global@example.com\n\tuseConfigOnly = true\n",
    )
    monkeypatch.setenv("GIT_CONFIG_GLOBAL", str(global_config))
    write(root / "f.txt")

    commit_paths(root, [root / "f.txt"], "m")

    assert (
        git(root, "log", "-1", "--format=%an <%ae>").strip() == "Global User <global@example.com>"
    )


def test_an_inherited_git_dir_does_not_redirect_the_commit(
    repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = init_repo(tmp_path / "other")
    write(other / "o.txt")
    git(other, "add", "o.txt")
    git(other, "commit", "-q", "-m", "other")
    other_head = head(other)
    # As when skillstage runs inside another repository's git hook.
    monkeypatch.setenv("GIT_DIR", str(other / ".git"))
    monkeypatch.setenv("GIT_INDEX_FILE", str(other / ".git" / "index"))
    write(repo / "README.md", "changed\n")

    commit_paths(repo, [repo / "README.md"], "m")

    monkeypatch.delenv("GIT_DIR")
    monkeypatch.delenv("GIT_INDEX_FILE")
    assert head(other) == other_head
    assert committed_changes(repo) == {"M\tREADME.md"}


def install_hook(repo: Path, name: str, script: str) -> None:
    hook = write(repo / ".git" / "hooks" / name, "#!/bin/sh\n" + script)
    hook.chmod(0o755)


def test_a_rejecting_hook_is_reported_and_the_index_put_back(repo: Path) -> None:
    install_hook(repo, "commit-msg", "echo 'rejected by policy' >&2\nexit 1\n")
    write(repo / "README.md", "staged change\n")
    git(repo, "add", "README.md")
    write(repo / "skills" / "production" / "auth-v2" / "SKILL.md")
    before = head(repo)

    with pytest.raises(GitError, match="rejected by policy") as caught:
        commit_paths(repo, [repo / "skills" / "production" / "auth-v2"], "promote")

    assert "`git commit` exited with status 1" in caught.value.message
    assert head(repo) == before
    assert staged(repo) == {"README.md"}
    assert "?? skills/production/auth-v2/SKILL.md" in git(repo, "status", "--porcelain", "-uall")


def test_a_put_back_index_still_sees_a_racy_change(repo: Path) -> None:
    """A file rewritten at the same size and mtime as git recorded: git sees the change only
    because the index file is no newer than that mtime, so a put-back index keeps its mtime."""
    readme = repo / "README.md"
    tick = readme.stat().st_mtime_ns - 60 * 10**9  # a minute ago: "now" is another tick
    os.utime(readme, ns=(tick, tick))
    git(repo, "update-index", "--refresh")  # records the new mtime
    os.utime(repo / ".git" / "index", ns=(tick, tick))
    readme.write_text("README\n")  # same size as "readme\n"
    os.utime(readme, ns=(tick, tick))
    install_hook(repo, "commit-msg", "exit 1\n")
    write(repo / "new.md")

    with pytest.raises(GitError):
        commit_paths(repo, [repo / "new.md"], "m")

    assert git(repo, "status", "--porcelain") == " M README.md\n?? new.md\n"


def test_a_commit_that_takes_too_long_is_an_error(repo: Path) -> None:
    install_hook(repo, "pre-commit", "sleep 30\n")
    write(repo / "README.md", "changed\n")

    write(repo / "new.md")
    before = head(repo)

    with pytest.raises(GitError, match=r"`git commit` did not finish within 1 seconds") as caught:
        commit_paths(repo, [repo / "README.md", repo / "new.md"], "m", timeout=1)

    assert "timeout_seconds" in (caught.value.hint or "")
    assert head(repo) == before
    # The killed git's locks are gone and the index is as before, so the next try can work.
    assert not list((repo / ".git").glob("*.lock"))
    assert git(repo, "status", "--porcelain") == " M README.md\n?? new.md\n"
    (repo / ".git" / "hooks" / "pre-commit").unlink()
    commit_paths(repo, [repo / "README.md", repo / "new.md"], "m", timeout=1)
    assert committed_changes(repo) == {"M\tREADME.md", "A\tnew.md"}


# has_uncommitted_changes


def test_a_clean_directory_has_no_uncommitted_changes(repo: Path) -> None:
    write(repo / "README.md", "changed elsewhere\n")
    write(repo / "skills" / "staging" / "other" / "SKILL.md")
    assert not has_uncommitted_changes(repo, repo / "skills" / "staging" / "auth-v2")


@pytest.mark.parametrize("change", ["modified", "staged", "untracked", "deleted"])
def test_uncommitted_changes_are_seen(repo: Path, change: str) -> None:
    skill = repo / "skills" / "staging" / "auth-v2"
    if change == "modified":
        write(skill / "SKILL.md", "v2\n")
    elif change == "staged":
        write(skill / "SKILL.md", "v2\n")
        git(repo, "add", "-A")
    elif change == "untracked":
        write(skill / "references" / "new.md")
    else:
        shutil.rmtree(skill)
    assert has_uncommitted_changes(repo, skill)


def test_ignored_files_are_not_uncommitted_changes(repo: Path) -> None:
    write(repo / ".gitignore", "__pycache__/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "ignore")
    write(repo / "skills" / "staging" / "auth-v2" / "__pycache__" / "x.pyc")
    assert not has_uncommitted_changes(repo, repo / "skills" / "staging" / "auth-v2")


def test_in_a_repository_without_commits_every_file_is_uncommitted(tmp_path: Path) -> None:
    root = init_repo(tmp_path / "new")
    write(root / "skills" / "a" / "SKILL.md")
    (root / "skills" / "empty").mkdir()
    assert has_uncommitted_changes(root, root / "skills" / "a")
    assert not has_uncommitted_changes(root, root / "skills" / "empty")
    assert not has_uncommitted_changes(root, root / "skills" / "missing")


def test_uncommitted_changes_outside_a_repository_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(GitError, match="is not in a git repository"):
        has_uncommitted_changes(tmp_path, tmp_path)
