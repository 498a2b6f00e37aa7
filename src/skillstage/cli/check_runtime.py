"""`skillstage check-runtime`: load every production skill from threads and processes at once,
and say whether the runtime is fit to serve (load times, memory, cache, files, dependencies)."""

from __future__ import annotations

from typing import Any

import click

from skillstage.cli.context import CliContext, echo_json, is_terminal, rule

# The loads a check starts at once, threads and processes each (the API refuses more too).
_CONCURRENCY = click.IntRange(min=1, max=64)
_COLOURS = {"pass": "green", "warn": "yellow", "fail": "red"}
_WIDTH = 78


def _styled(status: str) -> str:
    text = status.upper().ljust(4)
    return click.style(text, fg=_COLOURS[status], bold=True) if is_terminal() else text


def _shown(value: Any, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "hit rate":
        return f"{value:.0%}"
    if isinstance(value, float):
        return f"p99 {_ms(value)}" if unit == "ms (p99)" else f"{value:g} {unit}"
    return f"{value} {unit}"


def _ms(value: float) -> str:
    return f"{value:.3f} ms" if value < 1 else f"{value:.2f} ms"


def _render(report: dict[str, Any]) -> None:
    click.echo(rule(_WIDTH))
    title = (
        f"RUNTIME CHECK: {len(report['skills'])} version(s) in {report['stage']}, "
        f"{report['concurrency']} threads and {report['concurrency']} processes"
    )
    click.echo(click.style(title, bold=True) if is_terminal() else title)
    click.echo(rule(_WIDTH))
    click.echo(f"  {'Criterion':<14} {'Status':<6} {'Value':>12}  Threshold")
    for criterion in report["criteria"]:
        click.echo(
            f"  {criterion['name']:<14} {_styled(criterion['status'])}   "
            f"{_shown(criterion['value'], criterion['unit']):>12}  {criterion['threshold']}"
        )
    click.echo()
    for criterion in report["criteria"]:
        click.echo(f"  {criterion['name']}: {criterion['summary']}")
        for evidence in criterion["evidence"]:
            where = f"  ({evidence['path']})" if evidence["path"] else ""
            click.echo(f"    - {evidence['detail']}{where}")
    click.echo()
    for mode in ("threads", "processes"):
        loads = report["loads"][mode]
        if loads["p50_ms"] is None:
            continue
        times = "  ".join(
            f"{key} {_ms(loads[f'{key}_ms'])}" for key in ("p50", "p95", "p99", "max")
        )
        click.echo(f"  {mode + ':':<11} {loads['loads_done']} loads  {times}")
    click.echo()
    verdict = report["verdict"]
    click.echo(f"Verdict: {_styled(verdict).strip()} ({report['seconds']:.2f} s)")


@click.command("check-runtime")
@click.option(
    "--concurrency",
    type=_CONCURRENCY,
    default=5,
    show_default=True,
    help="How many threads, and then how many processes, load every skill at the same time.",
)
@click.option("--skill", metavar="NAME", help="Check this production skill only.")
@click.option("--strict", is_flag=True, help="Exit 1 on a warning too, not only on a failure.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole report as JSON.")
@click.pass_obj
def check_runtime(
    obj: CliContext, concurrency: int, skill: str | None, strict: bool, as_json: bool
) -> int:
    """Load every production skill the way agent hosts do, and judge the runtime.

    Each skill (during a rollout, its candidate too) is loaded through the loader from
    --concurrency threads sharing one loader, a second time from that loader's cache, and from
    --concurrency separate processes at once, each with a loader of its own. Reported and
    judged, against [runtime_check] in the config:

    \b
    - skills         something is live to load (none: a warning)
    - skill_files    every served copy exists, reads, and holds the recorded digest
                     (missing, corrupted or modified copies fail, each named with its path)
    - dependencies   no dependency cycle (a → b → a fails); a dependency not live warns
    - thread_loads   every load from the threads done, none failed or over the timeout
    - process_loads  the same from the processes; p50, p95, p99 and max load times
    - memory         peak memory of a process that loaded every skill: warn at 75 MB,
                     fail at 100 MB by default
    - cache          hit rate of the second pass: warn below 90% by default

    Exits 0 when nothing failed (warnings are shown; with --strict they exit 1), 1 when a
    criterion failed.
    """
    from skillstage import api
    from skillstage.errors import EXIT_FAILED, EXIT_OK

    result = api.check_runtime(obj.project(), concurrency=concurrency, skill=skill)
    report = result.to_dict()
    if as_json:
        echo_json(report)
    else:
        _render(report)
    failing = ("fail", "warn") if strict else ("fail",)
    return EXIT_FAILED if result.verdict in failing else EXIT_OK
