"""`skillstage stats` (the key promotion metrics) and `skillstage report NAME` (the promotion
report; with --failure, the failure analysis of the latest automated rollback)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from skillstage.cli.context import CliContext, echo_json, is_terminal, rule
from skillstage.errors import EXIT_FAILED, EXIT_OK, UsageError

_STATUS_COLOURS = {"ok": "green", "warn": "yellow", "alert": "red", "n/a": "white"}


def _styled(text: str, colour: str) -> str:
    return click.style(text, fg=colour) if is_terminal() else text


def _title(text: str) -> None:
    click.echo(rule(72))
    click.echo(click.style(text, bold=True) if is_terminal() else text)
    click.echo(rule(72))


@click.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON.")
@click.pass_obj
def stats(obj: CliContext, as_json: bool) -> int:
    """The key promotion metrics, each with its target and alert threshold: staged skills count,
    average time in staging, SLA breach count, promotion success rate and auto-deploy success
    rate (both over 30 days). Status: ok (target met), warn (target missed), alert (past the
    alert threshold), n/a (nothing to measure).

    The promotion success rate is of the promotions that passed their gates: a promotion its
    gates refused is counted apart (the skill was not ready), not as a failure; a failure is a
    move that stopped and was undone.

    Exits 1 when a metric is past its alert threshold, so a cron job can page on it.
    """
    from skillstage import api

    metrics = api.key_metrics(obj.project())
    if as_json:
        echo_json(metrics.to_dict())
    else:
        _title(f"KEY METRICS (staging: {', '.join(metrics.staging_stages)})")
        click.echo(f"  {'Metric':<26} {'Value':>9}  {'Target':>7}  {'Alert':>7}  Status")
        for metric in metrics.metrics:
            status = metric.status.ljust(5)
            click.echo(
                f"  {metric.objective.label:<26} {metric.display:>9}  "
                f"{metric.objective.target!s:>7}  {metric.objective.alert!s:>7}  "
                f"{_styled(status, _STATUS_COLOURS[metric.status])}"
            )
        click.echo()
        for metric in metrics.metrics:
            click.echo(f"  {metric.objective.label}: {metric.detail}")
    return EXIT_FAILED if metrics.alerts else EXIT_OK


def _line(label: str, value: Any) -> None:
    shown = "-" if value is None else value
    click.echo(f"  {label + ':':<16} {shown}")


def _render_report(document: dict[str, Any]) -> None:
    outcome = "promoted" if document["success"] else "refused"
    _title(
        f"PROMOTION REPORT: {document['component']} {document['version']} "
        f"({document['from_stage']} → {document['to_stage']}, {outcome})"
    )
    _line("Date", document["date"])
    _line("Promoted by", document["promoted_by"])
    click.echo("Quality gates")
    for key, value in document["quality_gates"].items():
        _line(key, value)
    criteria = document["promotion_criteria"]
    click.echo("Promotion criteria")
    _line("all_met", criteria["all_met"])
    for gate in criteria["details"]:
        click.echo(f"    {gate['status']:<5} {gate['gate']:<13} {gate['message']}")
    if criteria["forced"]:
        _line("forced", ", ".join(criteria["forced"]) + f" (reason: {criteria['reason']})")
    if criteria["approver"]:
        _line("approver", f"{criteria['approver']} ({criteria['approval_ticket'] or 'no ticket'})")
    deployment = document["deployment"]
    click.echo("Deployment")
    for key in ("status", "environment", "version", "deployment_id", "last_error"):
        if key in deployment:
            _line(key, deployment[key])
    validation = document["validation"]
    click.echo("Validation")
    for key in ("smoke_tests", "health_checks", "monitoring", "live_version"):
        _line(key, validation[key])
    for finding in validation["findings"]:
        click.echo(f"    {finding['severity']}: {finding['id']}: {finding['message']}")
    for note in validation["notes"]:
        click.echo(f"    note: {note}")


@click.command("report")
@click.argument("name")
@click.option(
    "--run-tests",
    is_flag=True,
    help="Run the live copy's test.sh as the smoke test (otherwise: the stage's smoke check "
    "after the promotion, if it has one).",
)
@click.option(
    "--failure",
    is_flag=True,
    help="The failure analysis of NAME's latest automated rollback or rollout abort instead.",
)
@click.option(
    "--issue",
    is_flag=True,
    help="Print the promotion's GitHub issue instead (Markdown: the stages, the quality gates "
    "with their measured values, every gate's result, blockers, approvals, the rollback plan).",
)
@click.option(
    "--output",
    "issue_file",
    type=click.Path(path_type=Path, dir_okay=False),
    help="With --issue or --gh: write the issue's Markdown to FILE.",
)
@click.option(
    "--gh",
    is_flag=True,
    help="Create the issue on GitHub with `gh issue create` (labels component:NAME and "
    "target:STAGE), queued in the outbox and retried like any side effect; prints its URL.",
)
@click.option(
    "--repo",
    metavar="OWNER/NAME",
    help="With --gh: the repository to create it in (default: gh's, from the current checkout).",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print the report's JSON (with --issue or --gh: the issue's).",
)
@click.option(
    "--html",
    "html_file",
    type=click.Path(path_type=Path, dir_okay=False, writable=True),
    help="Write NAME's dashboard page to FILE instead: one self-contained HTML file.",
)
@click.pass_obj
def report(
    obj: CliContext,
    name: str,
    run_tests: bool,
    failure: bool,
    issue: bool,
    issue_file: Path | None,
    gh: bool,
    repo: str | None,
    as_json: bool,
    html_file: Path | None,
) -> int:
    """The promotion report of NAME's latest promotion attempt: stages and date,
    quality gates, promotion criteria (every gate's result, what was forced), deployment (the
    deploy hook's outcome) and validation (re-run now on the live copy).

    With --failure: the failure analysis of the latest automated rollback or rollout
    abort of NAME (the trigger, the executions that tripped it, failed against restored, the
    patterns missed, the exceptions, the timeline against its targets, what to run next), as
    the watcher wrote it under <state_dir>/reports/. Exits 1 when there is none.

    With --html FILE: NAME's page of the web dashboard as one static file (its version
    timeline, the gates of its next move, charts per version and per rollout arm, the latest
    failure report, its history), with nothing loaded from elsewhere.

    With --issue: the promotion's GitHub issue (title "Promote NAME to STAGE"), to stdout or
    --output FILE. With --gh: that issue created with the GitHub CLI; without gh on PATH, the
    Markdown is written to a file (--output, else under the state directory) and the message
    says how to create the issue by hand. Exits 1 when gh fails (`skillstage outbox --retry`
    tries again).
    """
    if issue or gh or issue_file is not None or repo is not None:
        if failure or run_tests or html_file is not None:
            raise UsageError(
                "--issue and --gh are the promotion's issue: not with --failure, "
                "--run-tests or --html"
            )
        if not (issue or gh):
            raise UsageError("--output and --repo are for the issue", hint="add --issue or --gh")
        return _issue(obj, name, issue_file, gh=gh, repo=repo, as_json=as_json)
    if html_file is not None:
        if failure or run_tests or as_json:
            raise UsageError(
                "--html writes the whole page: not with --failure, --run-tests or --json"
            )
        # Jinja2 is imported here only: the command line's start-up does not pay for it.
        from skillstage.dashboard.pages import render_skill

        page = render_skill(obj.project(), name, static=True)
        try:
            html_file.write_text(page, encoding="utf-8")
        except OSError as exc:
            raise UsageError(
                f"cannot write {html_file}: {exc.strerror or exc}",
                path=html_file,
                hint="give a FILE in a directory you may write to",
            ) from None
        click.echo(f"wrote {html_file}")
        return EXIT_OK
    if failure:
        if run_tests:
            raise UsageError("--run-tests is for the promotion report, not with --failure")
        from skillstage.watch.report import failure_report

        found = failure_report(obj.project(), name)
        if as_json:
            echo_json(found.document)
        else:
            click.echo(found.markdown, nl=False)
        return EXIT_OK
    from skillstage.lifecycle import report as reports

    document = reports.report(obj.project(), name, run_tests=run_tests).to_dict()
    if as_json:
        echo_json(document)
    else:
        _render_report(document)
    return EXIT_OK


def _issue(
    obj: CliContext, name: str, output: Path | None, *, gh: bool, repo: str | None, as_json: bool
) -> int:
    from skillstage import api

    filed = api.promotion_issue(obj.project(), name, output=output, gh=gh, repo=repo)
    if as_json:
        echo_json(filed.to_dict())
    elif not gh:
        if filed.path is not None:
            click.echo(f"wrote {filed.path}")
        else:
            click.echo(filed.body, nl=False)
    elif filed.url is not None or filed.status == "delivered":
        click.echo(f"created {filed.url or '(gh printed no URL)'}  (Markdown: {filed.path})")
    else:
        click.echo(
            f"error: gh issue create failed after {filed.attempts} attempt(s): {filed.error}\n"
            f"  the issue is outbox item {filed.outbox_id} ({filed.status}); "
            f"`skillstage outbox --retry` tries again (Markdown: {filed.path})",
            err=True,
        )
    return EXIT_OK if not gh or filed.status == "delivered" else EXIT_FAILED
