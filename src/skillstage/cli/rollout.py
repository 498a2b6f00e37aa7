"""`skillstage rollout`: serve a new version to a share of a stage's traffic, step by step, and
`skillstage resolve`: which copy serves one request."""

from __future__ import annotations

import datetime as dt
from typing import Any

import click

from skillstage import api
from skillstage.cli.context import STAGE, CliContext, echo_json, key_values, show_deliveries
from skillstage.errors import EXIT_FAILED, EXIT_OK, UsageError
from skillstage.rollout.engine import RolloutStatus
from skillstage.rollout.plan import RolloutOutcome, parse_steps

_MARK = {"pass": "✓", "fail": "✗", "warn": "⚠", "skip": "-"}
_VERDICT_COLOUR = {"successful": "green", "failed": "red", "inconclusive": "yellow"}


@click.group()
def rollout() -> None:
    """Gradual rollouts: a new version serves a share of a stage's traffic (10%, then 50%, then
    all, by default) beside the version live there, and moves on, waits or is called off by
    what its executions show.

    A subject (a user, a session, a stream: whatever the agent host passes) always lands in the
    same bucket, so it keeps its version as the share grows. `rollout tick` (from cron, or the
    watcher) advances every rollout whose step succeeded and aborts those that failed; at 100%
    the new version is promoted, as by `skillstage promote`.
    """


def _steps(ctx: click.Context, param: click.Parameter, value: str | None) -> list[int] | None:
    if value is None:
        return None
    try:
        return parse_steps(value)
    except UsageError as exc:
        raise click.BadParameter(str(exc)) from None


@rollout.command("start")
@click.argument("name")
@click.option(
    "--candidate",
    metavar="VERSION|DIGEST",
    help="The version to roll out (default: the copy waiting in the stage before).",
)
@click.option(
    "--stage",
    type=STAGE,
    metavar="STAGE",
    help="The stage whose traffic it shares (default: the last one, production; with nothing of "
    "NAME live there, the latest stage before it where a version is).",
)
@click.option(
    "--steps",
    callback=_steps,
    metavar="10,50,100",
    help="Its share of the traffic at each step, in percent, ending at 100 (default: [rollout] "
    "steps, 10,50,100).",
)
@click.option(
    "--step-min-duration",
    metavar="DURATION",
    help="How long each step lasts at least, e.g. 30m, 1h (default: [rollout] "
    "step_min_duration_minutes, 60).",
)
@click.option(
    "--step-min-executions",
    type=click.IntRange(min=1),
    metavar="N",
    help="Executions each version needs in a step before it is judged (default: 100).",
)
@click.option(
    "--segment",
    "segments",
    multiple=True,
    metavar="KEY=VALUE",
    help="Only requests whose context has KEY=VALUE get the new version (a canary on low-risk "
    "traffic first); repeatable, all keys must match.",
)
@click.option(
    "--group", "group_id", metavar="ID", help="The bucketing group (default: the skill's name)."
)
@click.option(
    "--on-failure",
    type=click.Choice(["abort", "pause"]),
    help="When a step fails: abort (all traffic back, default) or pause for a person.",
)
@click.option("--dry-run", is_flag=True, help="Run the gates and show the plan; start nothing.")
@click.option("--force", is_flag=True, help="Start past failing gates (needs --reason).")
@click.option("--reason", help="Why: recorded with the rollout.")
@click.option("--by", "actor", metavar="ACTOR", help="Who starts it (default: $USER).")
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@click.pass_obj
def start(
    obj: CliContext,
    name: str,
    candidate: str | None,
    stage: str | None,
    steps: list[int] | None,
    step_min_duration: str | None,
    step_min_executions: int | None,
    segments: tuple[str, ...],
    group_id: str | None,
    on_failure: str | None,
    dry_run: bool,
    force: bool,
    reason: str | None,
    actor: str | None,
    as_json: bool,
) -> int:
    """Start rolling out NAME's candidate (the copy waiting in staged) into production.

    The gates a promotion into the stage runs come first, as `skillstage promote` would run
    them; with --dry-run nothing else happens.
    """
    outcome = api.rollout_start(
        obj.project(),
        name,
        candidate=candidate,
        stage=stage,
        steps=steps,
        step_min_duration=step_min_duration,
        step_min_executions=step_min_executions,
        segments=segments,
        group_id=group_id,
        on_failure=on_failure,
        actor=actor,
        dry_run=dry_run,
        force=force,
        reason=reason,
    )
    return _finish(outcome, as_json)


def _finish(outcome: RolloutOutcome, as_json: bool) -> int:
    for warning in outcome.warnings:
        click.echo(click.style("⚠ ", fg="yellow") + warning, err=True)
    if as_json:
        echo_json(outcome.to_dict())
    else:
        _render(outcome)
    return EXIT_OK if outcome.success else EXIT_FAILED


