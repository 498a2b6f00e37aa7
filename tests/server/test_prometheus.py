"""The Prometheus exposition on a real project (SQLite and PostgreSQL): executions recorded and
ingested through the API, promotions, a rollout, a rollback, an abort and a loader's breaker; the
scrape parsed with prometheus-client's own parser and every figure held against the store (rows
read back and counted in Python, the summary functions `status` uses, `skillstage stats`'s key
metrics, `metrics lag`, the outbox's items)."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle import stats
from skillstage.lifecycle.readiness import stay_start
from skillstage.metrics.summary import summarise
from skillstage.runtime import Loader
from skillstage.server import create_app
from skillstage.server.prometheus import exposition
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import metrics as store_metrics
from skillstage.store.exposition import DURATION_BUCKETS_MS
from skillstage.store.outbox import list_items
from tests.server.conftest import Live
from tests.skilltree import write_skill

ROLLED = "auth-v2"  # 1.0.0 live in production, 1.1.0 rolled out beside it
BROKEN = "search"  # 1.1.0 promoted over 1.0.0, then rolled back; its breaker opened
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana" / "skillstage.json"

Labels = frozenset[tuple[str, str]]


def scrape(project: Project, accept: str | None = None) -> dict[str, dict[Labels, float]]:
    """{sample name: {labels: value}} of a fresh exposition."""
    body, content_type = exposition(project, accept, max_age=0)
    assert content_type.startswith("text/plain")
    return samples(body.decode())


def samples(text: str) -> dict[str, dict[Labels, float]]:
    found: dict[str, dict[Labels, float]] = defaultdict(dict)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert isinstance(sample, Sample)
            found[sample.name][frozenset(sample.labels.items())] = sample.value
    return found


def labels(**values: str) -> Labels:
    return frozenset(values.items())


def record(project: Project, skill: SkillVersion, count: int, **fields: Any) -> None:
    for _ in range(count):
        api.record_execution(
            project, skill.name, version=skill.version, digest=skill.digest, **fields
        )


@dataclass
class World:
    project: Project
    stable: SkillVersion
    candidate: SkillVersion
    broken_good: SkillVersion
    broken_bad: SkillVersion


@pytest.fixture
def world(project: Project) -> World:
    root = project.root
    write_skill(root / STAGING, ROLLED)
    assert api.promote(project, [ROLLED], to="production", actor="tester")[0].success
    stable = read_skill(root / PRODUCTION / ROLLED)
    candidate = read_skill(write_skill(root / STAGING, ROLLED, extra={"version": "1.1.0"}))

    write_skill(root / STAGING, BROKEN)
    assert api.promote(project, [BROKEN], to="production", actor="tester")[0].success
    broken_good = read_skill(root / PRODUCTION / BROKEN)
    write_skill(root / STAGING, BROKEN, extra={"version": "1.1.0"})
    (moved,) = api.promote(project, [BROKEN], to="production", actor="tester", overwrite=True)
    assert moved.success, moved.error
    broken_bad = read_skill(root / PRODUCTION / BROKEN)

    started = api.rollout_start(
        project, ROLLED, actor="tester", step_min_duration="0s", step_min_executions=20
    )
    assert started.success, started.error

    # Executions of every kind, some tagged with a loader's arm, one benchmark run (not counted).
    record(project, stable, 6, pattern_fidelity=0.9, outcome_quality=0.8, execution_time_ms=3.0)
    record(project, stable, 2, exception=True, execution_time_ms=1_200.0, tags={"arm": "stable"})
    record(project, candidate, 3, pattern_fidelity=0.7, execution_time_ms=40.0, tags={"arm": "c"})
    record(project, candidate, 1, false_negative=True, critical=True, tags={"arm": "c"})
    record(project, candidate, 1, false_negative=True, execution_time_ms=400_000.0)
    record(project, candidate, 2, false_positive=True, outcome_quality=0.5)
    record(project, stable, 1, tags={"source": "eval"}, execution_time_ms=9.0)
    record(project, broken_bad, 4, pattern_fidelity=0.4, execution_time_ms=70.0)
    api.ingest_metrics(project)

    # The loader's breaker on the bad version opens after two failures in a row.
    with Loader(project, breaker_fail_max=2) as loader:
        for _ in range(2):
            loader.record(loader.resolve(BROKEN), exception=True, execution_time_ms=5.0)
    api.ingest_metrics(project)
    rolled = api.rollback(project, BROKEN, reason="it answers in Klingon", actor="tester")
    assert rolled.success, rolled.error
    return World(project, stable, candidate, broken_good, broken_bad)


@dataclass(frozen=True)
class StoredExecution:
    name: str
    version: str
    arm: str
    outcome: str
    time_ms: float | None


def stored_executions(project: Project) -> list[StoredExecution]:
    """Every execution in use, read back row by row (what the aggregate queries must match)."""
    with Store.open(project.database_url) as store, store.reading() as tx:
        rows = tx.query(
            "SELECT s.name, e.version, e.tags, e.exception, e.false_negative, e.critical,"
            " e.false_positive, e.execution_time_ms, e.benchmark FROM execution e"
            " JOIN skill s ON s.id = e.skill_id"
        )
        found = []
        for name, version, tags, exc, fn, critical, fp, time_ms, benchmark in rows:
            if benchmark:
                continue
            tag = tx.dialect.read_json(tags) or {}
            arm = str(tag.get("arm", "")) if isinstance(tag, dict) else ""
            if exc:
                outcome = "exception"
            elif fn and critical:
                outcome = "critical_miss"
            elif fn:
                outcome = "false_negative"
            elif fp:
                outcome = "false_positive"
            else:
                outcome = "success"
            found.append(StoredExecution(name, version or "", arm, outcome, time_ms))
        return found


def test_execution_counts_per_label_set_are_the_stores(world: World) -> None:
    stored = stored_executions(world.project)
    expected = Counter((e.name, e.version, e.arm, e.outcome) for e in stored)
    scraped = scrape(world.project)["skillstage_executions_total"]
    assert scraped == {
        labels(skill=n, version=v, arm=a, outcome=o): float(count)
        for (n, v, a, o), count in expected.items()
    }
    # (the recorded mix: the benchmark run is not counted; the loader's records carry an arm)
    assert sum(scraped.values()) == 6 + 2 + 3 + 1 + 1 + 2 + 4 + 2
    assert scraped[labels(skill=ROLLED, version="1.1.0", arm="c", outcome="critical_miss")] == 1
    assert scraped[labels(skill=BROKEN, version="1.1.0", arm="stable", outcome="exception")] == 2


def test_execution_time_histogram_buckets_and_sum_are_the_stores(world: World) -> None:
    stored = stored_executions(world.project)
    scraped = scrape(world.project)
    by_version: dict[tuple[str, str], list[float]] = defaultdict(list)
    for execution in stored:
        if execution.time_ms is not None:
            by_version[(execution.name, execution.version)].append(execution.time_ms)
    buckets = scraped["skillstage_execution_duration_seconds_bucket"]
    for (name, version), times in by_version.items():
        for bound in DURATION_BUCKETS_MS:
            le = repr(bound / 1000)
            assert buckets[labels(skill=name, version=version, le=le)] == sum(
                t <= bound for t in times
            ), (name, version, le)
        assert buckets[labels(skill=name, version=version, le="+Inf")] == len(times)
        key = labels(skill=name, version=version)
        assert scraped["skillstage_execution_duration_seconds_count"][key] == len(times)
        assert scraped["skillstage_execution_duration_seconds_sum"][key] == pytest.approx(
            math.fsum(times) / 1000
        )
    # 400 s is past the last bound: only +Inf holds it
    key = labels(skill=ROLLED, version="1.1.0")
    assert scraped["skillstage_execution_duration_seconds_count"][key] == 4
    assert buckets[labels(skill=ROLLED, version="1.1.0", le="300.0")] == 3


def test_live_version_gauges_are_the_summary_status_reads(world: World) -> None:
    scraped = scrape(world.project)
    with Store.open(world.project.database_url) as store, store.reading() as tx:
        live = tx.current_assignments()
        assert live
        for assignment in live:
            since = stay_start(tx, assignment.skill_id, assignment.stage, assignment.digest)
            rows = store_metrics.execution_rows(
                tx, assignment.skill_id, digest=assignment.digest, since=since, in_use=True
            )
            summary = summarise(rows)
            key = labels(skill=assignment.name, stage=assignment.stage, version=assignment.version)
            assert scraped["skillstage_live_executions"][key] == summary.count
            for metric, value in (
                ("skillstage_live_pattern_fidelity", summary.pattern_fidelity),
                ("skillstage_live_outcome_quality", summary.outcome_quality),
                ("skillstage_live_exception_ratio", summary.exception_rate),
            ):
                if value is None:
                    assert key not in scraped.get(metric, {}), metric
                else:
                    assert scraped[metric][key] == pytest.approx(value, rel=1e-12), metric
    # The stable version's sample holds what was recorded for it (not the benchmark run).
    key = labels(skill=ROLLED, stage="production", version="1.0.0")
    assert scraped["skillstage_live_executions"][key] == 8
    assert scraped["skillstage_live_pattern_fidelity"][key] == pytest.approx(0.9)
    assert scraped["skillstage_live_exception_ratio"][key] == pytest.approx(2 / 8)


def test_rollout_rollback_breaker_and_stage_metrics(world: World) -> None:
    project = world.project
    scraped = scrape(project)
    (status,) = api.rollout_status(project, ROLLED)
    rollout = status.rollout
    assert rollout.weight == 10
    key = labels(
        skill=ROLLED,
        stage="production",
        candidate_version="1.1.0",
        stable_version="1.0.0",
        state="active",
    )
    assert scraped["skillstage_rollout_weight_ratio"] == {key: rollout.weight / 100}
    assert scraped["skillstage_rollout_step"] == {key: 1.0}
    assert scraped["skillstage_rollbacks_total"] == {
        labels(skill=BROKEN, stage="production", reason="manual"): 1.0
    }
    assert scraped["skillstage_breaker_openings_total"] == {
        labels(skill=BROKEN, version="1.1.0", stage="production"): 1.0
    }
    assert scraped["skillstage_breakers_open"] == {
        labels(skill=BROKEN, version="1.1.0", stage="production"): 1.0
    }
    with Store.open(project.database_url) as store, store.reading() as tx:
        per_stage = Counter(a.stage for a in tx.current_assignments())
    assert scraped["skillstage_skills"] == {
        labels(stage=stage): float(per_stage.get(stage, 0)) for stage in project.config.stages
    }

    aborted = api.rollout_change(project, "abort", ROLLED, actor="tester", reason="too slow")
    assert aborted.success, aborted.error
    after = scrape(project)
    assert after["skillstage_rollout_aborts_total"] == {
        labels(skill=ROLLED, stage="production", reason="manual"): 1.0
    }
    assert "skillstage_rollout_weight_ratio" not in after  # no open rollout: no sample


def test_key_metrics_lag_and_outbox_are_what_the_commands_report(world: World) -> None:
    project = world.project
    # One record left in the inbox: ingestion is behind by its age.
    stamp = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=90)
    api.record_execution(project, ROLLED, version="1.0.0", timestamp=stamp)
    scraped = scrape(project)
    key_metrics = stats.collect(project)
    for name, objective, scale in (
        ("skillstage_staged_skills", stats.STAGED_SKILLS_COUNT, 1.0),
        ("skillstage_staging_average_age_seconds", stats.AVERAGE_TIME_IN_STAGING, 3600.0),
        ("skillstage_sla_breaches", stats.SLA_BREACH_COUNT, 1.0),
        ("skillstage_promotion_success_ratio", stats.PROMOTION_SUCCESS_RATE, 0.01),
        ("skillstage_auto_deploy_success_ratio", stats.AUTO_DEPLOY_SUCCESS_RATE, 0.01),
    ):
        value = key_metrics.metric(objective.key).value
        if value is None:
            assert not scraped.get(name), name
        else:
            assert scraped[name][frozenset()] == pytest.approx(value * scale, abs=1.0), name
    # Three promotions moved, none failed. The rollout's candidate was written into the staging
    # directory, never promoted there: the store has no skill in staged.
    assert scraped["skillstage_promotion_success_ratio"][frozenset()] == 1.0
    assert scraped["skillstage_staged_skills"][frozenset()] == 0
    assert "skillstage_staging_average_age_seconds" not in scraped  # n/a: left out, not 0

    lag = api.metrics_lag(project)
    assert lag.lag_seconds > 5_000
    assert scraped["skillstage_ingestion_lag_seconds"][frozenset()] == pytest.approx(
        lag.lag_seconds, abs=30
    )
    assert scraped["skillstage_ingestion_pending_bytes"][frozenset()] == sum(
        f.pending_bytes for f in lag.files
    )

    items = Counter(
        (item.kind, item.status) for item in list_items(Store.open(project.database_url))
    )
    assert scraped.get("skillstage_outbox_items", {}) == {
        labels(kind=kind, status=status): float(n) for (kind, status), n in items.items()
    }


def test_the_openmetrics_format_when_asked(world: World) -> None:
    body, content_type = exposition(
        world.project, "application/openmetrics-text; version=1.0.0", max_age=0
    )
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    # prometheus-client's OpenMetrics parser is strict (histogram buckets, counter suffixes, EOF)
    families = {f.name: f for f in openmetrics_families(text)}
    assert families["skillstage_executions"].type == "counter"
    assert families["skillstage_execution_duration_seconds"].type == "histogram"
    plain = scrape(world.project)
    assert {
        s.name: s.value
        for s in families["skillstage_executions"].samples
        if s.labels == {"skill": ROLLED, "version": "1.0.0", "arm": "", "outcome": "success"}
    } == {
        "skillstage_executions_total": plain["skillstage_executions_total"][
            labels(skill=ROLLED, version="1.0.0", arm="", outcome="success")
        ]
    }


def test_the_history_snapshot_is_reused_within_max_age_and_refreshed_after(
    world: World,
) -> None:
    project = world.project
    first = scrape(project)["skillstage_executions_total"]
    record(world.project, world.stable, 3)
    api.ingest_metrics(project)
    body, _ = exposition(project, max_age=3600)
    reused = samples(body.decode())
    assert reused["skillstage_executions_total"] == first  # the snapshot, not yet refreshed
    assert reused["skillstage_exposition_snapshot_age_seconds"][frozenset()] >= 0

    # Past max_age: the scrape answers at once from the old snapshot and refreshes it behind.
    time.sleep(0.05)
    body, _ = exposition(project, max_age=0.01)
    assert samples(body.decode())["skillstage_executions_total"] == first
    deadline = time.monotonic() + 30
    while True:
        body, _ = exposition(project, max_age=3600)
        refreshed = samples(body.decode())["skillstage_executions_total"]
        if refreshed != first or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert sum(refreshed.values()) == sum(first.values()) + 3
    assert scrape(project)["skillstage_executions_total"] == refreshed


# -- the Grafana dashboard -----------------------------------------------------------------


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def exposed_names(text: str) -> set[str]:
    """Every series name a scrape can carry, samples or not (a family with no sample yet
    still names its series)."""
    names: set[str] = set()
    suffixes = {
        "counter": ["_total"],
        "histogram": ["_bucket", "_sum", "_count"],
        "gauge": [""],
    }
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in suffixes.get(family.type, [""]))
        names.update(sample.name for sample in family.samples)
    return names


def test_the_grafana_dashboard_uses_only_exposed_metrics(world: World) -> None:
    board = json.loads(DASHBOARD.read_text())
    assert board["schemaVersion"] >= 36
    assert any(
        i["name"] == "DS_PROMETHEUS" and i["pluginId"] == "prometheus" for i in board["__inputs"]
    )
    body, _ = exposition(world.project, max_age=0)
    exposed = exposed_names(body.decode())
    used: set[str] = set()
    panels = list(_panels(board["panels"]))
    assert panels
    for panel in panels:
        if panel.get("type") == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = set(re.findall(r"\bskillstage_[a-z0-9_]+", target["expr"]))
            assert names, (panel["title"], target["expr"])
            used |= names
    assert used <= exposed, used - exposed
    # Seed 000's key metrics are on the board with their alert thresholds.
    thresholds = {
        panel["title"]: [
            step["value"] for step in panel["fieldConfig"]["defaults"]["thresholds"]["steps"]
        ]
        for panel in panels
        if panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds")
    }
    assert thresholds["Staged skills"] == [None, 10, 21]  # alert: > 20
    assert thresholds["Average time in staging"] == [None, 86_400, 129_600]
    assert thresholds["SLA breaches"] == [None, 1, 3]
    assert thresholds["Promotion success rate (30 days)"] == [None, 0.90, 0.95]
    assert thresholds["Auto-deploy success rate (30 days)"] == [None, 0.85, 0.90]


# -- through a real server -----------------------------------------------------------------


def test_metrics_route_on_a_real_server(world: World, live: Live) -> None:
    with live(create_app(world.project, auth=False)) as url:
        answer = httpx.get(f"{url}/metrics", timeout=30)
    assert answer.status_code == 200, answer.text[:500]
    assert answer.headers["content-type"].startswith("text/plain")
    scraped = samples(answer.text)
    expected = Counter(
        (e.name, e.version, e.arm, e.outcome) for e in stored_executions(world.project)
    )
    assert sum(scraped["skillstage_executions_total"].values()) == sum(expected.values())
