"""What the dashboard shows, gathered through `skillstage.api` and the rooms the CLI reads.

The overview is `list` + `sla check` + `stats` + `rollout status` + `hold list` + `history`, and
the breakers the loaders reported; a skill page is `history NAME`, `status NAME`,
`rollout status NAME`, `report NAME --failure`, the skill's stays in stages, and its executions
summarised per version and per time bucket for the charts. Nothing here writes SQL: the few
reads the API has no function for (`open_breakers`, `stays`, `version_series`,
`rollout_arm_series`) go through the store's own functions, and are candidates for `api.py`.
"""

from __future__ import annotations

import datetime as dt
import itertools
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from skillstage import api
from skillstage.config import Project
from skillstage.errors import SkillstageError

if TYPE_CHECKING:
    from skillstage.api import ListedSkill
    from skillstage.lifecycle.readiness import Readiness
    from skillstage.lifecycle.sla import StaleSkill
    from skillstage.lifecycle.stats import KeyMetrics
    from skillstage.metrics.summary import MetricsSummary
    from skillstage.rollout.engine import RolloutStatus
    from skillstage.store import Event, Store
    from skillstage.store.controls import Control
    from skillstage.store.metrics import Rows, Tenure
    from skillstage.store.rollouts import RolloutRecord

# Time buckets per chart: enough to show a trend, few enough that a page is a few dozen queries.
BUCKETS = 12
HISTORY_ON_OVERVIEW = 15
HISTORY_ON_SKILL_PAGE = 100
BREAKER_EVENTS_READ = 500


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# -- the overview --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Breaker:
    """A loader's circuit breaker whose latest event is an opening: still open, as far as the
    store knows (a loader that closes it writes `breaker_closed`)."""

    name: str
    version: str | None
    digest: str | None
    stage: str | None
    host: str
    since: dt.datetime
    reason: str | None
    trigger_metric: str | None


@dataclass
class Overview:
    """Everything on the overview page, as of `at`."""

    at: dt.datetime
    stages: list[str]
    sla_hours: dict[str, float]
    skills: list[ListedSkill]
    unreadable: list[tuple[str, str]]
    stale: dict[tuple[str, str], StaleSkill]  # (name, stage) -> over its SLA (exempt or not)
    key_metrics: KeyMetrics
    rollouts: list[RolloutStatus]
    controls: list[Control]  # holds and kill switches set now
    breakers: list[Breaker]
    history: list[Event]
    problems: list[str] = field(default_factory=list)  # a section that could not be read

    def skills_in(self, stage: str) -> list[ListedSkill]:
        return [skill for skill in self.skills if skill.stage == stage]

    def rollout_of(self, name: str, stage: str) -> RolloutStatus | None:
        return next(
            (r for r in self.rollouts if r.rollout.name == name and r.rollout.stage == stage),
            None,
        )

    def controls_of(self, name: str, stage: str) -> list[Control]:
        return [c for c in self.controls if c.name == name and c.covers(stage)]


def open_breakers(store: Store, *, name: str | None = None) -> list[Breaker]:
    """The breakers whose latest event (per skill, version, stage and loader) is an opening."""
    from skillstage.runtime.breaker import BREAKER_CLOSED, BREAKER_OPEN

    events = store.events(name, BREAKER_EVENTS_READ, kind=BREAKER_OPEN) + store.events(
        name, BREAKER_EVENTS_READ, kind=BREAKER_CLOSED
    )
    latest: dict[tuple[str, str | None, str | None, str], Event] = {}
    for event in sorted(events, key=lambda e: (e.at, e.id)):
        latest[(event.name, event.digest, event.from_stage, event.actor)] = event
    return [
        Breaker(
            e.name,
            e.version,
            e.digest,
            e.from_stage,
            e.actor,
            e.at,
            e.reason,
            e.trigger_metric,
        )
        for e in sorted(latest.values(), key=lambda e: e.at, reverse=True)
        if e.kind == BREAKER_OPEN
    ]


def overview(project: Project) -> Overview:
    """The overview: `skillstage list`, `sla check`, `stats`, `rollout status`, `hold list`,
    `history`, and the open breakers, each as the CLI reads it."""
    from skillstage.store import Store

    now = dt.datetime.now(dt.UTC)
    listing = api.list_skills(project, now=now)  # registers new versions first
    report = api.sla_check(project, listing=listing, now=now)  # from the same listing
    problems: list[str] = []
    rollouts: list[RolloutStatus] = []
    try:
        rollouts = api.rollout_status(project)
    except SkillstageError as exc:
        problems.append(f"rollouts: {exc.message}")
    with Store.open(project.database_url) as store:
        breakers = open_breakers(store)
    return Overview(
        at=now,
        stages=list(project.config.stages),
        sla_hours=dict(report.sla_stages),
        skills=listing.skills,
        unreadable=[(str(path), error) for path, error in listing.unreadable],
        stale={(s.name, s.stage): s for s in report.over},
        key_metrics=api.key_metrics(project),
        rollouts=rollouts,
        controls=api.switches(project),
        breakers=breakers,
        history=api.history(project, limit=HISTORY_ON_OVERVIEW),
        problems=problems,
    )


