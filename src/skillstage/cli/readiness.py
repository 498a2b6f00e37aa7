"""`skillstage status` (promotion readiness) and `skillstage compare` (two versions)."""

from __future__ import annotations

import click

from skillstage.cli.context import STAGE, CliContext, echo_json, is_terminal, one_skill
from skillstage.errors import EXIT_FAILED, EXIT_OK

_MARKS = {"pass": ("PASS", "green"), "fail": ("FAIL", "red"), "warn": ("WARN", "yellow")}


def _mark(status: str) -> str:
    text, colour = _MARKS.get(status, (status.upper(), "white"))
    return click.style(f"{text:<4}", fg=colour, bold=True) if is_terminal() else f"{text:<4}"


@click.command()
@click.argument("name", required=False)
@click.option("--skill", metavar="NAME", help="The skill to check: the same as NAME.")
@click.option(
    "--target",
    "--to",
    "--target-state",
    "to_stage",
    type=STAGE,
    help="The stage to check readiness for (default: the next).",
)
@click.option(
    "--from",
    "from_stage",
    type=STAGE,
    help="The stage whose copy to check (default: where it is).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the readiness as JSON.")
@click.pass_obj
def status(
    obj: CliContext,
    name: str | None,
    skill: str | None,
    to_stage: str | None,
    from_stage: str | None,
    as_json: bool,
) -> int:
    """Is NAME ready to move? Every gate of its transition with the actual value, the
    requirement, pass/fail and what is missing.

    Ingests the metrics inbox first. Nothing moves. Exits 0 when ready, 1 when not.
    """
    from skillstage import api

    name = one_skill(name, skill)
    readiness = api.readiness(obj.project(), name, to_stage=to_stage, from_stage=from_stage)
    if as_json:
        echo_json(readiness.to_dict())
        return EXIT_OK if readiness.ready else EXIT_FAILED
    click.echo(
        f"{readiness.name} {readiness.version or '?'} ({(readiness.digest or '?')[:12]}): "
        f"{readiness.from_stage} → {readiness.to_stage}"
    )
    if readiness.error:
        click.echo(f"  {readiness.error}")
    for gate in readiness.gates:
        click.echo(f"  {_mark(gate.status)} {gate.gate}: {gate.message}")
        if gate.criteria:
            for criterion in gate.criteria:
                sign = "✓" if criterion["passed"] else "✗"
                actual = criterion["actual"]
                shown = (
                    "no data"
                    if actual is None
                    else f"{actual:.3f}"
                    if isinstance(actual, float)
                    else str(actual)
                )
                line = (
                    f"       {sign} {criterion['name']}: {shown} (required {criterion['required']})"
                )
                if not criterion["passed"] and criterion["missing"]:
                    line += f" — {criterion['missing']}"
                click.echo(line)
        else:
            for detail in gate.details:
                click.echo(f"       {detail}")
    verdict = "READY" if readiness.ready else "NOT READY"
    click.echo(f"{verdict} for {readiness.to_stage}")
    return EXIT_OK if readiness.ready else EXIT_FAILED


def _value(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


@click.command()
@click.argument("name")
@click.argument("version_a")
@click.argument("version_b")
@click.option("--json", "as_json", is_flag=True, help="Print the comparison as JSON.")
@click.pass_obj
def compare(obj: CliContext, name: str, version_a: str, version_b: str, as_json: bool) -> int:
    """Compare two versions of NAME metric by metric (an A/B comparison).

    VERSION_A and VERSION_B are versions (1.2.0), digests or digest prefixes, or stages
    (prototype: the executions of the version there during its stay). For each metric: both
    values, the difference, a statistical test (Mann-Whitney U for scores and times, a
    two-proportion z-test for rates) with its p-value and effect size. Exits 1 when B is
    significantly worse than A on any metric.
    """
    from skillstage import api

    result = api.compare_versions(obj.project(), name, version_a, version_b)
    comparison = result.comparison
    if as_json:
        echo_json(result.to_dict())
        return EXIT_FAILED if comparison.regressions else EXIT_OK
    click.echo(
        f"{name}: A = {result.a.label}, {comparison.count_a} executions; "
        f"B = {result.b.label}, {comparison.count_b} executions"
    )
    click.echo(f"  {'metric':<22} {'A':>9} {'B':>9} {'B-A':>9} {'test':<17} {'p':>8} {'effect':>8}")
    for m in comparison.metrics:
        verdict = "insufficient data" if m.insufficient_data else "WORSE" if m.worse else ""
        click.echo(
            f"  {m.metric:<22} {_value(m.a):>9} {_value(m.b):>9} {_value(m.difference):>9} "
            f"{m.test:<17} {_value(m.p_value):>8} {_value(m.effect_size):>8}  {verdict}"
        )
    short = min(comparison.count_a, comparison.count_b) < comparison.min_sample
    if short:
        click.echo(
            f"fewer than {comparison.min_sample} executions on a side: the tests say nothing yet"
        )
    elif comparison.unmeasured:
        click.echo(
            f"B has fewer than {comparison.min_sample} values of "
            + ", ".join(m.metric for m in comparison.unmeasured)
            + " (A has enough): nothing can be said about "
            + ("it" if len(comparison.unmeasured) == 1 else "them")
            + (
                f"; B is worse on: {', '.join(m.metric for m in comparison.regressions)}"
                if comparison.regressions
                else ""
            )
        )
    elif comparison.regressions:
        click.echo("B is worse on: " + ", ".join(m.metric for m in comparison.regressions))
    else:
        click.echo(f"no metric significantly worse in B (alpha {comparison.alpha:g})")
    return EXIT_FAILED if comparison.regressions else EXIT_OK
