"""`skillstage eval`: run a skill version's benchmark cases (evals/evals.json)."""

from __future__ import annotations

import click

from skillstage import api
from skillstage.cli.context import CliContext, echo_json
from skillstage.errors import EXIT_FAILED, EXIT_OK


def _fraction(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


@click.command("eval")
@click.argument("name")
@click.option("--version", help="The version to run (default: the copy in its earliest stage).")
@click.option("--json", "as_json", is_flag=True, help="Print the results as JSON.")
@click.pass_obj
def eval_(obj: CliContext, name: str, version: str | None, as_json: bool) -> int:
    """Run every benchmark case of NAME (evals/evals.json) through its execute.sh: the case's
    input as JSON on stdin, a JSON result with `decision` (and optional `breadcrumbs`) on
    stdout. Each case is graded against its expected outcome, scored against patterns.yaml,
    and recorded as an execution; the run is kept for the `metrics` gate, which reads the
    latest run of the content when it leaves the first stage.

    Exits 1 when a case failed to run or was graded wrong.
    """
    outcome = api.run_eval(obj.project(), name, version=version)
    summary = outcome.run.summary
    if as_json:
        echo_json(outcome.to_dict())
    else:
        click.echo(f"{outcome.name} {outcome.version} ({outcome.digest[:12]})")
        for case in outcome.run.cases:
            verdict = "ok  " if case.correct else "FAIL"
            extra = f"  error: {_shown(case.error, lines=True)}" if case.error else ""
            click.echo(
                f"  {verdict} {_shown(case.case_id)}: expected {_shown(case.expected)}, "
                + (f"got {_shown(case.decision)}" if case.decision is not None else "no decision")
                + f"  fidelity {_fraction(case.fidelity)}  {case.execution_time_ms:.0f} ms{extra}"
            )
        click.echo(
            f"pass rate {_fraction(summary.pass_rate)}, outcome quality "
            f"{_fraction(summary.outcome_quality)}, pattern fidelity "
            f"{_fraction(summary.pattern_fidelity)}, false-positive rate "
            f"{_fraction(summary.false_positive_rate)}, critical false negatives "
            f"{summary.critical_false_negatives} ({summary.cases_executed}/"
            f"{summary.cases_total} cases executed)"
        )
        click.echo(f"results: {outcome.results_path}")
    return EXIT_OK if summary.pass_rate == 1.0 else EXIT_FAILED


# What a skill printed, shown with its control characters escaped: a `\r` or an escape sequence
# in a decision must not rewrite the line on a terminal ("FAIL" into "ok").
_CONTROLS = {c: f"\\x{c:02x}" for c in [*range(32), 127]}
_CONTROLS_BUT_NEWLINE = {c: text for c, text in _CONTROLS.items() if c != 10}


def _shown(value: object, *, lines: bool = False) -> str:
    """`value` with control characters escaped (newlines kept with `lines`)."""
    return str(value).translate(_CONTROLS_BUT_NEWLINE if lines else _CONTROLS)
