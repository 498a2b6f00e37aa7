"""The `skillstage` command: a click group, and the one place errors become exit codes."""

from __future__ import annotations

import datetime as dt
import importlib
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import click

from skillstage import __version__
from skillstage.cli.context import CliContext, echo_json
from skillstage.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_UNAVAILABLE,
    EXIT_UNEXPECTED,
    EXIT_USAGE,
    SkillstageError,
    as_usage_error,
)

# Each command's module, imported only when that command runs, and its line in `skillstage --help`
# (so that the listing imports none of them): most commands never need the store, Apprise or the
# promoter, and importing every command's module costs most of a second.
COMMANDS = {
    "validate": (
        "skillstage.cli.validate:validate",
        "Validate skill directories, or every skill in a tree.",
    ),
    "init": (
        "skillstage.cli.init:init",
        "Create a skillstage project in DIRECTORY (default: here).",
    ),
    "list": (
        "skillstage.cli.list_:list_skills",
        "List skills per stage with version, age and path.",
    ),
    "promote": (
        "skillstage.cli.promote:promote",
        "Promote skills to their next stage behind its gates.",
    ),
    "rollback": (
        "skillstage.cli.promote:rollback",
        "Put the previous good version of NAME back live.",
    ),
    "history": (
        "skillstage.cli.history:history",
        "Promotions, rollbacks, sign-offs, holds and switches.",
    ),
    "outbox": (
        "skillstage.cli.outbox:outbox",
        "Queued deploy and re-index hooks and notifications.",
    ),
    "sla": (
        "skillstage.cli.sla:sla",
        "Find versions that waited in a stage too long; act on them.",
    ),
    "doctor": (
        "skillstage.cli.doctor:doctor",
        "Report drift between the store and the skills on disk.",
    ),
    "check-runtime": (
        "skillstage.cli.check_runtime:check_runtime",
        "Load every production skill at once: times, memory, cache, files.",
    ),
    "stats": ("skillstage.cli.stats:stats", "Key promotion metrics with their targets and alerts."),
    "report": (
        "skillstage.cli.stats:report",
        "The promotion report of NAME, or its failure report.",
    ),
    "db": ("skillstage.cli.db:db", "Manage the state store (SQLite, or PostgreSQL for teams)."),
    "metrics": ("skillstage.cli.metrics:metrics", "Record, ingest and inspect execution metrics."),
    "status": (
        "skillstage.cli.readiness:status",
        "Is NAME ready to move? Every gate with what is missing.",
    ),
    "compare": (
        "skillstage.cli.readiness:compare",
        "Compare two versions of NAME metric by metric (A/B).",
    ),
    "approve": (
        "skillstage.cli.signoff:approve",
        "Record a human sign-off of NAME's move into a stage.",
    ),
    "signoff": (
        "skillstage.cli.signoff:signoff",
        "The sign-off checklist to fill in before `approve`.",
    ),
    "eval": ("skillstage.cli.eval:eval_", "Run NAME's benchmark cases through its execute.sh."),
    "demote-check": (
        "skillstage.cli.demote:demote_check",
        "List staged versions that broke a demotion rule.",
    ),
    "rollout": (
        "skillstage.cli.rollout:rollout",
        "Gradual rollouts: a new version serves a share first.",
    ),
    "resolve": (
        "skillstage.cli.rollout:resolve",
        "Which version of NAME serves a request from SUBJECT.",
    ),
    "sync": ("skillstage.cli.sync:sync", "Copy the serving version of every skill into DIR."),
    "watch": (
        "skillstage.cli.watch:watch",
        "Guard live versions: roll back by itself when a trigger fires.",
    ),
    "hold": ("skillstage.cli.watch:hold", "Keep automation off a skill until a person clears it."),
    "disable": (
        "skillstage.cli.watch:disable",
        "Switch NAME off everywhere it is served (kill switch).",
    ),
    "enable": ("skillstage.cli.watch:enable", "Serve NAME again after `skillstage disable`."),
    "serve": ("skillstage.cli.serve:serve", "Run the REST API, the dashboard and /metrics."),
    "token": ("skillstage.cli.token:token", "Create, list and revoke the server's API tokens."),
    "backup": (
        "skillstage.cli.backup:backup",
        "Back up and restore the skill trees, archive and store.",
    ),
    "go-no-go": (
        "skillstage.cli.go_no_go:go_no_go",
        "May the production candidates be deployed? GO, NO-GO or DELAY.",
    ),
    "drill": (
        "skillstage.cli.drill:drill",
        "Rehearse a rollback of NAME on a scratch copy; record it.",
    ),
    "upgrade": (
        "skillstage.cli.upgrade:upgrade",
        "Convert old-format skills (no frontmatter) to today's format.",
    ),
}


