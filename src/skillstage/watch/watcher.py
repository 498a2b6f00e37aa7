"""The watch pass (`skillstage watch`): the loop that rolls back by itself (seed 002 §3.1–3.2).

Each pass:
1. ingests the inbox (decisions read the store) and finishes any move a killed process left;
2. runs the dependency health checks;
3. evaluates every trigger for every version live in the watched stages and rolls a failing one
   back through the promoter — the same atomic, journaled, archived rollback a person runs —
   conditional on that version still being live (two watchers make one rollback), holding the
   skill in the same transaction (no automated way back in until a person clears it);
4. ticks every active rollout (advance, complete, or abort a failing one, holding the skill);
5. demotes staged versions that broke a demotion rule;
6. opens and closes alert episodes (one notification each), and delivers the outbox;
7. writes the failure report of every automated rollback or abort that has none yet (so a watcher
   killed after a rollback catches up on the next pass).

A held or switched-off skill is never acted on; what would have happened is still reported, and
alerted once.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from skillstage.config import Project, TriggerConfig
from skillstage.errors import SkillstageError
from skillstage.store import Store
from skillstage.store import controls as store_controls
from skillstage.store import rollouts as store_rollouts
from skillstage.watch import alerts
from skillstage.watch.triggers import (
    Baseline,
    Finding,
    HealthResult,
    LiveVersion,
    baseline,
    evaluate,
    fired,
)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


@dataclass
class Action:
    """What the pass did (or, with --dry-run, would do) about one skill."""

    kind: str  # rollback, abort, pause, advance, complete, demote, held, disabled, blocked
    name: str
    stage: str
    version: str | None = None
    reason: str | None = None
    metric: str | None = None
    detail: str | None = None
    restored: str | None = None
    event_id: int | None = None
    report: str | None = None
    dry_run: bool = False
    acted: bool = False  # it changed something (not held, not a no-op, not a dry run)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class PassResult:
    """One watch pass."""

    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    dry_run: bool = False
    watched: int = 0
    actions: list[Action] = field(default_factory=list)
    waiting: list[dict[str, Any]] = field(default_factory=list)  # triggers short of a window
    alerts: list[alerts.Announcement] = field(default_factory=list)
    health: list[HealthResult] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)
    reports: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def acted(self) -> bool:
        """Whether the pass changed something (or, in a dry run, would have)."""
        return any(
            a.acted or (a.dry_run and a.kind not in ("held", "disabled")) for a in self.actions
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "started_at": self.started_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
            "dry_run": self.dry_run,
            "watched": self.watched,
            "acted": self.acted,
            "actions": [a.to_dict() for a in self.actions],
            "waiting": self.waiting,
            "alerts": [a.to_dict() for a in self.alerts],
            "health": [h.__dict__ for h in self.health],
            "recovered": self.recovered,
            "reports": self.reports,
            "errors": self.errors,
        }


class Watcher:
    """Runs watch passes over one project's store. Keeps per-version baselines between passes
    (a baseline that is complete never changes)."""

    def __init__(
        self, project: Project, store: Store, *, dry_run: bool = False, actor: str | None = None
    ) -> None:
        self.project = project
        self.store = store
        self.dry_run = dry_run
        self.actor = actor or project.config.watch.actor
        stages = list(project.config.stages)
        self.stages = list(project.config.watch.stages or [stages[-1]])
        self._baselines: dict[tuple[str, str, dt.datetime], Baseline] = {}

    # -- the pass -------------------------------------------------------------------------------

    def run_pass(self) -> PassResult:
        result = PassResult(started_at=_now(), dry_run=self.dry_run)
        self._step(result, "ingest", self._ingest)
        if not self.dry_run:
            self._step(result, "recovery", lambda: self._recover(result))
        health = self._health(result)
        self._step(result, "triggers", lambda: self._triggers(result, health))
        self._step(result, "rollouts", lambda: self._rollouts(result))
        self._step(result, "demotion", lambda: self._demotions(result))
        if not self.dry_run:
            self._step(result, "alerts", lambda: self._alerts(result))
            self._step(result, "reports", lambda: self._reports(result))
            self._step(result, "outbox", self._deliver)
        result.finished_at = _now()
        return result

    def _step(self, result: PassResult, what: str, step: Callable[[], Any]) -> None:
        """One part of the pass; a failure is reported and the pass goes on with the rest."""
        try:
            step()
        except SkillstageError as exc:
            result.errors.append(f"{what}: {exc.message}")
        except OSError as exc:
            result.errors.append(f"{what}: {exc.strerror or exc}")

    def _ingest(self) -> None:
        from skillstage.lifecycle.readiness import ingest_on_demand

        ingest_on_demand(self.project, self.store)

    def _recover(self, result: PassResult) -> None:
        from skillstage.lifecycle.move import recover_all

        result.recovered += recover_all(self.project, self.store)

    # -- dependencies ---------------------------------------------------------------------------

    def _health(self, result: PassResult) -> dict[str, HealthResult]:
        """Each configured dependency's check, run once this pass."""
        found = {}
        for name, dependency in self.project.config.dependencies.items():
            found[name] = _check(self.project, name, dependency.command, dependency.timeout_seconds)
            result.health.append(found[name])
        return found

    def _health_for(
        self, live: LiveVersion, triggers: TriggerConfig, checked: Mapping[str, HealthResult]
    ) -> dict[str, HealthResult]:
        mine = {}
        for name, dependency in self.project.config.dependencies.items():
            if name in triggers.dependencies or (
                dependency.skills and live.name in dependency.skills
            ):
                mine[name] = checked[name]
        if triggers.health_check:
            mine["health_check"] = _check(
                self.project, "health_check", triggers.health_check, triggers.health_timeout_seconds
            )
        return mine

    # -- triggers -------------------------------------------------------------------------------

    def live_versions(self) -> list[LiveVersion]:
        with self.store.reading() as tx:
            rows = store_rollouts.live_versions(tx, self.stages)
        return [LiveVersion(*row) for row in rows]

    def _baseline(self, live: LiveVersion, triggers: TriggerConfig) -> Baseline:
        key = (live.name, live.digest, live.entered_at)
        known = self._baselines.get(key)
        if known is not None and known.complete:
            return known
        with self.store.reading() as tx:
            found = baseline(tx, live, triggers)
        self._baselines[key] = found
        return found

    def findings(
        self, live: LiveVersion, checked: Mapping[str, HealthResult] | None = None
    ) -> list[Finding]:
        """Every trigger's finding for one live version."""
        triggers = self.project.config.triggers.for_skill(
            live.name, live.frontmatter.get("metadata")
        )
        health = self._health_for(live, triggers, checked or {})
        base = self._baseline(live, triggers)
        with self.store.reading() as tx:
            return evaluate(tx, live, triggers, health=health, base=base)

    def _triggers(self, result: PassResult, checked: Mapping[str, HealthResult]) -> None:
        lives = self.live_versions()
        result.watched = len(lives)
        with self.store.reading() as tx:
            held = {(c.name, c.stage) for c in store_controls.controls(tx, kind="hold")}
            off = store_controls.disabled_routes(tx)
            opened = {(r.name, r.stage) for r in store_rollouts.rollouts(tx, open_only=True)}
        for live in lives:
            findings = self.findings(live, checked)
            for finding in findings:
                if not finding.fired and finding.metric is None:
                    result.waiting.append(
                        {"name": live.name, "stage": live.stage, **finding.to_dict()}
                    )
            trigger = fired(findings)
            if trigger is None:
                continue
            action = Action(
                "rollback",
                live.name,
                live.stage,
                live.version,
                trigger.code,
                trigger.metric,
                trigger.detail,
                dry_run=self.dry_run,
            )
            result.actions.append(action)
            if off.get(live.name, set()) & {live.stage, store_controls.EVERY_STAGE}:
                action.kind = "disabled"
                action.detail = f"switched off, so nothing serves it: {trigger.detail}"
                continue
            if {(live.name, live.stage), (live.name, store_controls.EVERY_STAGE)} & held:
                action.kind = "held"
                action.detail = f"held, so not rolled back: {trigger.detail}"
                continue
            if (live.name, live.stage) in opened:
                action.kind = "blocked"
                action.detail = (
                    f"a rollout is open in {live.stage}; the stable version itself fails "
                    f"({trigger.detail}): abort the rollout first (`skillstage rollout abort "
                    f"{live.name}`)"
                )
                continue
            if self.dry_run:
                continue
            try:
                self.roll_back(live, trigger, action)
            except (SkillstageError, OSError) as exc:
                # Refused (someone's edits in the live copy, a locked skill): said, and the
                # other live versions are still watched in this pass; the next pass tries again.
                why = exc.message if isinstance(exc, SkillstageError) else str(exc)
                action.kind = "refused"
                action.detail = f"not rolled back ({trigger.detail}): {why}"
                result.errors.append(f"rollback of {live.name} in {live.stage}: {why}")

    def roll_back(self, live: LiveVersion, trigger: Finding, action: Action) -> None:
        """The automated rollback of `live` for `trigger`, through the promoter."""
        from skillstage.lifecycle.promote import rollback

        done = rollback(
            self.project,
            self.store,
            live.name,
            stage=live.stage,
            reason=trigger.code,
            trigger_metric=trigger.metric,
            actor=self.actor,
            only_if_live=live.digest,
            hold=True,
        )
        if done.unchanged:
            action.kind = "rollback"
            action.detail = "another process rolled it back first"
            return
        action.acted = True
        action.event_id = done.event_id
        action.restored = done.version
        if done.to_stage != live.stage:
            action.detail = f"{trigger.detail}; no earlier version: it went back to {done.to_stage}"
        self._report(action)

    def _report(self, action: Action) -> None:
        if action.event_id is None:
            return
        try:
            from skillstage.watch.report import write_failure_report

            action.report = str(write_failure_report(self.project, self.store, action.event_id))
        except (SkillstageError, OSError) as exc:  # caught up by the next pass
            action.detail = (action.detail or "") + f" (the failure report waits: {exc})"

    # -- rollouts and demotion ------------------------------------------------------------------

    def _rollouts(self, result: PassResult) -> None:
        from skillstage.rollout.steering import tick

        if self.dry_run:
            return  # a tick acts; the rollout's own status says what it waits for
        for outcome in tick(self.project, self.store, actor=self.actor):
            if outcome.action in ("waiting",):
                continue
            rollout = outcome.rollout
            action = Action(
                {"aborted": "abort", "paused": "pause", "advanced": "advance"}.get(
                    outcome.action, outcome.action
                ),
                outcome.name,
                rollout.stage if rollout else "",
                rollout.candidate_version if rollout else None,
                outcome.verdict.trigger if outcome.verdict else None,
                outcome.verdict.trigger_metric if outcome.verdict else None,
                outcome.error or "; ".join(outcome.warnings) or None,
                event_id=outcome.event_id,
                acted=outcome.action not in ("held", "blocked"),
            )
            result.actions.append(action)
            if outcome.action == "aborted":
                self._report(action)

    def _demotions(self, result: PassResult) -> None:
        from skillstage.lifecycle import demote

        found = demote.check(self.project, self.store)
        with self.store.reading() as tx:
            held = {(c.name, c.stage) for c in store_controls.controls(tx, kind="hold")}
        found.demotions = [
            d
            for d in found.demotions
            if not {(d.name, d.stage), (d.name, store_controls.EVERY_STAGE)} & held
        ]
        if found.demotions and not self.dry_run:
            demote.apply(self.project, self.store, found, actor=self.actor)
        for d in found.demotions:
            result.actions.append(
                Action(
                    "demote",
                    d.name,
                    d.stage,
                    d.version,
                    "; ".join(d.rules),
                    detail=d.error,
                    restored=d.to_stage,
                    dry_run=self.dry_run,
                    acted=d.applied,
                )
            )

    # -- alerts, reports, outbox ----------------------------------------------------------------

    def _alerts(self, result: PassResult) -> None:
        config = self.project.config.alerts
        conditions: list[alerts.Condition] = []
        judged: list[str] = []
        for live in self.live_versions():
            triggers = self.project.config.triggers.for_skill(
                live.name, live.frontmatter.get("metadata")
            )
            base = self._baseline(live, triggers)
            with self.store.reading() as tx:
                conditions += alerts.version_conditions(tx, live, config, base)
        for action in result.actions:
            key = f"trigger:{action.name}:{action.stage}"
            judged.append(key)
            if action.kind in ("held", "blocked"):
                conditions.append(
                    alerts.Condition(
                        key,
                        action.name,
                        "trigger",
                        "critical",
                        f"{action.name} {action.version} in {action.stage}: {action.reason} "
                        f"({action.metric}) — {action.detail}",
                        {"reason": action.reason, "metric": action.metric},
                    )
                )
        conditions.append(alerts.lag_condition(self.project, self.store))
        with self.store.reading() as tx:
            # An episode whose skill is no longer live (rolled back, disabled) has recovered.
            live_keys = {c.key for c in conditions}
            judged += [e.key for e in store_controls.episodes(tx) if e.key not in live_keys]
        result.alerts += alerts.announce(
            self.project, self.store, conditions, at=_now(), judged=judged
        )

    def _reports(self, result: PassResult) -> None:
        from skillstage.watch.report import failure_events_without_report, write_failure_report

        for event_id in failure_events_without_report(self.store):
            result.reports.append(str(write_failure_report(self.project, self.store, event_id)))

    def _deliver(self) -> None:
        from skillstage.integrations.outbox import deliver

        deliver(self.project, self.store)


