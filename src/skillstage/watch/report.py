"""The failure analysis report of an automated rollback or rollout abort (seed 002 §3.2 step 5:
"Within 1 hour: Generate failure analysis report").

The watcher writes one after each automated rollback or abort, and on its next pass for any that
has none yet (a watcher killed in between catches up). It is made from the store alone: no model
is asked and nothing leaves the machine, so the same store gives the same report, and writing it
again rewrites the same files. It says what happened and when, the trigger and its metric, the
executions that tripped it, the failed version beside the restored one, the patterns missed and
the exceptions seen, the timeline against seed 002's targets (alert within 1 min, archived
within 5, re-indexed within 10, report within the hour), and the commands that come next.

Two files under `<state_dir>/reports/`: `<name>-<event id>-failure.md` for people and
`<name>-<event id>-failure.json` (the same facts) for scripts, each written whole or not at
all; the timeline's "report_written" step records the Markdown file.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from skillstage.config import Project, Thresholds
from skillstage.errors import SkillstageError, UsageError
from skillstage.store import Event, Store, Transaction
from skillstage.store import controls as store_controls
from skillstage.store import metrics as store_metrics
from skillstage.store import rollouts as store_rollouts
from skillstage.watch.report_markdown import render_markdown

if TYPE_CHECKING:
    from skillstage.metrics.patterns import Pattern

REPORT_STEP = "report_written"
FAILURE_KINDS = ("rollback", "rollout_abort")
SCHEMA = "skillstage.failure-report/1"

# How much of each list a report shows: the newest execution ids of the window, the newest
# exceptions, the most-missed patterns.
SHOWN_IDS = 20
SHOWN_EXCEPTIONS = 5
SHOWN_PATTERNS = 10
_TEXT_LIMIT = 300  # characters of a tag's exception text


@dataclass(frozen=True)
class Target:
    """Seed 002 §3.2's deadline for one step of the sequence, from the event."""

    seconds: float
    label: str


# "Immediate" is taken as within a minute: loaders see the switch within their refresh interval.
TARGETS = {
    "switched": Target(60, "immediately"),
    "alert_sent": Target(60, "within 1 min"),
    "archived": Target(300, "within 5 min"),
    "reindexed": Target(600, "within 10 min"),
    REPORT_STEP: Target(3600, "within 1 hour"),
}
# The steps each kind of failure goes through. An abort archives nothing and re-indexes nothing:
# the candidate stays where it waited, and nothing live changed on disk.
EXPECTED_STEPS = {
    "rollback": ("switched", "alert_sent", "archived", "reindexed", REPORT_STEP),
    "rollout_abort": ("switched", "alert_sent", "archived", REPORT_STEP),
}

# Tag keys an execution record may carry exception text under, and pattern information under
# (ingestion keeps `patterns_missed` as a count: the ids survive only in tags).
_EXCEPTION_TAGS = (
    "exception",
    "exception_type",
    "exception_message",
    "error",
    "error_type",
    "error_message",
    "traceback",
)
_MISSED_TAGS = ("patterns_missed", "missed_patterns")
_BREADCRUMB_TAG = "breadcrumbs"


class NoFailureReportError(SkillstageError):
    """A skill has no automated rollback or abort on record, so no failure report."""

    code = "NO_FAILURE_REPORT"


@dataclass(frozen=True)
class FailureReport:
    """A failure report as `skillstage report NAME --failure` shows it."""

    document: dict[str, Any]
    markdown: str
    markdown_path: Path
    json_path: Path


def report_paths(project: Project, name: str, event_id: int) -> tuple[Path, Path]:
    """(Markdown, JSON) paths of the failure report of event `event_id` of skill `name`."""
    base = project.state_dir / "reports" / f"{name}-{event_id}-failure"
    return base.with_suffix(".md"), base.with_suffix(".json")


# -- finding the events --------------------------------------------------------------------------


def _automated_sql(tx: Transaction) -> str:
    # `automated` is set (to true) only on the watcher's rollbacks and aborts. SQLite's
    # json_extract gives 1 for true, PostgreSQL's ->> gives 'true'.
    flag = f"CAST({tx.dialect.json_text('e.details', 'automated')} AS TEXT)"
    kinds = ", ".join(f"'{kind}'" for kind in FAILURE_KINDS)
    return f"e.kind IN ({kinds}) AND {flag} IN ('1', 'true')"