def _render(outcome: RolloutOutcome) -> None:
    for gate in outcome.gates:
        click.echo(f"  {_MARK[gate.status]} {gate.gate:<13} {gate.message}")
    rollout = outcome.rollout
    if not outcome.success and outcome.action in ("started", "blocked") and outcome.error:
        click.echo(click.style("✗ ", fg="red") + f"{outcome.name}: {outcome.error}")
    if rollout is not None:
        version = f"{rollout.candidate_version} ({rollout.candidate_digest[:12]})"
        if outcome.dry_run:
            click.echo(
                f"✓ Dry run: {outcome.name} {version} would serve {rollout.steps[0]}% of "
                f"{rollout.stage} beside {rollout.stable_version}, steps "
                + " → ".join(f"{s}%" for s in rollout.steps)
            )
        elif outcome.action == "started":
            click.echo(
                click.style("✓ ", fg="green")
                + f"Rollout #{rollout.id} started: {outcome.name} {version} serves "
                f"{rollout.weight}% of {rollout.stage} beside {rollout.stable_version}"
                + (f", only where {_segments(rollout.segments)}" if rollout.segments else "")
            )
        elif outcome.action == "completed":
            click.echo(
                click.style("✓ ", fg="green")
                + f"Rollout #{rollout.id} completed: {outcome.name} {rollout.candidate_version} "
                f"promoted to {rollout.stage}"
            )
        elif outcome.action == "aborted":
            click.echo(
                click.style("✗ ", fg="red")
                + f"Rollout #{rollout.id} aborted: all of {rollout.stage} is back on "
                f"{rollout.stable_version} ({rollout.reason})"
            )
        elif outcome.action in ("advanced", "paused", "resumed"):
            click.echo(
                f"ℹ Rollout #{rollout.id} of {outcome.name} {outcome.action}: "
                f"{rollout.candidate_version} now serves {rollout.weight}% of {rollout.stage}"
            )
    if outcome.verdict is not None and outcome.action in ("waiting", "blocked", "advanced"):
        verdict = outcome.verdict
        colour = _VERDICT_COLOUR.get(verdict.outcome)
        click.echo(
            "  analysis: "
            + click.style(verdict.outcome, fg=colour)
            + (": " + "; ".join(verdict.reasons) if verdict.reasons else "")
        )
    if outcome.error and outcome.action not in ("started", "blocked"):
        click.echo(click.style("✗ ", fg="red") + outcome.error)
    show_deliveries(outcome.deliveries)


def _segments(segments: dict[str, list[str]]) -> str:
    return " and ".join(f"{key} is {' or '.join(values)}" for key, values in segments.items())


def _when(at: dt.datetime | None) -> str:
    return at.strftime("%Y-%m-%d %H:%M UTC") if at else "-"


def _arm(summary: dict[str, Any]) -> str:
    def figure(key: str, digits: int = 3) -> str:
        value = summary.get(key)
        return "-" if value is None else f"{value:.{digits}f}"

    return (
        f"{summary['count']:>6} executions  fidelity {figure('pattern_fidelity')}  quality "
        f"{figure('outcome_quality')}  exceptions {figure('exception_rate')}  p95 "
        f"{figure('p95_ms', 1)} ms"
    )


@rollout.command("status")
@click.argument("name", required=False)
@click.option("--stage", type=STAGE, metavar="STAGE", help="Only rollouts into this stage.")
@click.option("--json", "as_json", is_flag=True, help="Print each rollout as JSON.")
@click.pass_obj
def status(obj: CliContext, name: str | None, stage: str | None, as_json: bool) -> int:
    """Each active rollout (of NAME): its step and share, each version's figures, the analysis
    of the step and what it waits for, the earliest it can complete, and how fast an abort
    takes effect."""
    found = api.rollout_status(obj.project(), name, stage=stage)
    if as_json:
        echo_json([entry.to_dict() for entry in found])
        return EXIT_OK
    if not found:
        click.echo("No active rollout" + (f" of {name}" if name else "") + ".")
        return EXIT_OK
    for entry in found:
        _show_status(entry)
    return EXIT_OK


def _show_status(entry: RolloutStatus) -> None:
    rollout, verdict = entry.rollout, entry.verdict
    steps = " → ".join(
        f"[{s}%]" if i == rollout.step_index else f"{s}%" for i, s in enumerate(rollout.steps)
    )
    click.echo(
        f"{rollout.name}: rollout #{rollout.id} into {rollout.stage}, {rollout.state}, "
        f"{rollout.candidate_version} beside {rollout.stable_version}"
    )
    click.echo(
        f"  steps:      {steps}"
        + ("  (paused: all traffic on stable)" if rollout.state == "paused" else "")
    )
    if rollout.segments:
        click.echo(f"  canary:     only where {_segments(rollout.segments)}")
    candidate, stable = verdict.candidate.to_dict(), verdict.stable.to_dict()
    click.echo(f"  candidate:  {rollout.candidate_version:<10} {_arm(candidate)}  (this step)")
    click.echo(f"  stable:     {rollout.stable_version:<10} {_arm(stable)}  (since the start)")
    colour = _VERDICT_COLOUR.get(verdict.outcome)
    click.echo("  analysis:   " + click.style(verdict.outcome, fg=colour))
    for reason in verdict.reasons:
        click.echo(f"              - {reason}")
    click.echo(f"  earliest completion: {_when(entry.earliest_completion)}")
    click.echo(
        f"  an abort takes effect in every loader within {entry.rollback_seconds:g} s "
        f"(`skillstage rollout abort {rollout.name} --reason …`)"
    )