_HELP_WIDTH = 100  # help is wrapped to the terminal, and never wider than this

# What a shell reports for a program that SIGPIPE ended (`yes | head`): the reader of the output
# went away. Not 1, which says a check failed.
EXIT_OUTPUT_CLOSED = 128 + 13


class _OutputFailed(Exception):
    """Stdout cannot be written (a full disk, `> /dev/full`): said once on stderr."""


class _OutputClosed(Exception):
    """Stdout is a pipe whose reader went away (`skillstage history | head -1`). Not an OSError:
    click turns those into exit 1."""


class _LazyGroup(click.Group):
    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:
        try:  # `skillstage --help` prints here
            return super().make_context(*args, **kwargs)
        except BrokenPipeError as exc:
            raise _OutputClosed from exc

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            raise _OutputClosed from exc

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *super().list_commands(ctx)})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in COMMANDS and cmd_name not in self.commands:
            target, summary = COMMANDS[cmd_name]
            module_name, attribute = target.split(":")
            command = getattr(importlib.import_module(module_name), attribute)
            command.short_help = summary
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command list from the table, importing no command's module."""
        rows = [
            (name, self.commands[name].get_short_help_str() if name in self.commands else summary)
            for name, (_, summary) in sorted(COMMANDS.items())
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": _HELP_WIDTH},
)
@click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    help="Config file to use (default: the nearest skillstage.toml, or pyproject.toml with "
    "[tool.skillstage], at or above the working directory; or $SKILLSTAGE_CONFIG).",
)
@click.option("--traceback", is_flag=True, help="On an unexpected error, show the traceback.")
@click.version_option(__version__, prog_name="skillstage")
@click.pass_context
def cli(ctx: click.Context, config_path: Path | None, traceback: bool) -> None:
    """Release engineering for AI-agent skills.

    Validate SKILL.md skill directories, keep track of which version sits in which stage
    (prototype → staged → production by default), and how long it has been there.

    Exit codes: 0 ok; 1 a check, gate or SLA failed; 2 usage or configuration error;
    3 unexpected error; 4 the store cannot be used or a skill stayed locked (nothing was
    checked: retry, or fix the environment), or the output could not be written; 130
    interrupted (Ctrl-C); 141 the output's reader went away (`| head`).
    """
    ctx.obj = CliContext(config_path=config_path)
    if os.environ.get("NO_COLOR"):  # https://no-color.org (rich reads it by itself)
        ctx.color = False


