"""`skillstage outbox`: side effects of promotions and rollbacks (hooks, notifications) and how
their delivery went; `--retry` runs the ones still waiting."""

from __future__ import annotations

import click

from skillstage.cli.context import CliContext, echo_json, is_terminal, rule
from skillstage.integrations.outbox import Delivery, OutboxReport, ReportItem
from skillstage.store.outbox import STATUSES

_STATUS_COLOURS = {"pending": "yellow", "delivering": "cyan", "failed": "red", "delivered": "green"}


@click.command("outbox")
@click.option(
    "--retry",
    "retry_now",
    is_flag=True,
    help="Deliver every pending and failed item now, with retries, and print the results. "
    "Exits 1 if any of them still fails.",
)
@click.option("--status", type=click.Choice(STATUSES), help="Only items in this status.")
@click.option("--json", "as_json", is_flag=True, help="Print the items (and results) as JSON.")
@click.pass_obj
def outbox(obj: CliContext, retry_now: bool, status: str | None, as_json: bool) -> int:
    """Show the outbox: deploy and re-index hooks and notifications queued by promotions and
    rollbacks, with their target, attempts, last error and age.

    A side effect that fails is retried (exponential backoff from hooks.retry_base_seconds,
    hooks.retries times) and recorded here; it never undoes the promotion. Fix the cause, then
    run `skillstage outbox --retry`.
    """
    from skillstage import api

    report, deliveries = api.outbox(obj.project(), status=status, retry=retry_now)
    if as_json:
        data = report.to_dict()
        if deliveries is not None:
            data["deliveries"] = [delivery.to_dict() for delivery in deliveries]
        echo_json(data)
    else:
        if deliveries is not None:
            _render_deliveries(deliveries)
        _render_report(report)
    return 1 if deliveries is not None and any(not d.ok for d in deliveries) else 0


def _styled(text: str, colour: str) -> str:
    return click.style(text, fg=colour) if is_terminal() else text


def _age(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.0f}h"
    return f"{seconds / 86400:.0f}d"


def _render_deliveries(deliveries: list[Delivery]) -> None:
    if not deliveries:
        click.echo("Nothing to retry.")
        return
    for delivery in deliveries:
        about = f"#{delivery.id} {delivery.kind}"
        if delivery.skill:
            about += f" {delivery.skill}"
        runs = f"{delivery.attempts} attempt{'s' if delivery.attempts != 1 else ''}"
        if delivery.ok:
            line = f"✓ {about} ({delivery.name}): delivered after {runs}"
            if delivery.deployment_id:
                line += f", deployment id {delivery.deployment_id}"
            click.echo(_styled(line, "green"))
        else:
            line = f"✗ {about} ({delivery.name}): failed after {runs}"
            if delivery.status == "pending":
                line += "; it will be retried"
            click.echo(_styled(line, "red"))
            for error_line in (delivery.error or "").splitlines():
                click.echo(f"    {error_line}")
    click.echo()


def _render_item(item: ReportItem) -> None:
    runs = f"{item.attempts} attempt{'s' if item.attempts != 1 else ''}"
    status = _styled(item.status, _STATUS_COLOURS.get(item.status, "white"))
    skill = f"  {item.skill}" if item.skill else ""
    click.echo(f"  #{item.id}  {item.kind}{skill}  {status}  {runs}  {_age(item.age_seconds)} ago")
    click.echo(f"      target: {item.target}")
    if item.output:
        click.echo(f"      output: {item.output}")
    if item.last_error and item.status != "delivered":
        lines = item.last_error.splitlines()
        click.echo(f"      last error: {lines[0]}")
        for line in lines[1:]:
            click.echo(f"        {line}")


def _render_report(report: OutboxReport) -> None:
    counts = ", ".join(f"{n} {status}" for status, n in report.counts.items() if n)
    click.echo(rule())
    title = f"OUTBOX ({len(report.items)} items{': ' + counts if counts else ''})"
    click.echo(click.style(title, bold=True) if is_terminal() else title)
    click.echo(rule())
    for item in report.items:
        _render_item(item)
    if report.counts.get("pending") or report.counts.get("failed"):
        click.echo()
        click.echo("Run `skillstage outbox --retry` to deliver the waiting items now.")
