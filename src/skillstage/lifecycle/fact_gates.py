"""Seed 001's staging → production items that are facts, not tools, read from what skillstage
knows: `rollback-drill` ("rollback procedure tested": the skill's latest drill passed lately),
`uptime` ("7-day uptime ≥ 99.5%": the version's executions in its stage without an exception)
and `monitoring` ("monitoring configured": a monitoring target in the configuration).

"Security review complete" is no fact skillstage can know: it stays in the sign-off checklist
(the `approval` gate).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from urllib.parse import urlsplit

from skillstage.config import NotificationTarget, Project, Thresholds
from skillstage.lifecycle.gates import GateContext, GateResult
from skillstage.lifecycle.readiness import Criterion
from skillstage.store import Store


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _thresholds(context: GateContext) -> Thresholds:
    for transition in context.project.config.transitions:
        if (transition.from_stage, transition.to_stage) == (context.from_stage, context.to_stage):
            return transition.thresholds
    return Thresholds()


def _days(delta: dt.timedelta) -> str:
    seconds = delta.total_seconds()
    if seconds >= 86_400:
        return f"{seconds / 86_400:.1f} days"
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} hours"
    minutes = round(seconds / 60)
    return f"{minutes} minute{'' if minutes == 1 else 's'}"


# -- rollback-drill ------------------------------------------------------------------------------


class RollbackDrillGate:
    """The skill's latest rollback drill (`skillstage drill NAME`) passed, at most
    `max_drill_age_days` ago."""

    name = "rollback-drill"

    def check(self, context: GateContext) -> GateResult:
        from skillstage.lifecycle.drill_record import latest_drill

        name = context.skill.name
        limit = _thresholds(context).max_drill_age_days
        drill = latest_drill(context.store, name)
        if drill is None:
            return GateResult(
                self.name,
                "fail",
                f"no rollback drill of {name} on record",
                [f"run `skillstage drill {name}`: it rehearses a rollback on a scratch copy"],
            )
        age = _now() - drill.at
        versions = drill.details.get("versions", {})
        moved = ", ".join(
            f"{what} {version}"
            for what, version in (
                ("live", versions.get("live")),
                ("candidate", versions.get("candidate")),
                ("rolled back to", versions.get("rollback_to")),
            )
            if version
        )
        evidence = [
            f"drill at {drill.at:%Y-%m-%d %H:%M:%S} UTC (event {drill.event_id}), {_days(age)} "
            f"ago: {moved or 'no versions'}",
            *(
                f"{s.get('step')}: {s.get('seconds', 0):.3f} s, "
                f"{'ok' if s.get('ok') else 'FAILED'} — {s.get('message')}"
                for s in drill.steps
            ),
        ]
        if not drill.passed:
            failed = next((s for s in drill.steps if not s.get("ok")), {})
            return GateResult(
                self.name,
                "fail",
                f"the latest rollback drill of {name} failed at its {failed.get('step')} step",
                [*evidence, f"fix what it names, then run `skillstage drill {name}` again"],
            )
        if age > dt.timedelta(days=limit):
            return GateResult(
                self.name,
                "fail",
                f"the latest rollback drill of {name} passed {_days(age)} ago, more than "
                f"{limit:g} days",
                [*evidence, f"run `skillstage drill {name}` again"],
            )
        return GateResult(
            self.name,
            "pass",
            f"rollback drill passed {_days(age)} ago in {drill.seconds:.3f} s",
            evidence,
        )


# -- uptime --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Uptime:
    """A version's executions (benchmark runs left out) in its current stay in a stage, within
    a window: how many, and how many raised an exception."""

    entered: dt.datetime  # when its current stay in the stage began
    since: dt.datetime  # the window's start: not before `entered`
    until: dt.datetime
    executions: int
    exceptions: int

    @property
    def percent(self) -> float | None:
        """Percent of the executions that raised no exception; None without executions."""
        if not self.executions:
            return None
        return 100.0 * (self.executions - self.exceptions) / self.executions


def measure_uptime(
    store: Store, name: str, digest: str, stage: str, *, days: float, now: dt.datetime | None = None
) -> Uptime | None:
    """The uptime of `name`'s content `digest` in `stage` over the last `days` (at most since it
    entered the stage); None when its stay there is not on record. Reads the store as it is:
    ingest the metrics inbox first for the latest executions."""
    from skillstage.lifecycle.readiness import stay_start
    from skillstage.store import metrics as store_metrics

    until = now or _now()
    with store.reading() as tx:
        skill_id = tx.skill_id(name)
        entered = stay_start(tx, skill_id, stage, digest)
        if skill_id is None or entered is None:
            return None
        since = max(entered, until - dt.timedelta(days=days))
        rows = store_metrics.execution_rows(
            tx, skill_id, digest=digest, since=since, until=until, in_use=True
        )
    return Uptime(entered, since, until, rows.count, sum(rows.columns["exception"]))


class UptimeGate:
    """Over the last `uptime_days` in the stage it leaves, at least `min_uptime` percent of the
    version's executions (benchmark runs left out) raised no exception, from at least
    `min_uptime_executions` of them; and the version has been there that long."""

    name = "uptime"

    def check(self, context: GateContext) -> GateResult:
        from skillstage.lifecycle.readiness import ingest_on_demand

        thresholds = _thresholds(context)
        skill, stage = context.skill, context.from_stage
        ingest_on_demand(context.project, context.store)
        window = dt.timedelta(days=thresholds.uptime_days)
        measured = measure_uptime(
            context.store, skill.name, skill.digest, stage, days=thresholds.uptime_days
        )
        if measured is None:
            return GateResult(
                self.name,
                "fail",
                f"no record of {skill.name} {skill.version} entering {stage}: its uptime there "
                "is unknown",
                [f"promote it into {stage} with skillstage, so its stay there is on record"],
            )
        now, entered = measured.until, measured.entered
        total, failures, uptime = measured.executions, measured.exceptions, measured.percent
        stayed = now - entered
        criteria = [
            Criterion(
                f"days in {stage}",
                round(stayed.total_seconds() / 86_400, 2),
                f">= {thresholds.uptime_days:g}",
                stayed >= window,
                f"{_days(window - stayed)} to go",
            ),
            Criterion(
                "executions",
                total,
                f">= {thresholds.min_uptime_executions}",
                total >= thresholds.min_uptime_executions,
                f"{thresholds.min_uptime_executions - total} more needed to show the uptime",
            ),
            Criterion(
                "uptime %",
                uptime,
                f">= {thresholds.min_uptime:g}",
                uptime is not None and uptime >= thresholds.min_uptime,
                "no executions recorded"
                if uptime is None
                else f"{failures} of {total} executions raised an exception",
            ),
        ]
        over = f"over {_days(min(stayed, window))} in {stage}"
        minimum = f"minimum {thresholds.min_uptime:g}% over {thresholds.uptime_days:g} days"
        summary = (
            f"no executions {over} ({minimum}, of at least {thresholds.min_uptime_executions})"
            if uptime is None
            else f"uptime {uptime:.2f}% {over} ({failures} exception(s) in {total} executions; "
            f"{minimum})"
        )
        failed = [c for c in criteria if not c.passed]
        return GateResult(
            self.name,
            "fail" if failed else "pass",
            summary
            if not failed
            else summary + ": " + "; ".join(f"{c.name}: {c.missing}" for c in failed),
            [c.line() for c in criteria],
            [c.to_dict() for c in criteria],
        )


# -- monitoring ----------------------------------------------------------------------------------


def _where(url: str) -> str:
    """A URL as evidence: its scheme, host and port, never its credentials or path (a webhook's
    path is often its secret)."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def _hears_alerts(target: str | NotificationTarget, events: list[str]) -> bool:
    if "alert" not in events:
        return False
    return isinstance(target, str) or target.events is None or "alert" in target.events