# -- a skill page ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Point:
    """The executions of one series in one time bucket [start, end)."""

    start: dt.datetime
    end: dt.datetime
    summary: MetricsSummary

    @property
    def middle(self) -> dt.datetime:
        return self.start + (self.end - self.start) / 2


@dataclass(frozen=True)
class Series:
    """One line of a chart: a version's executions (or a rollout arm's), bucketed in time."""

    label: str
    version: str
    digest: str
    total: MetricsSummary  # every execution of the series, as `skill_metrics` counts them
    points: list[Point]
    arm: str | None = None


@dataclass(frozen=True)
class ArmCharts:
    """A rollout's two arms over its duration: each arm's executions tagged with the rollout."""

    rollout: RolloutRecord
    series: list[Series]


@dataclass(frozen=True)
class Placed:
    """A version of the skill in a stage now, and how long it has been there."""

    stage: str
    version: str
    digest: str
    entered_at: dt.datetime
    age_hours: float


@dataclass
class SkillPage:
    """Everything on a skill's page, as of `at`."""

    name: str
    at: dt.datetime
    stages: list[str]
    current: list[Placed]  # where it is now, in stage order
    stays: list[Tenure]  # every stay in a stage, newest first
    events: list[Event]  # its history, newest first
    readiness: Readiness | None
    readiness_error: str | None
    readiness_hint: str | None
    rollouts: list[RolloutStatus]  # open rollouts
    controls: list[Control]
    breakers: list[Breaker]
    series: list[Series]
    arms: ArmCharts | None
    failure: dict[str, Any] | None  # the latest failure report's JSON
    failure_markdown: str | None
    timelines: dict[int, list[dict[str, Any]]]
    problems: list[str] = field(default_factory=list)

    @property
    def last_gated(self) -> Event | None:
        """Its latest promotion attempt (or rollout start) with the gates it ran, as recorded."""
        return _gated(self.events)


def _gated(events: list[Event]) -> Event | None:
    """The newest promotion attempt or rollout start whose gates the event recorded."""
    for event in events:
        gates = (event.details or {}).get("gates")
        if event.kind in ("promote", "rollout_start") and isinstance(gates, list) and gates:
            return event
    return None


def _buckets(
    first: dt.datetime, last: dt.datetime, count: int
) -> list[tuple[dt.datetime, dt.datetime]]:
    """`count` equal windows covering [first, last] (the last one closed at `last`)."""
    end = last + dt.timedelta(microseconds=1)  # `until` is exclusive
    span = end - first
    if span <= dt.timedelta(0):
        return [(first, end)]
    step = span / count
    edges = [first + step * index for index in range(count)] + [end]
    return list(itertools.pairwise(edges))


def _series(
    store: Store,
    skill_id: int,
    label: str,
    version: str,
    digest: str,
    *,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    span: tuple[dt.datetime, dt.datetime] | None = None,
    tagged: dict[str, str] | None = None,
    arm: str | None = None,
    read: Rows | None = None,
) -> Series | None:
    """The series of `digest`'s executions in [since, until); `read`: those executions, when
    the caller has just read them (the whole series is then not read a second time)."""
    from skillstage.metrics.summary import summarise
    from skillstage.store import metrics as store_metrics

    with store.reading() as tx:
        rows = (
            read
            if read is not None
            else store_metrics.execution_rows(
                tx,
                skill_id,
                digest=digest,
                since=since,
                until=until,
                in_use=True,
                unless_tagged_otherwise=tagged,
            )
        )
        if rows.count == 0 or rows.first is None or rows.last is None:
            return None
        first, last = span or (rows.first, rows.last)
        points = []
        for start, end in _buckets(first, last, BUCKETS):
            window = store_metrics.execution_rows(
                tx,
                skill_id,
                digest=digest,
                since=max(start, since) if since else start,
                until=min(end, until) if until else end,
                in_use=True,
                unless_tagged_otherwise=tagged,
            )
            if window.count:
                points.append(Point(start, end, summarise(window)))
    return Series(label, version, digest, summarise(rows), points, arm)


