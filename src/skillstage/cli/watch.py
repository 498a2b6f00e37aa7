"""`skillstage watch` (the loop that rolls back by itself), `hold` (keep automation off a skill)
and `disable` / `enable` (the kill switch)."""

from __future__ import annotations

import json
import sys
import threading

import click

from skillstage import api
from skillstage.cli.context import STAGE, CliContext, echo_json, until_stopped
from skillstage.errors import EXIT_FAILED, EXIT_OK, UsageError
from skillstage.store.controls import DISABLED, HOLD
from skillstage.watch.switches import SwitchResult
from skillstage.watch.watcher import PassResult


def _interval(text: str | None, default: float) -> float:
    from skillstage.rollout.plan import parse_duration

    if text is None:
        return default
    seconds = parse_duration(text)
    if seconds <= 0:
        raise UsageError("--interval must be more than 0", hint="e.g. --interval 30s")
    return seconds


@click.command("watch")
@click.option(
    "--once",
    is_flag=True,
    help="One pass, then exit: 1 if it acted or something it should do failed (a refused "
    "rollback, a step that errored), 0 if not (cron).",
)
@click.option(
    "--interval",
    metavar="DURATION",
    help="Time between passes, e.g. 30s, 1s, 5m (default: watch.interval_seconds, 30 s).",
)
@click.option("--dry-run", is_flag=True, help="Say what it would do; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print each pass as JSON (one a line).")
@click.pass_obj
def watch(obj: CliContext, once: bool, interval: str | None, dry_run: bool, as_json: bool) -> int:
    """Guard the live versions: roll back, abort or demote by itself when a trigger fires.

    Each pass ingests new executions, evaluates every rollback trigger for every version live
    in the watched stages (production by default: fidelity, quality, critical misses, false
    positives, exceptions, execution time against the version's baseline, dependency health
    checks), ticks every active rollout, and demotes staged versions that broke a demotion rule.
    A failing version is rolled back through the same rollback a person runs, the skill is held
    (no automated way back in until a person clears it), people are alerted, and a failure
    report is written. Alerts are sent once per episode, and again when it recovers.

    Runs until SIGTERM or Ctrl-C (the pass in progress finishes first), or once with --once.
    """
    project = obj.project()
    every = _interval(interval, project.config.watch.interval_seconds)
    if once:
        result = api.watch_pass(project, dry_run=dry_run)
        _show(result, as_json)
        return EXIT_FAILED if result.acted or result.errors else EXIT_OK

    def on_pass(result: PassResult) -> None:
        _show(result, as_json, quiet=True)
        sys.stdout.flush()  # a log file or a pipe sees each pass as it ends

    def run(stop: threading.Event) -> None:
        api.watch_loop(project, interval=every, dry_run=dry_run, stop=stop, on_pass=on_pass)

    if not as_json:
        stages = ", ".join(project.config.watch.stages or [list(project.config.stages)[-1]])
        click.echo(f"Watching {stages} every {every:g} s" + (" (dry run)" if dry_run else ""))
    until_stopped(run, grace=600)
    return EXIT_OK


def _show(result: PassResult, as_json: bool, *, quiet: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(result.to_dict(), ensure_ascii=False))
        return
    stamp = f"{result.started_at:%H:%M:%S}"
    for action in result.actions:
        click.echo(f"{stamp} {_action_line(action.to_dict())}")
    for alert in result.alerts:
        mark = "✓" if alert.change == "recovered" else "⚠"
        click.echo(f"{stamp} {mark} {alert.change} ({alert.severity}): {alert.message}")
    for error in result.errors:
        click.echo(click.style("⚠ ", fg="yellow") + error, err=True)
    if not quiet or result.actions or result.alerts:
        waiting = len(result.waiting)
        click.echo(
            f"{stamp} watched {result.watched} live version(s): "
            + (f"{len(result.actions)} action(s)" if result.actions else "all within limits")
            + (f"; {waiting} trigger(s) still filling their window" if waiting else "")
        )


def _action_line(action: dict[str, object]) -> str:
    what = f"{action['name']} {action['version'] or ''}".strip()
    reason = f"{action['reason']} ({action['metric']})" if action["metric"] else action["reason"]
    kind = action["kind"]
    if action["dry_run"] and kind == "rollback":
        return f"would roll back {what} in {action['stage']}: {reason}"
    if kind == "rollback":
        if not action["acted"]:
            return f"{what}: {action['detail']}"
        line = f"✗ rolled back {what} → {action['restored']} in {action['stage']}: {reason}"
        return line + (f"\n  report: {action['report']}" if action["report"] else "")
    if kind in ("held", "disabled", "blocked"):
        return f"⏸ {what} in {action['stage']}: {action['detail']}"
    if kind == "refused":
        return f"⚠ {what} in {action['stage']}: {action['detail']}"
    if kind == "demote":
        return f"✗ demoted {what} from {action['stage']}: {action['reason']}"
    return f"{kind} rollout of {what}: {reason or action['detail'] or ''}"


