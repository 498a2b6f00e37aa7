"""The Prometheus exposition of a project's store (`GET /metrics`): a custom collector that reads
the store at scrape time, in a registry of its own (never prometheus-client's global one, whose
process metrics would mix one server process's figures into the project's).

What it exposes (docs/prometheus.md lists every metric, its labels and meaning):

- executions in use by skill, version, arm and outcome (a counter), and their execution time (a
  histogram per skill and version, its buckets counted by the database);
- per live version (one a skill has live in a stage) the sample the `status` command's metrics
  gate reads: its executions in use since it entered that stage, their mean pattern fidelity,
  mean outcome quality and exception rate — the means of `metrics.summary.summarise`, taken as
  sum / count by the database;
- rollouts' candidate weight, rollbacks and rollout aborts by reason, breaker openings and the
  breakers open, SLA breaches, skills per stage and seed 000's key metrics (from
  `lifecycle.stats.key_metrics`, what `skillstage stats` reports), ingestion lag (the function
  behind `skillstage metrics lag`) and the outbox by kind and status.

Breakers: a breaker lives in a loader's process; the store knows of it only through the
`breaker_open` / `breaker_closed` events loaders write. "Open" here means: the latest event of that
loader (the event's actor, `loader@host:pid`) for that version says open. A breaker that went
half-open writes no event, so it counts as open until its trial closes it; a loader that died
with a breaker open leaves it counted as open (its process is gone, the event stays). The
openings counter has neither caveat.

Cost: the executions counter and histogram are over the whole history, one full scan of the
execution table, and the live-version sample reads a good part of the (skill, digest, time)
index. On a big store that takes seconds (10 million executions: see bench/prometheus.py), more
than a scrape may wait. So those two are computed in a *history snapshot* per store, kept in
this process: a scrape finding it older than `max_age` seconds starts a refresh in a background
thread and is answered from the snapshot it has (the first scrape of a process computes it while
it waits). `skillstage_exposition_snapshot_age_seconds` and `…_duration_seconds` say how old and
how dear it is. Everything else is read at every scrape (small tables, aggregate queries).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Final

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector, CollectorRegistry

from skillstage.config import Project
from skillstage.store import Store, Transaction
from skillstage.store import exposition as queries
from skillstage.store.db import display_url

LOG = logging.getLogger("skillstage.server")

# How old the history snapshot (executions, live samples) may be before a scrape refreshes it.
DEFAULT_MAX_AGE_S: Final = 60.0

_BREAKER_OPEN: Final = "breaker_open"  # the loader's event kinds (runtime/breaker.py)
_BREAKER_CLOSED: Final = "breaker_closed"
_SLA_BREACH_EVENT: Final = "sla_breach"  # lifecycle/sla.py's BREACH_EVENT


@dataclass(frozen=True)
class History:
    """What the expensive queries said, and when."""

    executions: list[queries.ExecutionGroup]
    live: list[queries.LiveSample]
    computed_at: float  # time.monotonic() when its queries began: the figures are as of then
    duration_s: float


def _compute_history(project: Project) -> History:
    began = time.monotonic()
    with Store.open(project.database_url) as store, store.reading() as tx:
        executions = queries.execution_groups(tx)
        live = queries.live_samples(tx)
    return History(executions, live, began, time.monotonic() - began)


class _Snapshots:
    """The history snapshot of each store this process exposes, refreshed one at a time."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._history: dict[str, History] = {}
        self._refreshing: dict[str, threading.Thread] = {}
        self._waiting: dict[str, threading.Lock] = {}

    def get(self, project: Project, max_age: float) -> History:
        """A snapshot of the store's history no older than `max_age` seconds if one can be had
        without waiting; a stale one (while a refresh runs in the background) otherwise. With no
        snapshot yet, or `max_age` 0, the caller waits for a fresh one."""
        key = project.database_url
        with self._guard:
            found = self._history.get(key)
            lock = self._waiting.setdefault(key, threading.Lock())
        if found is not None and max_age > 0:
            if time.monotonic() - found.computed_at > max_age:
                self._refresh_in_background(project, key)
            return found
        with lock:  # one computation at a time per store; a second waiter reuses its result
            with self._guard:
                again = self._history.get(key)
            if again is not None and again is not found and max_age > 0:
                return again
            history = _compute_history(project)
            with self._guard:
                self._history[key] = history
            return history

    def _refresh_in_background(self, project: Project, key: str) -> None:
        with self._guard:
            running = self._refreshing.get(key)
            if running is not None and running.is_alive():
                return
            thread = threading.Thread(
                target=self._refresh, args=(project, key), name="skillstage-metrics", daemon=True
            )
            self._refreshing[key] = thread
        thread.start()

    def _refresh(self, project: Project, key: str) -> None:
        with self._guard:
            lock = self._waiting.setdefault(key, threading.Lock())
        try:
            with lock:
                history = _compute_history(project)
            with self._guard:
                self._history[key] = history
        except Exception as exc:  # the next stale scrape tries again; the old snapshot serves
            LOG.warning(
                "skillstage: the metrics history of %s could not be refreshed (%s: %s)",
                display_url(key),  # (never the password)
                type(exc).__name__,
                exc,
            )