def version_series(store: Store, name: str) -> list[Series]:
    """Each version's executions in use (not its benchmark runs), in the same time buckets."""
    from skillstage.store import executions
    from skillstage.store import metrics as store_metrics

    with store.reading() as tx:
        skill_id = tx.skill_id(name)
        if skill_id is None:
            return []
        versions = executions.version_digests(tx, skill_id)
        spans = {}
        read: dict[str, Rows] = {}
        for version, digest in versions.items():
            rows = store_metrics.execution_rows(tx, skill_id, digest=digest, in_use=True)
            if rows.first is not None and rows.last is not None:
                spans[version] = (rows.first, rows.last)
                read[version] = rows  # each series' total: 10,000 rows are not read twice
    if not spans:
        return []
    # One time axis for every version, so the lines line up.
    span = (min(s[0] for s in spans.values()), max(s[1] for s in spans.values()))
    found = [
        _series(store, skill_id, version, version, versions[version], span=span, read=read[version])
        for version in sorted(spans, key=lambda v: spans[v][0])
    ]
    return [series for series in found if series is not None]


def rollout_arm_series(store: Store, rollout: RolloutRecord, now: dt.datetime) -> ArmCharts:
    """The rollout's stable and candidate arms during it: the executions of each digest since it
    started (until it ended) that the loader did not tag with another rollout."""
    until = rollout.ended_at or now
    span = (rollout.started_at, until)
    tagged = {"rollout_id": str(rollout.id)}
    arms = [
        ("stable", rollout.stable_version, rollout.stable_digest),
        ("candidate", rollout.candidate_version, rollout.candidate_digest),
    ]
    found = [
        _series(
            store,
            rollout.skill_id,
            f"{version} ({arm})",
            version,
            digest,
            since=rollout.started_at,
            until=until,
            span=span,
            tagged=tagged,
            arm=arm,
        )
        for arm, version, digest in arms
    ]
    return ArmCharts(rollout, [series for series in found if series is not None])


def stays(store: Store, name: str) -> list[Tenure]:
    """The skill's stays in stages, newest first (its version timeline)."""
    from skillstage.store import metrics as store_metrics

    with store.reading() as tx:
        skill_id = tx.skill_id(name)
        return store_metrics.tenures(tx, skill_id) if skill_id is not None else []


def skill_page(project: Project, name: str, *, readiness: bool = True) -> SkillPage:
    """A skill's page: `history NAME`, `status NAME` (the gates of its next move; `readiness`
    False skips it), `rollout status NAME`, `report NAME --failure`, its stays, and its
    executions per version (and per arm of its latest rollout) for the charts."""
    from skillstage.rollout import engine
    from skillstage.runtime.routing import UnknownSkillError
    from skillstage.store import Store
    from skillstage.watch.report import NoFailureReportError, failure_report

    now = _now()
    with Store.open(project.database_url) as store, store.reading() as tx:
        known = tx.skill_id(name) is not None
    if not known:
        raise UnknownSkillError(
            f"no skill named {name!r} in the store",
            hint="the overview lists every skill; `skillstage list` registers those on disk",
        )
    problems: list[str] = []
    events = api.history(project, name, limit=HISTORY_ON_SKILL_PAGE)
    checked: Readiness | None = None
    checked_error: str | None = None
    checked_hint: str | None = None
    if readiness:
        try:
            checked = api.readiness(project, name)
        except SkillstageError as exc:
            checked_error, checked_hint = exc.message, exc.hint
    open_rollouts = api.rollout_status(project, name)
    failure = markdown = None
    try:
        found = failure_report(project, name)
        failure, markdown = found.document, found.markdown
    except NoFailureReportError:
        pass
    except (SkillstageError, OSError) as exc:
        problems.append(f"failure report: {exc}")
    with Store.open(project.database_url) as store:
        with store.reading() as tx:
            current = tx.current_assignments(name=name)
        series = version_series(store, name)
        every_rollout = engine.history_of(store, name)
        arms = rollout_arm_series(store, every_rollout[0], now) if every_rollout else None
        breakers = open_breakers(store, name=name)
        stayed = stays(store, name)
    order = {stage: index for index, stage in enumerate(project.config.stages)}
    placed = [
        Placed(
            a.stage,
            a.version,
            a.digest,
            a.entered_at,
            round((now - a.entered_at).total_seconds() / 3600, 1),
        )
        for a in sorted(current, key=lambda a: order.get(a.stage, len(order)))
    ]
    return SkillPage(
        name=name,
        at=now,
        stages=list(project.config.stages),
        current=placed,
        stays=stayed,
        events=events,
        readiness=checked,
        readiness_error=checked_error,
        readiness_hint=checked_hint,
        rollouts=open_rollouts,
        controls=[c for c in api.switches(project) if c.name == name],
        breakers=breakers,
        series=series,
        arms=arms,
        failure=failure,
        failure_markdown=markdown,
        timelines=api.timelines(
            project, [e.id for e in events if e.kind in ("rollback", "rollout_abort")]
        ),
        problems=problems,
    )