def _write_crash_log() -> Path:
    # Imported only when something went wrong: every command's start-up pays for module imports.
    import tempfile
    import traceback

    directory = Path(tempfile.gettempdir()) / "skillstage"
    directory.mkdir(exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
    path = directory / f"crash-{stamp}-{os.getpid()}.log"
    path.write_text(traceback.format_exc(), encoding="utf-8")
    return path


def _wants_json(args: Sequence[str]) -> bool:
    """Whether the command line asks for JSON output (`--json` before any `--`)."""
    options = args[: list(args).index("--")] if "--" in args else args
    return "--json" in options


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point: run the CLI and map every outcome to an exit code."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        code = _run(args)
        sys.stdout.flush()  # here, where a closed pipe can be told apart
    except (_OutputClosed, BrokenPipeError):
        # (also when it was an error's JSON that found the pipe closed) Whatever is still
        # buffered goes nowhere, quietly: else Python complains at exit.
        _discard_output()
        code = EXIT_OUTPUT_CLOSED
    except (_OutputFailed, OSError) as exc:
        reason = exc.__cause__ if isinstance(exc, _OutputFailed) else exc
        _discard_output()
        click.echo(
            f"error: cannot write the output: {getattr(reason, 'strerror', None) or reason}",
            err=True,
        )
        code = EXIT_UNAVAILABLE
    sys.exit(code)


def _discard_output() -> None:
    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# Where output is written (click's echo, rich's console): an OSError raised through them is the
# output failing, not the command.
_WRITERS = {
    (os.path.join("click", "utils.py"), "echo"),
    (os.path.join("rich", "console.py"), "_check_buffer"),
    (os.path.join("rich", "console.py"), "_write_buffer"),
}


def _writing_output(exc: BaseException) -> bool:
    """Whether `exc` was raised writing the command's output."""
    trace = exc.__traceback__
    while trace is not None:
        code = trace.tb_frame.f_code
        if any(code.co_filename.endswith(f) and code.co_name == n for f, n in _WRITERS):
            return True
        trace = trace.tb_next
    return False


def _run_failed(error: SkillstageError, args: Sequence[str]) -> int:
    """Say why the command failed (as JSON on stdout too, when asked for); its exit code."""
    colour = False if os.environ.get("NO_COLOR") else None
    click.echo(click.style("error: ", fg="red", bold=True) + str(error), err=True, color=colour)
    if _wants_json(args):
        # A script reading stdout gets the failure as JSON too, not an empty stream.
        echo_json({"error": error.to_dict()})
    return error.exit_code


def _terminal_columns() -> int:
    """The width help is wrapped to, as `shutil.get_terminal_size` finds it ($COLUMNS, else the
    terminal of stdout, else 80): shutil itself (with its compression modules) is most of what
    `--help` would import beyond click."""
    try:
        return int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        pass
    if sys.__stdout__ is None:
        return 80
    try:
        return os.get_terminal_size(sys.__stdout__.fileno()).columns or 80
    except (ValueError, OSError):
        return 80


def _run(args: list[str]) -> int:
    """Run the command; its exit code, its failures printed (on stdout too, as JSON, when it
    was asked for JSON)."""
    try:
        code = cli.main(
            args=args,
            prog_name="skillstage",
            standalone_mode=False,
            # as click wraps when it measures the terminal itself (not beyond 100 columns)
            terminal_width=max(min(_terminal_columns(), _HELP_WIDTH) - 2, 50),
        )
    except _OutputClosed:
        raise
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except (click.exceptions.Abort, KeyboardInterrupt) as exc:
        # Click's Abort for Ctrl-C anywhere, and for the end of input at a prompt.
        interrupted = not isinstance(exc.__context__, EOFError)
        error = SkillstageError(
            "interrupted" if interrupted else "cancelled: no answer (end of input)",
            code="INTERRUPTED" if interrupted else "CANCELLED",
        )
        error.exit_code = EXIT_INTERRUPTED if interrupted else EXIT_FAILED
        code = _run_failed(error, args)
    except click.ClickException as exc:
        exc.show()
        if _wants_json(args):
            usage = {"code": "USAGE", "message": exc.format_message(), "path": None, "line": None}
            echo_json({"error": {**usage, "hint": None, "exit_code": EXIT_USAGE}})
        code = EXIT_USAGE
    except SkillstageError as exc:
        code = _run_failed(exc, args)
    except Exception as exc:
        if isinstance(exc, OSError) and _writing_output(exc):
            raise _OutputFailed from exc
        if isinstance(exc, OSError) and (bad_input := as_usage_error(exc)) is not None:
            return _run_failed(bad_input, args)
        if "--traceback" in args:
            raise
        log = _write_crash_log()
        click.echo(
            f"unexpected error: {type(exc).__name__}: {exc}\n"
            f"  the traceback is in {log}; rerun with --traceback to see it here",
            err=True,
        )
        if _wants_json(args):
            message = f"unexpected error: {type(exc).__name__}: {exc}"
            echo_json(
                {
                    "error": {
                        "code": "UNEXPECTED",
                        "message": message,
                        "path": str(log),
                        "line": None,
                        "hint": "the traceback is in the file at `path`",
                        "exit_code": EXIT_UNEXPECTED,
                    }
                }
            )
        code = EXIT_UNEXPECTED
    return code if isinstance(code, int) else 0