def _check(project: Project, name: str, command: str, timeout: float) -> HealthResult:
    """Run one health check from the project root: exit 0 is healthy."""
    from skillstage.integrations.hooks import run_hook

    done = run_hook(project, {"hook": f"health check {name}", "command": command}, timeout=timeout)
    if done.ok:
        return HealthResult(name, True, "exit=0", f"{name}: healthy")
    if done.timed_out:
        metric = f"timeout={timeout:g}s"
    elif done.returncode is not None:
        metric = f"exit={done.returncode}"
    else:
        metric = "not_runnable"
    tail = (done.output_tail or "").strip().splitlines()
    return HealthResult(
        name,
        False,
        metric,
        f"{name}: {command} failed ({metric})" + (f": {tail[-1]}" if tail else ""),
    )


def watch(
    project: Project,
    store: Store,
    *,
    interval: float,
    dry_run: bool = False,
    stop: threading.Event | None = None,
    on_pass: Callable[[PassResult], None] | None = None,
    passes: int | None = None,
) -> int:
    """Run passes every `interval` seconds until `stop` is set (SIGTERM: the pass in progress
    finishes first) or `passes` have run; the number of passes run."""
    watcher = Watcher(project, store, dry_run=dry_run)
    stop = stop or threading.Event()
    count = 0
    while not stop.is_set():
        started = time.monotonic()
        outcome = watcher.run_pass()
        count += 1
        if on_pass is not None:
            on_pass(outcome)
        if passes is not None and count >= passes:
            break
        stop.wait(max(0.0, interval - (time.monotonic() - started)))
    return count


