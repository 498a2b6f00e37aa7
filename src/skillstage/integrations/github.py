"""Filing seed 001's promotion issue with the GitHub CLI: `gh issue create --title … --label …
--body-file …`, delivered as an outbox item of kind `github_issue` (retried like every side
effect; `skillstage outbox` shows it, and the issue's URL once gh printed it).

gh is found on PATH when the item runs; it brings its own login (`gh auth login`, or GH_TOKEN /
GITHUB_TOKEN in the environment, which is passed on to it with gh's other settings).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

from skillstage.config import Project
from skillstage.errors import SkillstageError
from skillstage.process import child_environment, run

GITHUB_ISSUE_KIND: Final = "github_issue"

# gh's own settings, passed on as they are: its login, host, repository and config directory.
_GH_ENVIRONMENT = (
    "GH_TOKEN",
    "GITHUB_TOKEN",
    "GH_ENTERPRISE_TOKEN",
    "GITHUB_ENTERPRISE_TOKEN",
    "GH_HOST",
    "GH_REPO",
    "GH_CONFIG_DIR",
    "XDG_CONFIG_HOME",
    "GH_PROMPT_DISABLED",
)


def find_gh() -> str | None:
    """The gh executable on PATH, or None."""
    return shutil.which("gh")


def issue_command(title: str, labels: Sequence[str], body_file: str, repo: str | None) -> list[str]:
    """Seed 001's `gh issue create` (without the executable)."""
    args = ["issue", "create", "--title", title]
    for label in labels:
        args += ["--label", label]
    args += ["--body-file", body_file]
    return [*args, "--repo", repo] if repo else args


def issue_payload(
    *,
    skill: str,
    event_id: int,
    title: str,
    labels: Sequence[str],
    body: str,
    body_file: str,
    repo: str | None,
) -> dict[str, Any]:
    """The outbox payload of one issue. The body travels with it: a retry files what was shown,
    even if the Markdown file was edited or removed since."""
    return {
        "skill": skill,
        "event": "promotion_issue",
        "event_id": event_id,
        "title": title,
        "labels": list(labels),
        "body": body,
        "body_file": body_file,
        "repo": repo,
        # what `skillstage outbox` shows as the item's target
        "command": "gh " + " ".join(issue_command(title, labels, body_file, repo)),
    }


def _url(stdout: str) -> str | None:
    lines = [line.strip() for line in stdout.splitlines() if line.strip()]
    return lines[-1] if lines else None


def create_issue(
    project: Project, payload: Mapping[str, Any]
) -> tuple[bool, str | None, str | None, bool]:
    """Run `gh issue create` for one outbox payload: (ok, error, the issue's URL, retryable)."""
    gh = find_gh()
    if gh is None:
        return (
            False,
            "gh (the GitHub CLI) is not on PATH: install it (https://cli.github.com) and run "
            f"`gh auth login`, then `skillstage outbox --retry`; or create the issue by hand "
            f"from {payload.get('body_file')}",
            None,
            False,
        )
    extra = {key: os.environ[key] for key in _GH_ENVIRONMENT if key in os.environ}
    extra.setdefault("GH_PROMPT_DISABLED", "1")  # never wait for an answer nobody gives
    with tempfile.TemporaryDirectory(prefix="skillstage-issue-") as scratch:
        body = Path(scratch) / "promotion_issue.md"
        body.write_text(str(payload["body"]), encoding="utf-8")
        args = issue_command(
            str(payload["title"]), list(payload["labels"]), str(body), payload.get("repo")
        )
        try:
            done = run(
                [gh, *args],
                cwd=project.root,
                timeout=project.config.hooks.timeout_seconds,
                env=child_environment(extra),
            )
        except SkillstageError as exc:  # not executable, a bad #! line
            return False, f"gh could not start: {exc.message}", None, False
    if done.timed_out:
        return (
            False,
            f"gh issue create took longer than {project.config.hooks.timeout_seconds:g} s",
            None,
            True,
        )
    if not done.ok:
        said = done.output_tail(10) or f"exit {done.returncode}"
        return False, f"gh issue create failed (exit {done.returncode}): {said}", None, True
    return True, None, _url(done.stdout), True