def monitoring_configured(project: Project) -> tuple[bool, str]:
    """Whether a monitoring target is configured ([monitoring] prometheus_url or alert_url, or a
    [notifications] URL that hears alerts), and the evidence: which, or what to set."""
    monitoring = project.config.monitoring
    found = [
        f"[monitoring] {key} = {_where(value)}"
        for key, value in (
            ("prometheus_url", monitoring.prometheus_url),
            ("alert_url", monitoring.alert_url),
        )
        if value
    ]
    notifications = project.config.notifications
    hearing = [t for t in notifications.urls if _hears_alerts(t, list(notifications.events))]
    if hearing:
        schemes = sorted({urlsplit(t if isinstance(t, str) else t.url).scheme for t in hearing})
        found.append(
            f"[notifications] {len(hearing)} URL(s) hear alerts ("
            + ", ".join(f"{scheme}://…" for scheme in schemes)
            + ")"
        )
    if found:
        return True, "; ".join(found)
    where = project.source or "skillstage.toml"
    return False, (
        f"no monitoring target: set [monitoring] prometheus_url or alert_url, or a "
        f"[notifications] URL that hears alerts, in {where}"
    )


class MonitoringGate:
    """A monitoring target is configured (`monitoring_configured`)."""

    name = "monitoring"

    def check(self, context: GateContext) -> GateResult:
        configured, evidence = monitoring_configured(context.project)
        if configured:
            return GateResult(self.name, "pass", f"monitoring configured: {evidence}")
        return GateResult(self.name, "fail", evidence)
