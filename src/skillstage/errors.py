"""One error base for everything skillstage refuses to do, and the exit code each kind maps to.

Faces (CLI, later the server) catch `SkillstageError` in one place and turn it into an exit code
or an HTTP status; anything else is an unexpected error (exit 3).
"""

from __future__ import annotations

import errno
from pathlib import Path

EXIT_OK = 0
EXIT_FAILED = 1  # a gate, check or SLA failed
EXIT_USAGE = 2  # bad usage or configuration
EXIT_UNEXPECTED = 3
# The store cannot be used (unreachable, not a database) or another process holds a skill's lock
# too long: nothing was checked, so not 1; a cron job retries or fixes the environment.
EXIT_UNAVAILABLE = 4
EXIT_INTERRUPTED = 128 + 2  # Ctrl-C, as a shell reports a program SIGINT ended


class SkillstageError(Exception):
    """Base of every error skillstage raises on purpose.

    `message` says what failed; `path` and `line` say where; `hint` says what to do next.
    """

    exit_code = EXIT_FAILED
    code = "ERROR"

    def __init__(
        self,
        message: str,
        *,
        path: Path | str | None = None,
        line: int | None = None,
        hint: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.path = Path(path) if path is not None else None
        self.line = line
        self.hint = hint
        if code is not None:
            self.code = code

    @property
    def location(self) -> str | None:
        if self.path is None:
            return None
        return f"{self.path}:{self.line}" if self.line is not None else str(self.path)

    def to_dict(self) -> dict[str, object]:
        """The error as `--json` prints it."""
        return {
            "code": self.code,
            "message": self.message,
            "path": str(self.path) if self.path is not None else None,
            "line": self.line,
            "hint": self.hint,
            "exit_code": self.exit_code,
        }

    def __str__(self) -> str:
        where = self.location
        text = f"{where}: {self.message}" if where else self.message
        return f"{text}\n  hint: {self.hint}" if self.hint else text


class UsageError(SkillstageError):
    """The command was called wrongly (bad argument, missing option)."""

    exit_code = EXIT_USAGE
    code = "USAGE"


class ConfigError(SkillstageError):
    """The configuration file is missing, unreadable or has a bad key or value."""

    exit_code = EXIT_USAGE
    code = "CONFIG"


class SkillReadError(SkillstageError):
    """A skill directory or its SKILL.md cannot be read into a `SkillVersion`."""

    code = "SKILL_READ"


class StoreError(SkillstageError):
    """The state store cannot be opened or used."""

    exit_code = EXIT_UNAVAILABLE
    code = "STORE"


class StoreURLError(StoreError):
    """The store's URL (config `database`, or SKILLSTAGE_DATABASE_URL) is not one we can use."""

    exit_code = EXIT_USAGE
    code = "STORE_URL"


class SchemaOutdatedError(StoreError):
    """The store's schema is older (or newer) than this skillstage expects."""

    exit_code = EXIT_USAGE
    code = "SCHEMA_OUTDATED"


class ConflictError(SkillstageError):
    """Two facts disagree, e.g. one version of a skill with two different digests."""

    code = "CONFLICT"


class LockError(SkillstageError):
    """Another process holds a skill's lock for longer than we wait."""

    exit_code = EXIT_UNAVAILABLE
    code = "LOCKED"

    @classmethod
    def busy(cls, name: str, timeout: float) -> LockError:
        return cls(
            f"{name} is being promoted or rolled back by another process; gave up after "
            f"{timeout:g} s",
            hint=f"wait for it to finish and try again (`skillstage history {name}` shows what "
            "it did)",
        )


def as_usage_error(exc: OSError) -> UsageError | None:
    """An OSError that only bad input causes, as the usage error it is: a name or path longer
    than the system takes (a skill name of 300 characters is looked up as a directory)."""
    if exc.errno != errno.ENAMETOOLONG:
        return None
    name = str(exc.filename or "")
    shown = name if len(name) <= 80 else f"{name[:40]}…{name[-20:]} ({len(name)} characters)"
    return UsageError(
        f"file name too long: {shown}",
        hint="a skill name is at most 64 characters; a path component at most 255 bytes",
    )
