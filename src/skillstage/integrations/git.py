"""Git: commit a promotion or rollback (seed 000's "Promote with Git Commit"), and check for
uncommitted changes before touching a stage directory.

Every git call goes through `skillstage.process.run` with an environment built here, so a
skillstage started from inside a git hook (GIT_DIR, GIT_INDEX_FILE set) or a terminal that would
prompt for credentials behaves the same as one started anywhere else.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from skillstage.errors import EXIT_USAGE, SkillstageError
from skillstage.process import Completed, child_environment, run

COMMIT_FAILED = "Git commit failed"

# Seed 000's troubleshooting entry for "Git commit failed".
_SETUP_HINT = (
    'run `git init` in the project, then `git config user.name "Your Name"` and '
    '`git config user.email "your@email.com"`; or run without --git-commit '
    "(and with `commit = false` under [git] in skillstage.toml)"
)
_IDENTITY_HINT = (
    'run `git config user.name "Your Name"` and `git config user.email "your@email.com"` in the '
    "repository (or add --global); or run without --git-commit "
    "(and with `commit = false` under [git] in skillstage.toml)"
)
_REJECTED_HINT = "fix what git reports above (a commit hook may have rejected the commit)"
_TIMEOUT_HINT = "raise `timeout_seconds` under [git] in skillstage.toml"
_COMMIT_TIMEOUT_HINT = (
    "a commit hook may be slow or waiting for input (a signing passphrase?); "
    + _TIMEOUT_HINT
    + ", then check `git status` and `git log -1`"
)

# child_environment passes only a fixed list of variables. These are passed on purpose as well:
# they are how a user points git at its configuration and identity without a config file (CI
# jobs set GIT_AUTHOR_*/GIT_COMMITTER_*; tests isolate themselves with GIT_CONFIG_GLOBAL), and
# how a signed commit (commit.gpgSign) reaches its agent. GIT_DIR, GIT_WORK_TREE, GIT_INDEX_FILE
# and the like are left out: inherited from a hook, they would point git at another repository.
_GIT_PASSED_THROUGH = (
    "GIT_CONFIG_GLOBAL",
    "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_NOSYSTEM",
    "XDG_CONFIG_HOME",
    "GIT_AUTHOR_NAME",
    "GIT_AUTHOR_EMAIL",
    "GIT_AUTHOR_DATE",
    "GIT_COMMITTER_NAME",
    "GIT_COMMITTER_EMAIL",
    "GIT_COMMITTER_DATE",
    "EMAIL",
    "GNUPGHOME",
    "SSH_AUTH_SOCK",
)


class GitError(SkillstageError):
    """A git operation failed: no repository, no identity, no git, a rejected or timed-out
    commit."""

    code = "GIT_FAILED"


class GitSetupError(GitError):
    """Git cannot be used here at all: no repository, no git, no identity. Fixed by setting git
    up (or not asking for a commit), not by retrying: a configuration error."""

    exit_code = EXIT_USAGE


def _git_environment() -> dict[str, str]:
    extra = {key: os.environ[key] for key in _GIT_PASSED_THROUGH if key in os.environ}
    extra.update(
        {
            # Never wait for a password nobody will type.
            "GIT_TERMINAL_PROMPT": "0",
            # Untranslated messages: we tell "not a git repository" from other failures by them,
            # and they sit inside our English messages.
            "LC_ALL": "C",
            # A skill directory named `v*` or `[draft]` is a path, not a pattern.
            "GIT_LITERAL_PATHSPECS": "1",
        }
    )
    return child_environment(extra)


def _git(
    root: Path,
    args: Sequence[str],
    *,
    timeout: float,
    failed: str,
    stdin: str | None = None,
    env: dict[str, str] | None = None,
) -> Completed:
    """Run `git -C root args…`; a missing git or a timeout is a GitError headed by `failed`."""
    environment = env if env is not None else _git_environment()
    if shutil.which("git", path=environment.get("PATH")) is None:
        raise GitSetupError(
            f"{failed}: git is not installed (no `git` on PATH)",
            hint="install git, or run without --git-commit",
        )
    command = ["git", "-C", str(root), *args]
    try:
        completed = run(command, cwd=root, timeout=timeout, env=environment, stdin=stdin)
    except SkillstageError as exc:  # git found by which but not runnable
        raise GitError(f"{failed}: {exc.message}", hint=exc.hint) from None
    if completed.timed_out:
        raise GitError(
            f"{failed}: `git {args[0]}` did not finish within {timeout:g} seconds",
            path=root,
            hint=_COMMIT_TIMEOUT_HINT if args[0] in ("add", "commit") else _TIMEOUT_HINT,
        )
    return completed


def _failure(failed: str, completed: Completed, *, path: Path, hint: str | None = None) -> GitError:
    subcommand = completed.args[3] if len(completed.args) > 3 else "git"
    tail = completed.output_tail()
    detail = "\n".join(f"    {line}" for line in tail.splitlines())
    message = f"{failed}: `git {subcommand}` exited with status {completed.returncode}"
    return GitError(f"{message}:\n{detail}" if detail else message, path=path, hint=hint)


def _existing_directory(path: Path) -> Path:
    """`path` if it is a directory, else its nearest existing ancestor (a file's directory, or
    where a deleted path used to be)."""
    candidate = path.absolute()
    while not candidate.is_dir() and candidate != candidate.parent:
        candidate = candidate.parent
    return candidate


def _may_be_in_a_repository(directory: Path) -> bool:
    """False when no `.git` exists in `directory` or above it (and GIT_DIR is not set): then git
    would say "not a git repository", and asking it costs a process."""
    if os.environ.get("GIT_DIR"):
        return True
    return any((candidate / ".git").exists() for candidate in (directory, *directory.parents))


def _toplevel(path: Path, *, timeout: float, failed: str) -> Path | None:
    directory = _existing_directory(path)
    if not _may_be_in_a_repository(directory):
        return None
    completed = _git(directory, ["rev-parse", "--show-toplevel"], timeout=timeout, failed=failed)
    if completed.ok:
        return Path(completed.stdout.strip()).resolve()
    if "not a git repository" in completed.stderr.lower():
        return None
    # Dubious ownership, a broken .git: a repository is there, but git refuses it.
    raise _failure(failed, completed, path=path)


def repository_root(path: Path, *, timeout: float = 30) -> Path | None:
    """The root of the git work tree containing `path`, or None when there is none.

    `path` may be a file or may not exist (its nearest existing ancestor is looked up). None also
    when git is not installed. A repository git refuses to use (e.g. "dubious ownership") is a
    `GitError`, not None: the user has a repository and needs to hear why it is not used; so is
    git taking longer than `timeout` seconds.
    """
    environment = _git_environment()
    if shutil.which("git", path=environment.get("PATH")) is None:
        return None
    return _toplevel(path, timeout=timeout, failed="git failed")


def _timestamp(at: datetime) -> str:
    """`2025-11-15T10:30:00.000Z`, as in seed 000 (JavaScript's toISOString)."""
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError("the time of a promotion or rollback must be timezone-aware")
    utc = at.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _one_line(value: str, what: str) -> str:
    """`value` with its whitespace runs (newlines included) collapsed, so that it cannot start
    a new paragraph or a false trailer in the message."""
    flat = " ".join(value.split())
    if not flat:
        raise ValueError(f"the {what} in a commit message must not be empty")
    return flat


def promotion_message(
    name: str,
    from_label: str,
    to_label: str,
    *,
    at: datetime,
    by: str,
    validation: str = "PASSED",
    tests: str = "PASSED",
    sla: str = "Within 48 hours",
) -> str:
    """The commit message of a promotion, in seed 000's format.

    The last paragraph holds `Promoted-at` and `Promoted-by` git trailers; `at` must be
    timezone-aware and is written in UTC with milliseconds.
    """
    return (
        f"feat(skills): Promote {_one_line(name, 'skill name')} from "
        f"{_one_line(from_label, 'source stage')} to {_one_line(to_label, 'target stage')}\n"
        "\n"
        "Automated promotion via skillstage\n"
        f"Validation: {_one_line(validation, 'validation result')}\n"
        f"Tests: {_one_line(tests, 'tests result')}\n"
        f"SLA: {_one_line(sla, 'SLA')}\n"
        "\n"
        f"Promoted-at: {_timestamp(at)}\n"
        f"Promoted-by: {_one_line(by, 'promoter')}\n"
    )


def rollback_message(
    name: str,
    version: str,
    *,
    at: datetime,
    by: str,
    reason: str,
    trigger_metric: str | None = None,
    from_version: str | None = None,
) -> str:
    """The commit message of a rollback to `version`, in the style of `promotion_message`.

    The last paragraph holds `Rolled-back-at` and `Rolled-back-by` git trailers.
    """
    body = ["Automated rollback via skillstage"]
    if from_version is not None:
        body.append(f"Rolled back from {_one_line(from_version, 'previous version')}")
    body.append(f"Reason: {_one_line(reason, 'reason')}")
    if trigger_metric is not None:
        body.append(f"Trigger-metric: {_one_line(trigger_metric, 'trigger metric')}")
    return (
        f"revert(skills): Roll back {_one_line(name, 'skill name')} to "
        f"{_one_line(version, 'version')}\n"
        "\n" + "\n".join(body) + "\n"
        "\n"
        f"Rolled-back-at: {_timestamp(at)}\n"
        f"Rolled-back-by: {_one_line(by, 'person or process rolling back')}\n"
    )


def _pathspec(top: Path, path: Path, *, failed: str) -> str:
    """`path` (absolute, or relative to the repository root) as a pathspec from the root.

    Only the parent is resolved: a path that is itself a symlink is committed as the link.
    """
    candidate = path if path.is_absolute() else top / path
    if candidate.name not in ("", ".", ".."):
        candidate = candidate.parent.resolve() / candidate.name
    else:
        candidate = candidate.resolve()
    try:
        relative = candidate.relative_to(top)
    except ValueError:
        raise GitError(f"{failed}: {path} is outside the repository at {top}") from None
    return relative.as_posix()  # "." for the root itself


def _status(top: Path, specs: Sequence[str], *, timeout: float, failed: str) -> list[str]:
    """`git status --porcelain -z` entries (`XY path`) for changes under `specs`, against HEAD.

    Unlike `git add`, status accepts pathspecs that match nothing, such as a directory that was
    never committed and has since been moved away.
    """
    environment = _git_environment()
    environment["GIT_OPTIONAL_LOCKS"] = "0"  # a read: do not rewrite the index behind the user
    completed = _git(
        top,
        ["status", "--porcelain=v1", "-z", "--untracked-files=all", "--no-renames", "--", *specs],
        timeout=timeout,
        failed=failed,
        env=environment,
    )
    if not completed.ok:
        raise _failure(failed, completed, path=top)
    return [entry for entry in completed.stdout.split("\0") if entry]


def _under(entry_path: str, spec: str) -> bool:
    return spec == "." or entry_path == spec or entry_path.startswith(f"{spec.rstrip('/')}/")


def _require_identity(top: Path, *, timeout: float) -> None:
    for ident in ("GIT_AUTHOR_IDENT", "GIT_COMMITTER_IDENT"):
        completed = _git(top, ["var", ident], timeout=timeout, failed=COMMIT_FAILED)
        if not completed.ok:
            who = "author" if ident == "GIT_AUTHOR_IDENT" else "committer"
            raise GitSetupError(
                f"{COMMIT_FAILED}: git does not know who the {who} is "
                f"(user.name and user.email are not set for {top})",
                hint=_IDENTITY_HINT,
            )


def _head(top: Path, *, timeout: float) -> str | None:
    """The commit HEAD points at; None in a repository with no commits yet."""
    completed = _git(
        top, ["rev-parse", "--verify", "--quiet", "HEAD"], timeout=timeout, failed=COMMIT_FAILED
    )
    return completed.stdout.strip() if completed.ok else None


def _index_file(top: Path, *, timeout: float) -> Path:
    completed = _git(
        top,
        ["rev-parse", "--git-path", "index"],
        timeout=timeout,
        failed=COMMIT_FAILED,
    )
    if not completed.ok:
        raise _failure(COMMIT_FAILED, completed, path=top)
    # Relative to the directory git ran in (older gits have no --path-format=absolute).
    return top / completed.stdout.strip()


def _index_locks(index: Path) -> set[Path]:
    """The lock files git holds while writing the index (`index.lock`, and `next-index-<pid>.lock`
    for the temporary index of a `git commit --only`)."""
    return {
        *index.parent.glob(f"{index.name}.lock"),
        *index.parent.glob(f"next-{index.name}-*.lock"),
    }


@dataclass(frozen=True)
class _SavedIndex:
    content: bytes
    times_ns: tuple[int, int]  # access and modification time


def _save_index(index: Path) -> _SavedIndex | None:
    """The index as it is (None when there is none yet, in a new repository)."""
    try:
        status = index.stat()
        return _SavedIndex(index.read_bytes(), (status.st_atime_ns, status.st_mtime_ns))
    except FileNotFoundError:
        return None


def _restore_index(index: Path, saved: _SavedIndex | None) -> None:
    """Put the index back as it was before our `git add`, under git's own lock protocol.

    When the lock is held, the index is left alone: another writer has it.
    """
    lock = index.with_name(index.name + ".lock")
    try:
        with open(lock, "xb") as handle:
            if saved is not None:
                handle.write(saved.content)
    except FileExistsError:
        return
    if saved is None:
        lock.unlink()
        with contextlib.suppress(FileNotFoundError):
            index.unlink()
        return
    # Git trusts an entry's cached stat data only when the file is older than the index file
    # ("racy git"). A restored index with a fresh mtime would make a file changed in the same
    # second as the old index was written, at the same size, look unchanged.
    os.utime(lock, ns=saved.times_ns)
    os.replace(lock, index)


def commit_paths(
    repo_root: Path, paths: Sequence[Path], message: str, *, timeout: float = 30
) -> str:
    """Commit the changes under `paths`, and nothing else, with `message`; return the new
    commit's hash.

    `paths` are absolute or relative to `repo_root`; each may be a file or a directory that was
    added, modified or deleted (a moved skill is its old and its new directory). Changes
    elsewhere in the repository, staged or not, are left as they were: staged stays staged.
    Works in a repository with no commits yet. The repository's hooks run; a hook that rejects
    the commit is a `GitError` carrying its output, and the index is put back as it was.

    Raises `GitError` when `repo_root` is not in a repository, git has no identity, git is not
    installed, nothing under `paths` changed, or git fails or takes longer than `timeout`
    seconds per call.
    """
    if not paths:
        raise ValueError("commit_paths needs at least one path")
    top = _toplevel(repo_root, timeout=timeout, failed=COMMIT_FAILED)
    if top is None:
        raise GitSetupError(
            f"{COMMIT_FAILED}: {repo_root} is not in a git repository",
            hint=_SETUP_HINT,
        )
    _require_identity(top, timeout=timeout)
    specs = list(dict.fromkeys(_pathspec(top, path, failed=COMMIT_FAILED) for path in paths))
    entries = _status(top, specs, timeout=timeout, failed=COMMIT_FAILED)
    # `XY path`: X is the index against HEAD, Y the work tree against the index.
    changed = [(entry[:2], entry[3:]) for entry in entries]
    # git add and git commit --only reject a pathspec that matches nothing they know of, such as
    # a never-committed directory that was moved away; only paths with changes go to them.
    to_commit = [spec for spec in specs if any(_under(p, spec) for _, p in changed)]
    if not to_commit:
        raise GitError(
            f"{COMMIT_FAILED}: nothing changed under {', '.join(specs)} in {top}",
            hint="a promotion or rollback changes its skill directories; check the paths given",
        )
    # Only paths with work-tree changes need `git add`; a path whose deletion is already staged
    # exists neither in the index nor on disk, and `git add` would refuse it.
    to_add = [
        spec
        for spec in to_commit
        if any(_under(p, spec) and (xy == "??" or xy[1] != " ") for xy, p in changed)
    ]
    head = _head(top, timeout=timeout)
    index = _index_file(top, timeout=timeout)
    saved = _save_index(index)
    locks_before = _index_locks(index)
    try:
        if to_add:
            added = _git(top, ["add", "-A", "--", *to_add], timeout=timeout, failed=COMMIT_FAILED)
            if not added.ok:
                raise _failure(COMMIT_FAILED, added, path=top)
        # --only: commit these paths as they are now, whatever else is staged; the rest of the
        # index keeps its staged changes. --cleanup=whitespace keeps lines starting with '#'.
        committed = _git(
            top,
            ["commit", "--only", "--quiet", "--cleanup=whitespace", "-F", "-", "--", *to_commit],
            timeout=timeout,
            failed=COMMIT_FAILED,
            stdin=message,
        )
        if not committed.ok:
            raise _failure(COMMIT_FAILED, committed, path=top, hint=_REJECTED_HINT)
    except GitError:
        # A git killed on timeout leaves its locks, and every later `git add` or `git commit`
        # would fail on them. Any git we started has ended by now, so a lock that appeared since
        # is one of ours (had another process held the index, ours would have failed at once).
        for lock in _index_locks(index) - locks_before:
            with contextlib.suppress(FileNotFoundError):
                lock.unlink()
        # Unless the commit was made (HEAD moved), undo our `git add`: nothing half-done. The
        # error the user sees is the first one, not one from this clean-up.
        with contextlib.suppress(GitError):
            if _head(top, timeout=timeout) == head:
                _restore_index(index, saved)
        raise
    new_head = _head(top, timeout=timeout)
    if new_head is None or new_head == head:
        raise GitError(f"{COMMIT_FAILED}: git reported success but HEAD did not move", path=top)
    return new_head


def uncommitted_paths(repo_root: Path, path: Path, *, timeout: float = 30) -> list[str]:
    """What under `path` differs from HEAD: staged, unstaged or untracked files (ignored files do
    not count), as POSIX paths relative to `path`, sorted.

    In a repository with no commits yet, every file under `path` is uncommitted; an empty
    directory (which git does not track) never is. Raises `GitError` when `repo_root` is not in a
    repository.
    """
    failed = "cannot check for uncommitted changes"
    top = _toplevel(repo_root, timeout=timeout, failed=failed)
    if top is None:
        raise GitSetupError(f"{failed}: {repo_root} is not in a git repository", hint=_SETUP_HINT)
    spec = _pathspec(top, path, failed=failed)
    prefix = "" if spec == "." else f"{spec.rstrip('/')}/"
    # `XY path`, the path from the repository root (a directory with a trailing slash never
    # appears: --untracked-files=all lists the files in it).
    found = {entry[3:] for entry in _status(top, [spec], timeout=timeout, failed=failed)}
    return sorted(p[len(prefix) :] if p.startswith(prefix) else p for p in found)


def has_uncommitted_changes(repo_root: Path, path: Path, *, timeout: float = 30) -> bool:
    """Whether anything under `path` differs from HEAD: staged, unstaged or untracked (ignored
    files do not count).

    Seed 000's conflict check "Are there uncommitted changes in production?". In a repository
    with no commits yet, any file under `path` is uncommitted; an empty directory (which git
    does not track) never is. Raises `GitError` when `repo_root` is not in a repository.
    """
    return bool(uncommitted_paths(repo_root, path, timeout=timeout))