def _failure_event(tx: Transaction, event_id: int) -> Event | None:
    """Event `event_id` if it is an automated rollback or abort."""
    found = tx.events(event_id=event_id, where=_automated_sql(tx), limit=1)
    return found[0] if found else None


def _latest_failure_id(tx: Transaction, name: str) -> int | None:
    found = tx.query(
        "SELECT e.id FROM event e JOIN skill s ON s.id = e.skill_id"
        f" WHERE s.name = :name AND {_automated_sql(tx)} ORDER BY e.at DESC, e.id DESC LIMIT 1",
        {"name": name},
    )
    return int(found[0][0]) if found else None


def failure_events_without_report(store: Store, limit: int = 100) -> list[int]:
    """Ids of automated rollbacks and aborts with no "report_written" step yet, oldest first
    (the watcher writes each one's report: how a watcher killed before writing it catches up)."""
    with store.reading() as tx:
        rows = tx.query(
            f"SELECT e.id FROM event e WHERE {_automated_sql(tx)} AND NOT EXISTS"
            " (SELECT 1 FROM action_step a WHERE a.event_id = e.id AND a.step = :step)"
            " ORDER BY e.id LIMIT :limit",
            {"step": REPORT_STEP, "limit": limit},
        )
    return [int(row[0]) for row in rows]


# -- writing -------------------------------------------------------------------------------------


def write_failure_report(project: Project, store: Store, event_id: int) -> Path:
    """Write the failure report of automated rollback or abort `event_id` (Markdown and JSON,
    each atomically) and record its "report_written" step; the Markdown file's path.

    Idempotent: once the step is recorded its time is the report's, so writing again rewrites
    the same content (while the store says the same) and keeps the one step. Raises
    `UsageError` when the event is not an automated rollback or abort."""
    with store.reading() as tx:
        event = _failure_event(tx, event_id)
        if event is None:
            raise UsageError(
                f"event #{event_id} is not an automated rollback or rollout abort",
                hint="`skillstage history --json` lists the events with their ids",
            )
        written_at = _recorded_at(tx, event_id)
    at = written_at or dt.datetime.now(dt.UTC)
    markdown_path, _ = _write(project, store, event, at)
    with store.atomic() as tx:
        recorded = store_controls.record_step(
            tx, event_id, REPORT_STEP, at=at, detail=str(markdown_path)
        )
        winner = None if recorded else _recorded_at(tx, event_id)
    if winner is not None and winner != at:
        # Another writer recorded its step first: its time is the report's.
        _write(project, store, event, winner)
    return markdown_path


def _recorded_at(tx: Transaction, event_id: int) -> dt.datetime | None:
    for step in store_controls.steps(tx, [event_id]).get(event_id, []):
        if step.step == REPORT_STEP:
            return step.at
    return None


def _write(project: Project, store: Store, event: Event, at: dt.datetime) -> tuple[Path, Path]:
    from skillstage.lifecycle.fs import write_atomically

    markdown_path, json_path = report_paths(project, event.name, event.id)
    document = build_document(project, store, event, written_at=at)
    document["files"] = {"markdown": str(markdown_path), "json": str(json_path)}
    markdown_path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(json_path, json.dumps(document, indent=2, ensure_ascii=False) + "\n")
    write_atomically(markdown_path, render_markdown(document))
    return markdown_path, json_path


# -- reading -------------------------------------------------------------------------------------


def latest_failure(project: Project, store: Store, name: str) -> dict[str, Any] | None:
    """The JSON of the newest failure report of `name`, written first if its files are missing
    (or unreadable); None when `name` has no automated rollback or abort on record."""
    with store.reading() as tx:
        event_id = _latest_failure_id(tx, name)
    if event_id is None:
        return None
    markdown_path, json_path = report_paths(project, name, event_id)
    if markdown_path.exists():
        try:
            document: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
            return document
        except (OSError, ValueError):
            pass  # missing or cut: written again below
    write_failure_report(project, store, event_id)
    written: dict[str, Any] = json.loads(json_path.read_text(encoding="utf-8"))
    return written