def _change_command(action: str, summary: str) -> click.Command:
    @click.argument("name")
    @click.option("--stage", type=STAGE, metavar="STAGE", help="The rollout's stage.")
    @click.option("--by", "actor", metavar="ACTOR", help="Who acts (default: $USER).")
    @click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
    @click.pass_obj
    def command(
        obj: CliContext,
        name: str,
        stage: str | None,
        actor: str | None,
        as_json: bool,
        reason: str | None = None,
        force: bool = False,
    ) -> int:
        outcome = api.rollout_change(
            obj.project(), action, name, actor=actor, reason=reason, force=force, stage=stage
        )
        return _finish(outcome, as_json)

    command.__doc__ = summary
    if action == "advance":
        command = click.option(
            "--force", is_flag=True, help="Advance whatever the analysis says (needs --reason)."
        )(command)
    if action in ("advance", "pause", "abort"):
        command = click.option(
            "--reason", required=action == "abort", help="Why: recorded in history."
        )(command)
    return click.command(action)(command)


rollout.add_command(
    _change_command(
        "advance",
        "Move NAME's rollout to its next step (or complete it after the last) when the analysis "
        "says the step succeeded; with --force --reason, whatever it says.",
    )
)
rollout.add_command(
    _change_command(
        "pause",
        "Put all of NAME's traffic back on the stable version until `rollout resume`; the "
        "rollout keeps its step.",
    )
)
rollout.add_command(
    _change_command(
        "resume",
        "Serve NAME's candidate its step's share again; the step's minimum time and executions "
        "start over.",
    )
)
rollout.add_command(
    _change_command(
        "abort",
        "Call NAME's rollout off: all traffic back on the stable version at once, the candidate "
        "archived as failed with the reason, and an alert sent.",
    )
)
rollout.add_command(
    _change_command(
        "retry",
        "Start NAME's last aborted rollout again from its first step, with its settings (after "
        "a fix that did not change the candidate, or a false alarm).",
    )
)


@rollout.command("tick")
@click.option("--by", "actor", metavar="ACTOR", help="Who acts (default: skillstage-rollout).")
@click.option("--json", "as_json", is_flag=True, help="Print what was done as JSON.")
@click.pass_obj
def tick(obj: CliContext, actor: str | None, as_json: bool) -> int:
    """Evaluate every active rollout once (run it from cron, or let the watcher): advance those
    whose step succeeded (completing them after the last), abort (or pause) those that failed,
    and say what the others wait for. Exit 1 when one was aborted or could not go on."""
    outcomes = api.rollout_tick(obj.project(), actor=actor)
    if as_json:
        echo_json([outcome.to_dict() for outcome in outcomes])
    elif not outcomes:
        click.echo("No active rollout.")
    else:
        for outcome in outcomes:
            click.echo(f"{outcome.name}: {outcome.action}")
            _render(outcome)
    return EXIT_OK if all(o.success for o in outcomes) else EXIT_FAILED


@click.command("resolve")
@click.argument("name")
@click.option(
    "--subject", help="The user, session or stream asking (default: none: a random bucket)."
)
@click.option(
    "--context",
    "context",
    multiple=True,
    metavar="KEY=VALUE",
    help="The request's context, for canary segments; repeatable.",
)
@click.option("--stage", type=STAGE, metavar="STAGE", help="The stage (default: the last one).")
@click.option("--json", "as_json", is_flag=True, help="Print the resolution as JSON.")
@click.pass_obj
def resolve(
    obj: CliContext,
    name: str,
    subject: str | None,
    context: tuple[str, ...],
    stage: str | None,
    as_json: bool,
) -> int:
    """Which copy of NAME serves a request from SUBJECT: the version, its digest, its path and
    why (stable, or a rollout's candidate). For agent hosts written in shell."""
    resolution = api.resolve(
        obj.project(),
        name,
        subject=subject,
        context=key_values(context, "--context", "tier=internal"),
        stage=stage,
    )
    if as_json:
        echo_json(resolution.to_dict())
    else:
        bucket = (
            f", bucket {resolution.bucket}" + ("" if resolution.sticky else " (random)")
            if resolution.bucket is not None
            else ""
        )
        click.echo(
            f"{resolution.name} {resolution.version} ({resolution.digest[:12]}) {resolution.arm}"
            f"{bucket}\n{resolution.path}"
        )
    return EXIT_OK
