"""`skillstage metrics`: record executions, ingest the inbox, and watch ingestion's lag."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from skillstage import api
from skillstage.cli.context import LIMIT, CliContext, echo_json, is_terminal, key_values
from skillstage.errors import EXIT_FAILED, EXIT_OK


@click.group()
def metrics() -> None:
    """Execution metrics: record executions of a skill version into the
    append-only inbox, ingest them into the store, and watch the ingestion lag."""


def _ids(value: str | None) -> list[str] | None:
    return [part.strip() for part in value.split(",") if part.strip()] if value else None


@metrics.command("record")
@click.option("--skill", "skill", required=True, help="The skill's name.")
@click.option("--version", "version", help="The skill version that ran.")
@click.option("--digest", help="The content digest of that version (sha256, 64 hex digits).")
@click.option("--id", "execution_id", help="The execution's id (default: a new UUID).")
@click.option(
    "--timestamp",
    type=click.DateTime(["%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"]),
    metavar="ISO-8601",
    help="When it ran, with a zone (e.g. 2026-12-01T10:00:00+00:00; default: now).",
)
@click.option("--fidelity", type=click.FloatRange(0, 1), help="Pattern fidelity, 0-1.")
@click.option("--quality", type=click.FloatRange(0, 1), help="Outcome quality, 0-1.")
@click.option("--time-ms", type=click.FloatRange(min=0), help="Execution time in milliseconds.")
@click.option("--followed", help="Ids of the patterns followed, comma-separated.")
@click.option("--missed", help="Ids of the patterns missed, comma-separated.")
@click.option("--exception", is_flag=True, help="The execution raised an exception.")
@click.option("--false-positive", is_flag=True, help="Its decision was a false positive.")
@click.option("--false-negative", is_flag=True, help="Its decision was a false negative.")
@click.option("--critical", is_flag=True, help="A critical failure (a missed high-stakes event).")
@click.option("--subject", help="A user or session key.")
@click.option("--tag", "tags", multiple=True, help="KEY=VALUE, repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print the record as JSON.")
@click.pass_obj
def record(
    obj: CliContext,
    skill: str,
    version: str | None,
    digest: str | None,
    execution_id: str | None,
    timestamp: dt.datetime | None,
    fidelity: float | None,
    quality: float | None,
    time_ms: float | None,
    followed: str | None,
    missed: str | None,
    exception: bool,
    false_positive: bool,
    false_negative: bool,
    critical: bool,
    subject: str | None,
    tags: tuple[str, ...],
    as_json: bool,
) -> int:
    """Append one execution record to the metrics inbox
    (<state_dir>/metrics/<skill>_executions.jsonl)."""
    fields: dict[str, Any] = {
        "version": version,
        "digest": digest,
        "execution_id": execution_id,
        "timestamp": timestamp,
        "pattern_fidelity": fidelity,
        "outcome_quality": quality,
        "execution_time_ms": time_ms,
        "patterns_followed": _ids(followed),
        "patterns_missed": _ids(missed),
        "exception": exception,
        "false_positive": false_positive,
        "false_negative": false_negative,
        "critical": critical,
        "subject": subject,
        "tags": key_values(tags, "--tag", "channel=web"),
    }
    written = api.record_execution(
        obj.project(), skill, **{k: v for k, v in fields.items() if v is not None}
    )
    if as_json:
        import msgspec

        echo_json(msgspec.to_builtins(written.to_dict()))  # times in ISO 8601, with a T
    else:
        click.echo(f"recorded {written.execution_id} for {skill}")
    return EXIT_OK


@contextmanager
def _progress_bar(enabled: bool, total: int) -> Iterator[Callable[[int], None] | None]:
    if not enabled or total <= 0:
        yield None
        return
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    bar = Progress(
        TextColumn("ingesting"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=True,
    )
    with bar:
        task = bar.add_task("ingest", total=total)
        yield lambda done: bar.advance(task, done)


@metrics.command("ingest")
@click.option(
    "--path",
    "inbox",
    type=click.Path(path_type=Path, file_okay=False),
    help="The inbox directory (default: metrics.inbox, <state_dir>/metrics).",
)
@click.option(
    "--batch-size",
    type=LIMIT,
    help="Records decoded and inserted together (default: metrics.batch_size, 1000).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the counts as JSON.")
@click.pass_obj
def ingest(obj: CliContext, inbox: Path | None, batch_size: int | None, as_json: bool) -> int:
    """Ingest new execution records from the inbox into the store.

    Safe to run at any time, as often as you like, and from cron: an execution id already stored
    is counted as a duplicate, never stored twice; each file is read on from where the last run
    stopped; an incomplete last line waits for the next run; a malformed line goes to the
    quarantine (`skillstage metrics quarantine`) and the rest goes on. A file that cannot be
    read is reported (exit 1) and the other files are ingested.
    """
    project = obj.project()
    from skillstage.metrics.ingest import pending_bytes
    from skillstage.store import Store

    with Store.open(project.database_url) as store:
        where = inbox or project.metrics_inbox
        total = pending_bytes(store, where) if is_terminal() and not as_json else 0
        with _progress_bar(is_terminal() and not as_json, total) as progress:
            result = api.ingest_metrics(
                project, inbox=inbox, batch_size=batch_size, progress=progress, store=store
            )
    outcome = EXIT_FAILED if result.unreadable else EXIT_OK
    if as_json:
        echo_json(result.to_dict())
        return outcome
    click.echo(
        f"read {result.read}, inserted {result.inserted}, duplicates {result.duplicates}, "
        f"quarantined {result.quarantined} ({result.files} file(s), {result.seconds:.2f} s)"
    )
    for path in result.restarted:
        click.echo(f"  {path} was truncated or rewritten: read again from the start")
    for path in result.waiting:
        click.echo(f"  {path} ends in an incomplete line: it waits for the next run")
    if result.quarantined:
        click.echo("  see the quarantined lines with `skillstage metrics quarantine`")
    _report_unreadable(result.unreadable)
    return outcome


def _report_unreadable(unreadable: list[tuple[str, str]]) -> None:
    for path, why in unreadable:
        click.echo(
            f"error: cannot read {path}: {why}; its records wait until it can be read "
            "(check its owner and permissions)",
            err=True,
        )


@metrics.command("lag")
@click.option(
    "--path",
    "inbox",
    type=click.Path(path_type=Path, file_okay=False),
    help="The inbox directory (default: metrics.inbox).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the lag as JSON.")
@click.pass_obj
def lag(obj: CliContext, inbox: Path | None, as_json: bool) -> int:
    """How far ingestion is behind: the age of the oldest record not yet ingested.

    A record's age is its timestamp's; each file is read up to its first pending record (writers
    append in time order), so a record written late with an old timestamp counts only once it is
    first in line. Exits 1 when it is older than metrics.lag_alert_hours (default: 1 hour),
    or when an inbox file cannot be read, for cron.
    """
    report = api.metrics_lag(obj.project(), inbox=inbox)
    if as_json:
        echo_json(report.to_dict())
    elif report.oldest is None:
        if not report.unreadable:
            click.echo("ingestion is up to date: no complete record waits in the inbox")
    else:
        hours = report.lag_seconds / 3600
        verdict = "ALERT: over" if report.alert else "within"
        click.echo(
            f"oldest record not yet ingested: {report.oldest:%Y-%m-%d %H:%M:%S} UTC "
            f"({hours:.2f} h ago; {verdict} the {report.alert_hours:g} h limit)"
        )
        for file in report.files:
            click.echo(f"  {file.path}: {file.pending_bytes} bytes waiting")
        if report.lag_seconds > report.alert_hours * 3600:
            click.echo("  run `skillstage metrics ingest` (and schedule it, e.g. hourly)")
    if not as_json:
        _report_unreadable(report.unreadable)
    return EXIT_FAILED if report.alert else EXIT_OK


@metrics.command("quarantine")
@click.option(
    "--limit",
    type=LIMIT,
    default=50,
    show_default=True,
    help="At most this many lines.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the lines as JSON.")
@click.pass_obj
def quarantine(obj: CliContext, limit: int, as_json: bool) -> int:
    """Lines ingestion could not store, newest first, with file, line number and reason."""
    from skillstage.store import Store
    from skillstage.store.executions import quarantined

    with Store.open(obj.project().database_url) as store:
        lines = quarantined(store, limit)
    if as_json:
        echo_json(
            [
                {
                    "path": q.path,
                    "line": q.line,
                    "reason": q.reason,
                    "content": q.content,
                    "at": q.at.isoformat(),
                }
                for q in lines
            ]
        )
        return EXIT_OK
    if not lines:
        click.echo("No quarantined lines.")
    for q in lines:
        click.echo(f"{q.path}:{q.line}: {q.reason}")
        if q.content:
            click.echo(f"    {q.content[:200]}")
    return EXIT_OK


@metrics.command("score")
@click.argument("log", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--skill", "name", required=True, help="The skill whose patterns.yaml to score by.")
@click.option("--version", help="The version that ran (default: the copy in its earliest stage).")
@click.option("--json", "as_json", is_flag=True, help="Print the score as JSON.")
@click.pass_obj
def score(obj: CliContext, log: Path, name: str, version: str | None, as_json: bool) -> int:
    """Score a breadcrumb log (JSONL, one event per line) against the skill's expected patterns
    (patterns.yaml) and record the execution with its pattern fidelity (followed / expected)."""
    scored = api.score_log(obj.project(), log, name, version=version)
    if as_json:
        echo_json(scored.to_dict())
    else:
        click.echo(
            f"{scored.name} {scored.version}: fidelity {scored.fidelity:.2f} "
            f"({len(scored.followed)}/{len(scored.followed) + len(scored.missed)} patterns)"
        )
        if scored.missed:
            click.echo(f"  missed: {', '.join(scored.missed)}")
        click.echo(f"  recorded as {scored.execution_id}")
    return EXIT_OK