def failure_report(project: Project, name: str) -> FailureReport:
    """The newest failure report of `name` on the project's store (what `skillstage report NAME
    --failure` shows). Raises `NoFailureReportError` (exit 1) when there is none."""
    with Store.open(project.database_url) as store:
        document = latest_failure(project, store, name)
    if document is None:
        raise NoFailureReportError(
            f"no automated rollback or abort of {name} on record",
            hint=f"`skillstage history {name}` lists what happened to it",
        )
    markdown_path, json_path = report_paths(project, name, int(document["event_id"]))
    try:
        markdown = markdown_path.read_text(encoding="utf-8")
    except OSError:
        markdown = render_markdown(document)  # removed since: the JSON holds the same facts
    return FailureReport(document, markdown, markdown_path, json_path)


# -- the facts -----------------------------------------------------------------------------------


def _when(at: dt.datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _mean(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(sum(present) / len(present), 6) if present else None


def build_document(
    project: Project, store: Store, event: Event, *, written_at: dt.datetime
) -> dict[str, Any]:
    """The facts of the failure report of `event` (an automated rollback or abort), as JSON
    values; `written_at` is the time of its "report_written" step."""
    details = event.details or {}
    with store.reading() as tx:
        skill_id = tx.skill_id(event.name)
        assert skill_id is not None  # the event is the skill's
        rollout = None
        if event.kind == "rollback":
            stage = event.from_stage or ""
            failed = (str(details.get("failed_version")), str(details.get("failed_digest")))
            back = (event.version or "", event.digest or "")
            # With no earlier version the failed one went back a stage: nothing was restored.
            restored: tuple[str, str] | None = None if back[1] == failed[1] else back
            since = _stay_start(tx, skill_id, stage, failed[1], event.at)
            only_stage = None
        else:
            found = store_rollouts.rollouts(tx, rollout_id=int(details.get("rollout_id", -1)))
            rollout = found[0] if found else None
            stage = event.to_stage or (rollout.stage if rollout else "")
            failed = (event.version or "", event.digest or "")
            restored = (rollout.stable_version, rollout.stable_digest) if rollout else None
            since = rollout.started_at if rollout else None
            # As the rollout's analysis reads it: the candidate's executions in this stage.
            only_stage = stage
        triggers = project.config.triggers.for_skill(
            event.name, _frontmatter(tx, skill_id, failed[1]).get("metadata")
        )
        size = max(triggers.window, triggers.rate_window)
        window = _executions(
            tx, skill_id, failed[1], since, event.at, only_stage=only_stage, limit=size
        )
        exceptions = _executions(
            tx,
            skill_id,
            failed[1],
            since,
            event.at,
            only_stage=only_stage,
            limit=SHOWN_EXCEPTIONS,
            exceptions_only=True,
        )
        exception_count = _count_exceptions(tx, skill_id, failed[1], since, event.at, only_stage)
        comparison = _comparison(project, tx, skill_id, event, failed, restored)
        steps = store_controls.steps(tx, [event.id]).get(event.id, [])
        hold = _hold(tx, event)
    what = "automated rollback" if event.kind == "rollback" else "automated rollout abort"
    document: dict[str, Any] = {
        "schema": SCHEMA,
        "event_id": event.id,
        "skill": event.name,
        "kind": event.kind,
        "what": what,
        "stage": stage,
        "at": event.at.isoformat(),
        "actor": event.actor,
        "trigger": {"reason": event.reason, "metric": event.trigger_metric},
        "failed": {"version": failed[0], "digest": failed[1]},
        "restored": (
            {"version": restored[0], "digest": restored[1], "stage": stage}
            if restored is not None
            else None
        ),
        "moved_to": event.to_stage if restored is None else None,
        "rollout": _rollout_facts(rollout, details),
        "hold": hold,
        "window": _window_facts(window, size, triggers.window, triggers.rate_window, since, event),
        "comparison": comparison,
        "patterns_missed": _pattern_facts(project, event.name, failed, window),
        "exceptions": {
            "count": exception_count,
            "in_window": sum(1 for row in window if row.exception),
            "since": _when(since),
            "until": event.at.isoformat(),
            "newest": [
                {
                    "execution_id": row.execution_id,
                    "timestamp": row.timestamp.isoformat(),
                    "subject": row.subject,
                    "text": _exception_text(row.tags),
                }
                for row in exceptions
            ],
        },
        "timeline": _timeline(project, event, steps, written_at),
        "commands": _commands(event, stage, failed, restored, rollout),
        "written_at": written_at.isoformat(),
    }
    return document


def _stay_start(
    tx: Transaction, skill_id: int, stage: str, digest: str, before: dt.datetime
) -> dt.datetime | None:
    """When the stay of `digest` in `stage` that ended by `before` began."""
    for stay in store_metrics.tenures(tx, skill_id, stage):
        if stay.digest == digest and stay.entered_at <= before:
            return stay.entered_at
    return None


def _frontmatter(tx: Transaction, skill_id: int, digest: str) -> dict[str, Any]:
    value = tx.scalar(
        "SELECT frontmatter FROM skill_version WHERE skill_id = :skill_id AND digest = :digest",
        {"skill_id": skill_id, "digest": digest},
    )
    found = tx.dialect.read_json(value) if value is not None else None
    return found if isinstance(found, dict) else {}


@dataclass(frozen=True)
class _Execution:
    execution_id: str
    timestamp: dt.datetime
    pattern_fidelity: float | None
    outcome_quality: float | None
    execution_time_ms: float | None
    patterns_followed: int | None
    patterns_missed: int | None
    exception: bool
    false_positive: bool
    false_negative: bool
    critical: bool
    subject: str | None
    tags: dict[str, Any] | None


def _where(
    tx: Transaction,
    skill_id: int,
    digest: str,
    since: dt.datetime | None,
    until: dt.datetime,
    only_stage: str | None,
) -> tuple[str, dict[str, Any]]:
    """The executions of `digest` in use (not benchmark runs) from `since` to before `until`."""
    sql = (
        " FROM execution WHERE skill_id = :skill_id AND digest = :digest"
        ' AND benchmark = :benchmark AND "timestamp" < :until'
    )
    params: dict[str, Any] = {
        "skill_id": skill_id,
        "digest": digest,
        "benchmark": False,
        "until": tx.dialect.time(until),
    }
    if since is not None:
        sql += ' AND "timestamp" >= :since'
        params["since"] = tx.dialect.time(since)
    if only_stage is not None:
        # (a record that names no stage counts, as in the rollout's analysis)
        tag = f"CAST({tx.dialect.json_text('tags', 'stage')} AS TEXT)"
        sql += f" AND (tags IS NULL OR {tag} IS NULL OR {tag} = :stage)"
        params["stage"] = only_stage
    return sql, params


def _executions(
    tx: Transaction,
    skill_id: int,
    digest: str,
    since: dt.datetime | None,
    until: dt.datetime,
    *,
    only_stage: str | None,
    limit: int,
    exceptions_only: bool = False,
) -> list[_Execution]:
    """The newest `limit` of those executions, newest first."""
    where, params = _where(tx, skill_id, digest, since, until, only_stage)
    if exceptions_only:
        where += " AND exception"
    d = tx.dialect
    rows = tx.query(
        'SELECT execution_id, "timestamp", pattern_fidelity, outcome_quality, execution_time_ms,'
        " patterns_followed, patterns_missed, exception, false_positive, false_negative,"
        f" critical, subject, tags{where}"
        ' ORDER BY "timestamp" DESC, execution_id DESC LIMIT :limit',
        {**params, "limit": limit},
    )
    return [
        _Execution(
            row[0],
            d.read_time(row[1]),  # type: ignore[arg-type]
            row[2],
            row[3],
            row[4],
            row[5],
            row[6],
            bool(row[7]),
            bool(row[8]),
            bool(row[9]),
            bool(row[10]),
            row[11],
            d.read_json(row[12]),
        )
        for row in rows
    ]


def _count_exceptions(
    tx: Transaction,
    skill_id: int,
    digest: str,
    since: dt.datetime | None,
    until: dt.datetime,
    only_stage: str | None,
) -> int:
    where, params = _where(tx, skill_id, digest, since, until, only_stage)
    return int(tx.scalar(f"SELECT COUNT(*){where} AND exception", params) or 0)


def _window_facts(
    window: list[_Execution],
    size: int,
    score_window: int,
    rate_window: int,
    since: dt.datetime | None,
    event: Event,
) -> dict[str, Any]:
    """The failed version's newest executions before the event: the ones its triggers read
    (fidelity and quality the newest `score_window`, the rates the newest `rate_window`)."""
    newest = window[:score_window]
    return {
        "size": size,
        "score_window": score_window,
        "rate_window": rate_window,
        "since": _when(since),
        "until": event.at.isoformat(),
        "count": len(window),
        "first": _when(window[-1].timestamp) if window else None,
        "last": _when(window[0].timestamp) if window else None,
        "execution_ids": [row.execution_id for row in window[:SHOWN_IDS]],
        "mean_fidelity": _mean([row.pattern_fidelity for row in window]),
        "mean_quality": _mean([row.outcome_quality for row in window]),
        "score_window_mean_fidelity": _mean([row.pattern_fidelity for row in newest]),
        "score_window_mean_quality": _mean([row.outcome_quality for row in newest]),
        "mean_execution_time_ms": _mean([row.execution_time_ms for row in window]),
        "exceptions": sum(1 for row in window if row.exception),
        "false_positives": sum(1 for row in window if row.false_positive),
        "false_negatives": sum(1 for row in window if row.false_negative),
        "critical_false_negatives": sum(1 for row in window if row.false_negative and row.critical),
    }


def _comparison(
    project: Project,
    tx: Transaction,
    skill_id: int,
    event: Event,
    failed: tuple[str, str],
    restored: tuple[str, str] | None,
) -> dict[str, Any]:
    """The restored version (A, the baseline) against the failed one (B) as `skillstage compare`
    judges them, on their executions before the event (so the report does not drift as the
    restored version runs on); the error instead when they cannot be compared."""
    from skillstage.lifecycle.readiness import VersionComparison, resolve_side, sample_rows
    from skillstage.metrics.compare import compare_samples
    from skillstage.metrics.summary import as_sample, summarise

    if restored is None:
        return {
            "error": f"no earlier version to compare with: {event.name} {failed[0]} went back "
            f"to {event.to_stage}"
        }
    # The thresholds `skillstage compare` judges with: the transition's that has a regression
    # check.
    thresholds = next(
        (t.thresholds for t in project.config.transitions if t.thresholds.forbid_regression),
        Thresholds(),
    )
    try:
        a = resolve_side(project, tx, skill_id, event.name, restored[1])
        b = resolve_side(project, tx, skill_id, event.name, failed[1])
        a, b = dataclasses.replace(a, until=event.at), dataclasses.replace(b, until=event.at)
        rows_a, rows_b = sample_rows(tx, skill_id, a), sample_rows(tx, skill_id, b)
        result = VersionComparison(
            event.name,
            a,
            b,
            summarise(rows_a),
            summarise(rows_b),
            compare_samples(as_sample(rows_a), as_sample(rows_b), **thresholds.comparing()),
        )
    except (SkillstageError, ValueError) as exc:
        return {"error": exc.message if isinstance(exc, SkillstageError) else str(exc)}
    return result.to_dict()


def _hold(tx: Transaction, event: Event) -> dict[str, Any] | None:
    """The hold this event set, and whether a person has cleared it since."""
    for found in store_controls.controls(
        tx, kind=store_controls.HOLD, name=event.name, set_only=False
    ):
        if (found.details or {}).get("event_id") == event.id:
            return {
                "stage": found.stage,
                "set_at": found.set_at.isoformat(),
                "reason": found.reason,
                "cleared_at": _when(found.cleared_at),
                "cleared_by": found.cleared_by,
                "clear_reason": found.clear_reason,
            }
    return None


def _rollout_facts(
    rollout: store_rollouts.RolloutRecord | None, details: dict[str, Any]
) -> dict[str, Any] | None:
    if rollout is None:
        return None if "rollout_id" not in details else {"id": details["rollout_id"]}
    verdict = details.get("verdict") or {}
    return {
        "id": rollout.id,
        "candidate_stage": rollout.candidate_stage,
        "steps": rollout.steps,
        "share": rollout.steps[rollout.step_index] if rollout.steps else None,
        "started_at": rollout.started_at.isoformat(),
        "step_started_at": rollout.step_started_at.isoformat(),
        "verdict_reasons": list(verdict.get("reasons") or []),
    }


def _pattern_facts(
    project: Project, name: str, failed: tuple[str, str], window: list[_Execution]
) -> dict[str, Any]:
    """What the window says about missed patterns: the counts the store keeps, and which
    patterns, where a record's tags name them (`patterns_missed` ids, or `breadcrumbs` scored
    against the failed version's patterns.yaml)."""
    declared, problem = _declared_patterns(project, name, failed, window)
    by_id = {pattern.id: pattern for pattern in declared}
    missed: Counter[str] = Counter()
    named = 0
    for row in window:
        ids = _missed_ids(row.tags, declared)
        if ids is not None:
            named += 1
            missed.update(dict.fromkeys(ids, 1))
    counted = [row.patterns_missed for row in window if row.patterns_missed is not None]
    return {
        "executions_counted": len(counted),
        "executions_with_a_miss": sum(1 for count in counted if count > 0),
        "missed_total": sum(counted),
        "executions_naming_them": named,
        "most_missed": [
            {
                "id": pattern_id,
                "description": by_id[pattern_id].description if pattern_id in by_id else None,
                "missed": count,
                "of": named,
            }
            for pattern_id, count in sorted(missed.items(), key=lambda item: (-item[1], item[0]))[
                :SHOWN_PATTERNS
            ]
        ],
        "patterns_problem": problem,
    }


def _declared_patterns(
    project: Project, name: str, failed: tuple[str, str], window: list[_Execution]
) -> tuple[list[Pattern], str | None]:
    """The failed version's expected patterns (from its archived copy), when a record names
    pattern ids or carries breadcrumbs; and why they could not be read, if so."""
    from skillstage.lifecycle.archive import archive_path
    from skillstage.metrics.patterns import PatternsError, load_patterns

    wanted = any(
        isinstance(row.tags, dict)
        and any(key in row.tags for key in (*_MISSED_TAGS, _BREADCRUMB_TAG))
        for row in window
    )
    entry = archive_path(project, name, *failed)
    if not wanted or not entry.is_dir():
        return [], None
    try:
        return load_patterns(entry), None
    except PatternsError as exc:
        return [], str(exc)


def _missed_ids(tags: dict[str, Any] | None, declared: list[Pattern]) -> list[str] | None:
    """The pattern ids one execution missed, if its tags say: listed, or its breadcrumbs scored
    against the declared patterns."""
    from skillstage.metrics.patterns import PatternsError, score_execution

    if not isinstance(tags, dict):
        return None
    for key in _MISSED_TAGS:
        listed = tags.get(key)
        if isinstance(listed, list) and all(isinstance(item, str) for item in listed):
            return listed
    breadcrumbs = tags.get(_BREADCRUMB_TAG)
    if declared and isinstance(breadcrumbs, list):
        try:
            return score_execution(breadcrumbs, declared).missed
        except PatternsError:
            return None
    return None


def _exception_text(tags: dict[str, Any] | None) -> str | None:
    """The exception text an execution's tags carry, if any (`exception`, `error`, …)."""
    if not isinstance(tags, dict):
        return None
    parts = []
    for key in _EXCEPTION_TAGS:
        value = tags.get(key)
        if value is None or isinstance(value, bool):
            continue
        text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
        if text.strip():
            parts.append(f"{key}: {text.strip()}")
    if not parts:
        return None
    joined = "; ".join(parts)
    return joined if len(joined) <= _TEXT_LIMIT else joined[: _TEXT_LIMIT - 1] + "…"


def _timeline(
    project: Project,
    event: Event,
    recorded: list[store_controls.Step],
    written_at: dt.datetime,
) -> list[dict[str, Any]]:
    """Each step of the sequence with its time, its delay from the event and whether it met
    seed 002's target. A step not recorded by the time the report was written is "pending"
    while its deadline is still ahead, else "missed"."""
    by_step = {step.step: step for step in recorded}
    if event.kind == "rollout_abort" and "switched" not in by_step:
        # The abort's own transaction moved every request back to the stable version.
        by_step["switched"] = store_controls.Step(
            "switched", event.at, True, "in the abort's own transaction"
        )
    if REPORT_STEP not in by_step:
        # (this report, about to record its step: the step as it will be)
        markdown_path = report_paths(project, event.name, event.id)[0]
        by_step[REPORT_STEP] = store_controls.Step(
            REPORT_STEP, written_at, True, str(markdown_path)
        )
    names = list(EXPECTED_STEPS[event.kind])
    names += sorted(step for step in by_step if step not in names)
    found = []
    for name in names:
        target = TARGETS.get(name)
        step = by_step.get(name)
        entry: dict[str, Any] = {
            "step": name,
            "target": target.label if target else None,
            "target_seconds": target.seconds if target else None,
        }
        if step is None:
            deadline = event.at + dt.timedelta(seconds=target.seconds) if target else None
            pending = deadline is not None and written_at <= deadline
            status, detail = _missing(project, event, name)
            entry.update(
                at=None,
                delay_seconds=None,
                ok=None,
                detail=detail,
                status=status or ("pending" if pending else "missed" if target else "not recorded"),
            )
        else:
            delay = round((step.at - event.at).total_seconds(), 3)
            if not step.ok:
                status = "failed"
            elif target is None:
                status = "done"
            else:
                status = "met" if delay <= target.seconds else "missed"
            entry.update(
                at=step.at.isoformat(),
                delay_seconds=delay,
                ok=step.ok,
                detail=step.detail,
                status=status,
            )
        found.append(entry)
    return found


def _missing(project: Project, event: Event, step: str) -> tuple[str | None, str]:
    """Why a step is not on record: (a status that does not wait on the deadline, or None;
    the explanation)."""
    if step == "alert_sent":
        if not project.config.notifications.urls:
            # Nobody will be told, however long one waits.
            return "missed", "no notification target is configured ([notifications] urls)"
        if event.kind == "rollout_abort":
            # The abort's alert goes through the outbox without a timeline step.
            return "unknown", "an abort's alert records no step: `skillstage outbox` shows it"
        return None, "not delivered (yet): `skillstage outbox` shows it and retries it"
    if step == "reindexed":
        return None, "the re-index hook has not run (yet): `skillstage outbox` shows it"
    if step == "archived":
        return None, "the failed version's archive note is not written: `skillstage doctor`"
    return None, "not recorded"


def _commands(
    event: Event,
    stage: str,
    failed: tuple[str, str],
    restored: tuple[str, str] | None,
    rollout: store_rollouts.RolloutRecord | None,
) -> list[dict[str, str]]:
    """What to run next: look, compare, clear the hold, and put a fixed version in."""
    name = event.name
    found = [
        {"command": f"skillstage history {name}", "why": "what happened to it, newest first"},
    ]
    if restored is not None:
        found.append(
            {
                "command": f"skillstage compare {name} {restored[0]} {failed[0]}",
                "why": f"{failed[0]} (B) against {restored[0]} (A) on all their executions",
            }
        )
    found.append(
        {
            "command": f'skillstage hold clear {name} --stage {stage} --by YOU --reason "…"',
            "why": "the hold keeps automation and promotions off it until a person clears it",
        }
    )
    if rollout is not None:
        found += [
            {
                "command": f"skillstage rollout retry {name}",
                "why": f"roll {failed[0]} out again from the first step, with the same settings",
            },
            {
                "command": f"skillstage rollout start {name} --stage {stage}",
                "why": f"roll out a fixed version waiting in {rollout.candidate_stage}",
            },
        ]
    else:
        found += [
            {
                "command": f"skillstage promote {name} --to {stage}",
                "why": f"promote a fixed version (waiting in the stage before) into {stage}",
            },
            {
                "command": f"skillstage rollout start {name} --stage {stage}",
                "why": f"or give a fixed version a share of {stage}'s traffic step by step",
            },
        ]
    return found
