"""Every subprocess skillstage starts (test.sh, git, hooks) goes through `run`.

One place for the timeout, an explicit environment, and killing the whole process group on timeout:
a test.sh that starts a background server must not outlive its deadline.
"""

from __future__ import annotations

import contextlib
import locale
import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from skillstage.errors import SkillstageError

# The variables a child needs to behave normally; everything else must be passed on purpose.
_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM")


@dataclass(frozen=True)
class Completed:
    """How a subprocess ended."""

    args: tuple[str, ...]
    returncode: int  # -1 when it was killed on timeout
    stdout: str
    stderr: str
    timed_out: bool
    seconds: float

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def output_tail(self, lines: int = 20) -> str:
        """The last lines of stdout and stderr together, for a failure report."""
        text = (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).rstrip()
        return "\n".join(text.splitlines()[-lines:])


def child_environment(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """A minimal environment: the basics from ours, plus what the caller passes."""
    env = {key: os.environ[key] for key in _INHERITED if key in os.environ}
    env.setdefault("PATH", os.defpath)
    if extra:
        env.update(extra)
    return env


def run(
    args: Sequence[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
    stdin: str | None = None,
) -> Completed:
    """Run a command to completion or until `timeout` seconds, then kill its process group
    (also when the command ended but a child it left behind still holds its output: the
    command's own exit status is then the result)."""
    started = time.monotonic()
    # `kill <our pid>` (SIGTERM) would end us at once and leave the command running: while it
    # runs, SIGTERM ends us through the cleanup below, with the status a shell expects (143).
    # Set before the command starts: a SIGTERM in between would otherwise end us the old way.
    # (signals: the main thread only; and a handler the host program set is left to it)
    handling = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    )
    previous = signal.signal(signal.SIGTERM, _terminated) if handling else None
    try:
        process = _start(args, cwd=cwd, env=env, stdin=stdin)
        # When the command itself ends: a child it leaves behind may hold its output open longer,
        # and that wait is not the command's time.
        ended: list[float] = []

        def watch() -> None:
            with contextlib.suppress(Exception):
                process.wait()
                ended.append(time.monotonic())

        threading.Thread(target=watch, name="skillstage-process-watch", daemon=True).start()
        try:
            stdout, stderr = process.communicate(stdin, timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            # The command itself may have ended in time, leaving a background child that holds its
            # output open: its exit status stands, and the child goes with the group.
            timed_out = process.poll() is None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            try:
                stdout, stderr = process.communicate(timeout=5)
            except subprocess.TimeoutExpired as exc:
                # A descendant that left the group (setsid) still holds the pipes; stop waiting on
                # it, keeping what the command printed.
                stdout, stderr = _text(exc.stdout), _text(exc.stderr)
                process.kill()
                for pipe in (process.stdout, process.stderr):
                    if pipe is not None:
                        pipe.close()
                process.wait()
        except BaseException:
            # Interrupted (Ctrl-C, SIGTERM): the command runs in its own session, which the
            # terminal's signal never reaches, so it goes now rather than outliving us.
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            raise
    finally:
        if handling:
            signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    return Completed(
        args=tuple(args),
        returncode=-1 if timed_out else process.returncode,
        stdout=stdout,
        stderr=stderr,
        timed_out=timed_out,
        seconds=(ended[0] if ended and not timed_out else time.monotonic()) - started,
    )


def _start(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None, stdin: str | None
) -> subprocess.Popen[str]:
    try:
        return subprocess.Popen(
            list(args),
            cwd=cwd,
            env=dict(env) if env is not None else child_environment(),
            stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group, so a timeout kills its children too
            text=True,
            errors="replace",
        )
    except OSError as exc:
        raise SkillstageError(
            f"cannot run {args[0]}: {exc.strerror}",
            path=Path(args[0]),
            hint="check that the file exists, is executable and starts with a valid #! line",
            code="COMMAND_NOT_RUNNABLE",
        ) from None


def _terminated(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _text(output: str | bytes | None) -> str:
    """What a timed-out `communicate` had read (bytes, even of a text-mode process)."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    # As text mode would have read it: the locale's encoding, universal newlines.
    text = output.decode(locale.getpreferredencoding(False), errors="replace")
    return text.replace("\r\n", "\n").replace("\r", "\n")
