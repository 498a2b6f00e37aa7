"""Hook commands run after a state change: deploy (seed 000's auto-deploy), post_promote,
post_rollback and reindex (seed 002's re-index).

A hook is a command line from `[hooks]` in skillstage.toml, run from the project root through
`skillstage.process.run` (timeout, explicit environment, process-group kill) with the change's
details in SKILLSTAGE_* variables. Hooks run from the outbox: `hook_item` makes the outbox
payload inside the promotion's transaction, `run_hook` runs it after the commit. `run_hook`
never raises: a hook that cannot start, fails or times out is a failed `HookResult`.
"""

from __future__ import annotations

import os
import shlex
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, get_args

from skillstage.config import HooksConfig, Project
from skillstage.errors import SkillstageError
from skillstage.process import child_environment, run

HookName = Literal["deploy", "post_promote", "post_rollback", "reindex"]
HOOK_NAMES: Final[tuple[HookName, ...]] = get_args(HookName)

OUTPUT_TAIL_LINES = 20


@dataclass(frozen=True)
class HookResult:
    """How one run of a hook ended."""

    ok: bool
    returncode: int | None  # None when it could not start; -1 when killed on timeout
    output_tail: str  # the last lines of stdout and stderr, or why it could not run
    deployment_id: str | None  # deploy only: the last non-empty line of stdout
    timed_out: bool = False
    runnable: bool = True  # False: the command cannot start (missing, not executable, empty)

    @property
    def error(self) -> str | None:
        """A one-paragraph account of the failure, for the outbox and reports; None when ok."""
        if self.ok:
            return None
        if not self.runnable:
            return self.output_tail
        head = "timed out" if self.timed_out else f"exited with status {self.returncode}"
        return f"{head}: {self.output_tail}" if self.output_tail else head


def hook_item(
    hooks: HooksConfig,
    hook: HookName,
    *,
    event: str,
    skill: str,
    version: str,
    digest: str,
    from_stage: str | None,
    to_stage: str | None,
    path: str,
) -> dict[str, Any] | None:
    """The outbox payload that runs `hook` for this change; None when the hook is not
    configured. Enqueue it with kind `hook` (the hook's name)."""
    if hook not in HOOK_NAMES:
        raise ValueError(f"unknown hook {hook!r}; hooks are {', '.join(HOOK_NAMES)}")
    command: str | None = getattr(hooks, hook)
    if not command or not command.strip():
        return None
    # The command is captured now: a retry runs what was configured when the change was made.
    return {
        "hook": hook,
        "command": command,
        "event": event,
        "skill": skill,
        "version": version,
        "digest": digest,
        "from_stage": from_stage,
        "to_stage": to_stage,
        "path": path,
    }


def hook_environment(project: Project, payload: Mapping[str, Any]) -> dict[str, str]:
    """The hook's environment: the basics from ours plus the change's SKILLSTAGE_* variables."""

    def text(key: str) -> str:
        value = payload.get(key)
        return "" if value is None else str(value)

    return child_environment(
        {
            "SKILLSTAGE_EVENT": text("event"),
            "SKILLSTAGE_SKILL": text("skill"),
            "SKILLSTAGE_VERSION": text("version"),
            "SKILLSTAGE_DIGEST": text("digest"),
            "SKILLSTAGE_FROM_STAGE": text("from_stage"),
            "SKILLSTAGE_TO_STAGE": text("to_stage"),
            "SKILLSTAGE_PATH": text("path"),
            "SKILLSTAGE_PROJECT_ROOT": str(project.root),
        }
    )


def _command_args(command: str, root: Path) -> list[str]:
    args = shlex.split(command)
    if not args:
        return args
    program = args[0]
    # `scripts/deploy.sh` means the project's script wherever we run from; a bare `deploy.sh`
    # that is not on PATH but sits at the project root means that file too.
    candidate = root / program
    if not Path(program).is_absolute() and (
        "/" in program or (shutil.which(program) is None and candidate.is_file())
    ):
        args[0] = str(candidate)
    return args


def _cannot_start(hook: str, program: str, root: Path) -> str | None:
    """Why a hook's script cannot start, with what to do; None when it looks runnable."""
    if "/" not in program:
        if shutil.which(program) is None:
            return (
                f"{hook} hook: {program!r} is neither on PATH nor a file in the project root\n"
                f"hint: fix `{hook}` under [hooks] in skillstage.toml"
            )
        return None
    path = Path(program)
    shown = os.path.relpath(path, root) if path.is_relative_to(root) else program
    if not path.is_file():
        return (
            f"{hook} hook: {shown} does not exist\n"
            f"hint: create it, or fix `{hook}` under [hooks] in skillstage.toml"
        )
    if not os.access(path, os.X_OK):
        return f"{hook} hook: {shown} is not executable\nhint: chmod +x {shown}"
    return None


def _last_line(text: str) -> str | None:
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else None


def _not_runnable(message: str) -> HookResult:
    return HookResult(
        ok=False,
        returncode=None,
        output_tail=message,
        deployment_id=None,
        runnable=False,
    )


def run_hook(
    project: Project, payload: Mapping[str, Any], *, timeout: float | None = None
) -> HookResult:
    """Run the hook an outbox payload describes, from the project root, with the configured
    timeout (or `timeout`). Never raises: every failure is a `HookResult` with `ok` False."""
    hook = str(payload.get("hook", "hook"))
    command = str(payload.get("command") or "")
    try:
        args = _command_args(command, project.root)
    except ValueError as exc:  # shlex: unbalanced quotes
        return _not_runnable(f"cannot parse the {hook} hook command {command!r}: {exc}")
    if not args:
        return _not_runnable(f"the {hook} hook has an empty command")
    problem = _cannot_start(hook, args[0], project.root)
    if problem is not None:
        return _not_runnable(problem)
    source = "" if timeout is not None else " (hooks.timeout_seconds)"
    timeout = timeout if timeout is not None else project.config.hooks.timeout_seconds
    try:
        completed = run(
            args, cwd=project.root, timeout=timeout, env=hook_environment(project, payload)
        )
    except SkillstageError as exc:  # e.g. a bad #! line
        hint = f"\nhint: {exc.hint}" if exc.hint else ""
        return _not_runnable(f"{hook} hook: {exc.message}{hint}")
    # Blank lines carry nothing in a failure report (and `output_tail` puts one between a
    # newline-terminated stdout and stderr).
    tail = "\n".join(
        line for line in completed.output_tail(OUTPUT_TAIL_LINES).splitlines() if line.strip()
    )
    if completed.timed_out:
        tail = f"killed after {timeout:g} s{source}" + (f"\n{tail}" if tail else "")
    deployment_id = _last_line(completed.stdout) if hook == "deploy" and completed.ok else None
    return HookResult(
        ok=completed.ok,
        returncode=completed.returncode,
        output_tail=tail,
        deployment_id=deployment_id,
        timed_out=completed.timed_out,
    )