def smoke_check(project: Project, payload: Mapping[str, Any]) -> tuple[bool, str | None, str]:
    """The stage's smoke check after a promotion (seed 001 Step 6), run from the outbox; a
    failure rolls the version back at once, as a trigger would (reason `smoke_test_failed`).
    (ok, error, what was done)."""
    from skillstage.integrations.hooks import run_hook

    done = run_hook(project, payload)
    if done.ok:
        return True, None, "passed"
    metric = f"exit={done.returncode}" if done.returncode is not None else "not_runnable"
    error = done.error or "the smoke check failed"
    name, stage, digest = payload["skill"], payload["to_stage"], payload["digest"]
    with Store.open(project.database_url) as store:
        watcher = Watcher(project, store)
        live = next(
            (v for v in watcher.live_versions() if (v.name, v.stage) == (name, stage)), None
        )
        if live is None or live.digest != digest:
            return False, error, "the version is no longer live: nothing rolled back"
        trigger = Finding("smoke_test_failed", True, metric, f"the smoke check failed: {error}")
        action = Action("rollback", name, stage, live.version, trigger.code, trigger.metric)
        try:
            watcher.roll_back(live, trigger, action)
        except SkillstageError as exc:
            return False, error, f"the rollback was refused: {exc.message}"
    return (
        False,
        error,
        f"rolled back to {action.restored}" if action.acted else action.detail or "",
    )
