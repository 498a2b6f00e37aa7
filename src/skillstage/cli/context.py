"""What every command can ask of the invocation: the project, and how to print."""

from __future__ import annotations

import json
import math
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

import click

from skillstage.errors import SkillstageError, UsageError

if TYPE_CHECKING:
    from skillstage.config import Project


@dataclass
class CliContext:
    config_path: Path | None = None
    _project: Project | None = field(default=None, repr=False)

    def project(self) -> Project:
        """The project; a `ConfigError` (exit 2) when there is none."""
        # The config module is imported here, not at start-up: `--help` and `--version` read no
        # config.
        from skillstage.config import load_project

        if self._project is None:
            self._project = load_project(self.config_path)
        return self._project

    def optional_project(self) -> Project | None:
        """The project if there is one; None outside a project. A broken config is still an
        error."""
        from skillstage.config import find_config_file, load_config_file

        if self.config_path is not None:
            return self.project()
        found = find_config_file(Path.cwd())
        return load_config_file(found) if found is not None else None


class StageName(click.ParamType[str]):
    """A stage, by its name or its label (`staging` for `staged`: the word messages use)."""

    name = "stage"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        context = ctx.find_object(CliContext) if ctx is not None else None
        if context is None or not isinstance(value, str):
            return value
        try:
            stages = context.project().config.stages
        except SkillstageError:
            return value  # no project: the command says so
        if value in stages:
            return value
        by_label = [name for name, stage in stages.items() if stage.label == value]
        # An unknown name is left for the command, which says so and lists the stages.
        return by_label[0] if len(by_label) == 1 else value


STAGE = StageName()


class _Finite(click.FloatRange):
    """A bounded number of seconds or the like: `nan` is refused too (click's ranges let it
    through, and a timeout of nan or inf fails deep inside)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = super().convert(value, param, ctx)
        if math.isnan(number):
            self.fail(f"{value!r} is not a number", param, ctx)
        return number


class NonEmptyPath(click.Path):
    """A path argument that is not empty: `Path("")` is the working directory, which an empty
    argument (`validate "$UNSET"`) must not silently stand for."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, str) and not value:
            self.fail("an empty path (did a variable come out empty?)", param, ctx)
        return super().convert(value, param, ctx)


DAY_SECONDS = 86_400.0
# Seconds to wait or let run: up to a day; `TIMEOUT` must be more than 0.
WAIT = _Finite(min=0, max=DAY_SECONDS)
TIMEOUT = _Finite(min=0, max=DAY_SECONDS, min_open=True)
# How many (events, records): an int SQLite and PostgreSQL can take.
LIMIT = click.IntRange(min=1, max=2**31 - 1)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def echo_json(data: Any) -> None:
    text = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        # A path that is not UTF-8 (its bytes kept as lone surrogates) would be written out
        # as those bytes, and the output would not be UTF-8, so not JSON: escaped instead.
        text = json.dumps(data, indent=2, ensure_ascii=True, default=str)
    click.echo(text)


def rule(width: int = 52) -> str:
    return "━" * width


def key_values(values: tuple[str, ...], option: str, example: str) -> dict[str, str] | None:
    """Repeated `--option KEY=VALUE` as a dict (None when none was given); a malformed pair or a
    key given twice is a usage error naming the option."""
    from skillstage.errors import UsageError

    found: dict[str, str] = {}
    for value in values:
        key, sep, text = value.partition("=")
        if not sep or not key:
            raise UsageError(
                f"{option} {value!r} is not KEY=VALUE", hint=f"e.g. {option} {example}"
            )
        if key in found:
            raise UsageError(f"{option} {key} is given twice ({found[key]!r} and {text!r})")
        found[key] = text
    return found or None


def show_deliveries(deliveries: list[dict[str, Any]]) -> None:
    """Each hook or notification that failed after a change, and that it is queued."""
    for delivery in deliveries:
        if not delivery["ok"]:
            click.echo(
                click.style("⚠ ", fg="yellow")
                + f"{delivery['kind']} ({delivery['name']}) failed: {delivery['error']}; "
                "it is queued: `skillstage outbox --retry` runs it again"
            )


def until_stopped(run: Callable[[threading.Event], None], *, grace: float = 5) -> None:
    """Run `run(stop)` in a thread until it returns or SIGTERM or SIGINT sets `stop`; its error
    is raised here.

    The loop runs off the main thread so the signal handler only sets an event the main thread
    is not waiting on (a handler that interrupted the main thread's own `stop.wait` could
    deadlock on the event's lock). After a stop, `run` has `grace` seconds to finish its work."""
    stop = threading.Event()
    failed: list[BaseException] = []

    def body() -> None:
        try:
            run(stop)
        except BaseException as exc:  # raised again in the main thread
            failed.append(exc)

    def request_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    thread = threading.Thread(target=body, name="skillstage-until-stopped", daemon=True)
    try:
        thread.start()
        while thread.is_alive():
            thread.join(0.5)
    finally:
        stop.set()
        thread.join(grace)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if failed:
        raise failed[0]


def one_skill(name: str | None, skill: str | None) -> str:
    """The skill a command is about, named as its NAME argument or with `--skill NAME` (the
    runbook's spelling): either, or both when they agree; a `UsageError` otherwise."""
    if name is not None and skill is not None and name != skill:
        raise UsageError(
            f"two different skills named: {name!r} (NAME) and {skill!r} (--skill)",
            hint="name the skill once, as NAME or as --skill NAME",
        )
    chosen = name if name is not None else skill
    if chosen is None:
        raise UsageError(
            "which skill? neither NAME nor --skill NAME was given",
            hint="pass the skill's name, as NAME or as --skill NAME",
        )
    return chosen