# -- holds ---------------------------------------------------------------------------------------


@click.group("hold")
def hold() -> None:
    """Keep automation off a skill: no automated rollback, demotion or rollout step, and no
    promotion or rollout into the stage, until a person clears it. Every automated rollback
    sets one."""


@hold.command("set")
@click.argument("name")
@click.option("--stage", type=STAGE, help="The stage to hold it in (default: every stage).")
@click.option("--reason", required=True, help="Why (required).")
@click.option("--by", "actor", metavar="ACTOR", help="Who holds it (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def hold_set(
    obj: CliContext, name: str, stage: str | None, reason: str, actor: str | None, as_json: bool
) -> int:
    """Freeze NAME for automation."""
    result = api.switch(
        obj.project(), name, kind=HOLD, on=True, stage=stage, actor=actor, reason=reason
    )
    return _switched(result, as_json)


@hold.command("clear")
@click.argument("name")
@click.option("--stage", type=STAGE, help="Clear only the hold in this stage.")
@click.option("--reason", required=True, help="Why it may go on (required).")
@click.option("--by", "actor", metavar="ACTOR", help="Who clears it (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def hold_clear(
    obj: CliContext, name: str, stage: str | None, reason: str, actor: str | None, as_json: bool
) -> int:
    """Let automation, promotions and rollouts act on NAME again."""
    result = api.switch(
        obj.project(), name, kind=HOLD, on=False, stage=stage, actor=actor, reason=reason
    )
    return _switched(result, as_json)


@hold.command("list")
@click.option("--all", "everything", is_flag=True, help="Also the holds cleared since.")
@click.option("--json", "as_json", is_flag=True, help="Print them as JSON.")
@click.pass_obj
def hold_list(obj: CliContext, everything: bool, as_json: bool) -> int:
    """The holds and kill switches set now."""
    found = api.switches(obj.project(), everything=everything)
    if as_json:
        echo_json([c.to_dict() for c in found])
        return EXIT_OK
    if not found:
        click.echo("No holds and no skill switched off.")
    for c in found:
        where = "every stage" if c.stage == "*" else c.stage
        what = "held" if c.kind == HOLD else "switched off"
        line = f"{c.name}: {what} in {where} since {c.set_at:%Y-%m-%d %H:%M} by {c.actor}"
        line += f": {c.reason}"
        if c.cleared_at is not None:
            line += f" — cleared {c.cleared_at:%Y-%m-%d %H:%M} by {c.cleared_by}"
            line += f": {c.clear_reason}"
        click.echo(line)
    return EXIT_OK


# -- the kill switch ----------------------------------------------------------------------------


@click.command("disable")
@click.argument("name")
@click.option("--stage", type=STAGE, help="Only in this stage (default: every stage).")
@click.option("--reason", required=True, help="Why (required).")
@click.option("--by", "actor", metavar="ACTOR", help="Who (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def disable(
    obj: CliContext, name: str, stage: str | None, reason: str, actor: str | None, as_json: bool
) -> int:
    """Switch NAME off: loaders and sync stop serving it within a second, nothing moves on disk.

    Agents no longer see it in their catalog; `resolve` answers arm "disabled". `skillstage
    enable NAME` serves the same version again.
    """
    result = api.switch(
        obj.project(), name, kind=DISABLED, on=True, stage=stage, actor=actor, reason=reason
    )
    return _switched(result, as_json)


@click.command("enable")
@click.argument("name")
@click.option("--stage", type=STAGE, help="Only the switch in this stage.")
@click.option("--reason", default="", help="Why (recorded).")
@click.option("--by", "actor", metavar="ACTOR", help="Who (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def enable(
    obj: CliContext, name: str, stage: str | None, reason: str, actor: str | None, as_json: bool
) -> int:
    """Serve NAME again after `skillstage disable`."""
    result = api.switch(
        obj.project(), name, kind=DISABLED, on=False, stage=stage, actor=actor, reason=reason
    )
    return _switched(result, as_json)


def _switched(result: SwitchResult, as_json: bool) -> int:
    if as_json:
        echo_json(result.to_dict())
    else:
        mark = click.style("✓ ", fg="green") if result.changed else "· "
        click.echo(mark + result.message)
    return EXIT_OK