_SNAPSHOTS: Final = _Snapshots()


class StoreCollector(Collector):
    """The project's store as Prometheus metric families, read at each `collect()`."""

    def __init__(self, project: Project, *, max_age: float = DEFAULT_MAX_AGE_S) -> None:
        self.project = project
        self.max_age = max_age

    def collect(self) -> Iterable[Metric]:
        history = _SNAPSHOTS.get(self.project, self.max_age)
        families: list[Metric] = []
        families += _execution_families(history.executions)
        families += _live_families(history.live)
        families += _snapshot_families(history)
        with Store.open(self.project.database_url) as store:
            with store.reading() as tx:
                families += _stage_families(self.project, tx)
                families += _event_families(tx)
                families += _rollout_families(tx)
                families += _outbox_families(tx)
            families += _key_metric_families(self.project, store)
            families += _lag_families(self.project, store)
        return families


def exposition(
    project: Project, accept: str | None = None, *, max_age: float = DEFAULT_MAX_AGE_S
) -> tuple[bytes, str]:
    """The project's metrics as a scrape answer: (body, content type), in the format the
    `Accept` header asks for (OpenMetrics or Prometheus text). `max_age`: how old the history
    snapshot may be (0: computed now, for tests and one-off reads)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StoreCollector(project, max_age=max_age))
    encoder, content_type = choose_encoder(accept or "")
    return encoder(registry), content_type


# -- families ----------------------------------------------------------------------------------


def _execution_families(groups: list[queries.ExecutionGroup]) -> Iterator[Metric]:
    executions = CounterMetricFamily(
        "skillstage_executions",
        "Executions of a skill in use (benchmark runs not counted), by version, loader arm and "
        "outcome (the worst of: exception, critical_miss, false_negative, false_positive; else "
        "success).",
        labels=["skill", "version", "arm", "outcome"],
    )
    durations = HistogramMetricFamily(
        "skillstage_execution_duration_seconds",
        "Execution time of a skill version's executions in use that recorded one.",
        labels=["skill", "version"],
    )
    per_version: dict[tuple[str, str], tuple[int, float, list[int]]] = {}
    for group in groups:
        executions.add_metric([group.name, group.version, group.arm, group.outcome], group.count)
        timed, total, buckets = per_version.get(
            (group.name, group.version), (0, 0.0, [0] * len(queries.DURATION_BUCKETS_MS))
        )
        per_version[(group.name, group.version)] = (
            timed + group.timed,
            total + group.time_sum_ms,
            [a + b for a, b in zip(buckets, group.buckets, strict=True)],
        )
    for (name, version), (timed, total_ms, buckets) in sorted(per_version.items()):
        if not timed:
            continue
        bounds = [
            (_seconds_label(bound), count)
            for bound, count in zip(queries.DURATION_BUCKETS_MS, buckets, strict=True)
        ]
        durations.add_metric([name, version], [*bounds, ("+Inf", timed)], total_ms / 1000)
    yield executions
    yield durations


def _seconds_label(bound_ms: int) -> str:
    return repr(bound_ms / 1000)


def _live_families(samples: list[queries.LiveSample]) -> Iterator[Metric]:
    labels = ["skill", "stage", "version"]
    count = GaugeMetricFamily(
        "skillstage_live_executions",
        "Executions in use of the version live in a stage since it entered that stage: the "
        "sample `skillstage status` judges it on.",
        labels=labels,
    )
    fidelity = GaugeMetricFamily(
        "skillstage_live_pattern_fidelity",
        "Mean pattern fidelity (0-1) of that sample; absent while none recorded one.",
        labels=labels,
    )
    quality = GaugeMetricFamily(
        "skillstage_live_outcome_quality",
        "Mean outcome quality (0-1) of that sample; absent while none recorded one.",
        labels=labels,
    )
    exceptions = GaugeMetricFamily(
        "skillstage_live_exception_ratio",
        "Share of that sample's executions that raised an exception; absent while it is empty.",
        labels=labels,
    )
    for sample in samples:
        key = [sample.name, sample.stage, sample.version]
        count.add_metric(key, sample.count)
        if sample.fidelity_count:
            fidelity.add_metric(key, sample.fidelity_sum / sample.fidelity_count)
        if sample.quality_count:
            quality.add_metric(key, sample.quality_sum / sample.quality_count)
        if sample.count:
            exceptions.add_metric(key, sample.exceptions / sample.count)
    yield from (count, fidelity, quality, exceptions)


def _snapshot_families(history: History) -> Iterator[Metric]:
    yield GaugeMetricFamily(
        "skillstage_exposition_snapshot_age_seconds",
        "Age of the history snapshot the executions and live-version metrics come from.",
        value=max(0.0, time.monotonic() - history.computed_at),
    )
    yield GaugeMetricFamily(
        "skillstage_exposition_snapshot_duration_seconds",
        "How long the queries behind that snapshot took.",
        value=history.duration_s,
    )


def _stage_families(project: Project, tx: Transaction) -> Iterator[Metric]:
    skills = GaugeMetricFamily(
        "skillstage_skills",
        "Skills with a version live in a stage.",
        labels=["stage"],
    )
    counts = queries.skills_per_stage(tx)
    for stage in dict.fromkeys([*project.config.stages, *counts]):
        skills.add_metric([stage], counts.get(stage, 0))
    yield skills


def _event_families(tx: Transaction) -> Iterator[Metric]:
    for kind, name, what in (
        ("rollback", "skillstage_rollbacks", "Rollbacks"),
        ("rollout_abort", "skillstage_rollout_aborts", "Rollout aborts"),
    ):
        family = CounterMetricFamily(
            name,
            f"{what} done, by skill, stage and reason: an automated one's trigger code "
            "(e.g. pattern_fidelity_drop_below_85), 'demotion', or 'manual' (a person's).",
            labels=["skill", "stage", "reason"],
        )
        for found in queries.failure_counts(tx, kind):
            family.add_metric([found.name, found.stage, found.reason], found.count)
        yield family
    breakers = queries.breaker_counts(tx, opened=_BREAKER_OPEN, closed=_BREAKER_CLOSED)
    openings = CounterMetricFamily(
        "skillstage_breaker_openings",
        "Times a loader's circuit breaker opened on a skill version (breaker_open events).",
        labels=["skill", "version", "stage"],
    )
    open_now = GaugeMetricFamily(
        "skillstage_breakers_open",
        "Loaders whose latest breaker event for the version says open (half-open counts as "
        "open; a loader that died open stays counted).",
        labels=["skill", "version", "stage"],
    )
    for breaker in breakers:
        key = [breaker.name, breaker.version, breaker.stage]
        openings.add_metric(key, breaker.openings)
        open_now.add_metric(key, breaker.open)
    yield openings
    yield open_now
    breach_events = CounterMetricFamily(
        "skillstage_sla_breach_events",
        "SLA breaches recorded by `skillstage sla enforce` (one a version, stage and UTC day).",
        labels=["skill", "stage"],
    )
    for name, stage, count in queries.sla_breach_events(tx, _SLA_BREACH_EVENT):
        breach_events.add_metric([name, stage], count)
    yield breach_events


def _rollout_families(tx: Transaction) -> Iterator[Metric]:
    from skillstage.store.rollouts import rollouts

    weight = GaugeMetricFamily(
        "skillstage_rollout_weight_ratio",
        "An open rollout's candidate share of its stage's traffic (0-1; 0 while paused).",
        labels=["skill", "stage", "candidate_version", "stable_version", "state"],
    )
    step = GaugeMetricFamily(
        "skillstage_rollout_step",
        "An open rollout's current step, from 1.",
        labels=["skill", "stage", "candidate_version", "stable_version", "state"],
    )
    for rollout in rollouts(tx, open_only=True, limit=1_000_000):
        key = [
            rollout.name,
            rollout.stage,
            rollout.candidate_version,
            rollout.stable_version,
            rollout.state,
        ]
        weight.add_metric(key, rollout.weight / 100)
        step.add_metric(key, rollout.step_index + 1)
    yield weight
    yield step


def _outbox_families(tx: Transaction) -> Iterator[Metric]:
    from skillstage.store.outbox import DELIVERED

    items = GaugeMetricFamily(
        "skillstage_outbox_items",
        "Outbox items (deploy and re-index hooks, notifications, git commits) by kind and "
        "status: pending, delivering and failed are the backlog.",
        labels=["kind", "status"],
    )
    oldest = GaugeMetricFamily(
        "skillstage_outbox_oldest_item_age_seconds",
        "Age of the oldest outbox item of a kind still in a status other than delivered.",
        labels=["kind", "status"],
    )
    now = time.time()
    for found in queries.outbox_counts(tx):
        items.add_metric([found.kind, found.status], found.count)
        if found.status != DELIVERED and found.oldest is not None:
            oldest.add_metric([found.kind, found.status], max(0.0, now - found.oldest.timestamp()))
    yield items
    yield oldest


def _key_metric_families(project: Project, store: Store) -> Iterator[Metric]:
    """Seed 000's key metrics, as `skillstage stats` computes them (a metric with nothing to
    measure is left out, never 0)."""
    from skillstage.lifecycle import stats

    found = stats.key_metrics(project, store)
    shown = [
        (
            stats.STAGED_SKILLS_COUNT,
            "skillstage_staged_skills",
            "Skills waiting in the staging stage(s) (target < 10, alert > 20).",
            1.0,
        ),
        (
            stats.AVERAGE_TIME_IN_STAGING,
            "skillstage_staging_average_age_seconds",
            "Mean age of the skills waiting in staging (target < 24 h, alert > 36 h).",
            3600.0,
        ),
        (
            stats.SLA_BREACH_COUNT,
            "skillstage_sla_breaches",
            "Skills past their stage's SLA with no active override (target 0, alert > 2).",
            1.0,
        ),
        (
            stats.PROMOTION_SUCCESS_RATE,
            "skillstage_promotion_success_ratio",
            f"Promotions that moved, of those that passed their gates, in {stats.WINDOW_DAYS} "
            "days (target > 0.95, alert < 0.90).",
            0.01,
        ),
        (
            stats.AUTO_DEPLOY_SUCCESS_RATE,
            "skillstage_auto_deploy_success_ratio",
            f"Deploy hooks delivered, of those settled, in {stats.WINDOW_DAYS} days ("
            "target > 0.90, alert < 0.85).",
            0.01,
        ),
    ]
    for objective, name, help_text, scale in shown:
        metric = found.metric(objective.key)
        family = GaugeMetricFamily(name, help_text)
        if metric.value is not None:
            family.add_metric([], metric.value * scale)
        yield family
    breaching = GaugeMetricFamily(
        "skillstage_sla_breach_seconds",
        "How long a skill has been past its staging SLA (only skills in breach).",
        labels=["skill"],
    )
    for breach in found.metric(stats.SLA_BREACH_COUNT.key).numbers.get("breaches", []):
        breaching.add_metric([breach["name"]], breach["breach_hours"] * 3600)
    yield breaching


def _lag_families(project: Project, store: Store) -> Iterator[Metric]:
    """`skillstage metrics lag`'s figures (the same function, on this store)."""
    from skillstage.metrics.ingest import lag

    report = lag(store, project.metrics_inbox, alert_hours=project.config.metrics.lag_alert_hours)
    yield GaugeMetricFamily(
        "skillstage_ingestion_lag_seconds",
        "Age of the oldest execution record in the metrics inbox not yet ingested (0: none).",
        value=report.lag_seconds,
    )
    yield GaugeMetricFamily(
        "skillstage_ingestion_pending_bytes",
        "Bytes of the metrics inbox not yet ingested.",
        value=sum(f.pending_bytes for f in report.files),
    )
    yield GaugeMetricFamily(
        "skillstage_ingestion_unreadable_files",
        "Metrics inbox files that cannot be read (ingestion cannot get on with them).",
        value=len(report.unreadable),
    )
