"""Seed 001's staging → production facts as gates: rollback-drill, uptime, monitoring; and the
seed 001 preset that names them."""

from __future__ import annotations

import datetime as dt
import tomllib
from pathlib import Path

import msgspec
import pytest

from skillstage import api
from skillstage.config import SEED001_CONFIG_TOML, Project, load_config_file, parse_config
from skillstage.errors import ConfigError
from skillstage.lifecycle.fact_gates import measure_uptime, monitoring_configured
from skillstage.lifecycle.gates import GateContext, GateResult
from skillstage.lifecycle.transition_gates import BUILTIN_GATES, gates_for
from skillstage.skill.checks import check_skill
from skillstage.skill.read import read_skill
from skillstage.store import Store
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
NAME = "auth-v2"
NOW = dt.datetime.now(dt.UTC)
DAY = dt.timedelta(days=1)
SQLITE_ONLY = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)


def check(project: Project, store: Store, gate: str) -> GateResult:
    """Run built-in gate `gate` on the staged copy of NAME, for staged → production."""
    path = project.root / STAGING / NAME
    skill = read_skill(path, project.config.validation)
    context = GateContext(
        project,
        store,
        skill,
        check_skill(path, project.config.validation, expected_name=NAME),
        "staged",
        "production",
        project.stage_path("production", NAME),
        False,
    )
    return BUILTIN_GATES[gate]().check(context)


def staged_since(project: Project, store: Store, entered: dt.datetime) -> str:
    """NAME 1.0.0 in staged since `entered`; its digest."""
    path = write_skill(project.root / STAGING, NAME)
    skill = read_skill(path, project.config.validation)
    with store.atomic() as tx:
        record = tx.register(skill, at=entered)
        tx.enter_stage(record.version_id, "staged", str(path), at=entered)
    return skill.digest


def with_thresholds(project: Project, **values: object) -> Project:
    """The project with staged → production's thresholds changed."""
    transitions = [
        msgspec.structs.replace(t, thresholds=msgspec.structs.replace(t.thresholds, **values))
        if t.to_stage == "production"
        else t
        for t in project.config.transitions
    ]
    config = msgspec.structs.replace(project.config, transitions=transitions)
    return Project(project.root, config, project.source)


# -- rollback-drill ------------------------------------------------------------------------------


def drill_event(store: Store, *, passed: bool, at: dt.datetime) -> None:
    steps = [
        {"step": "copy", "seconds": 0.01, "ok": True, "message": "copied"},
        {"step": "rollback", "seconds": 0.02, "ok": passed, "message": "production holds 1.0.0"},
    ]
    store.append_event(
        "drill",
        name=NAME,
        version="1.1.0",
        to_stage="production",
        actor="tester",
        success=passed,
        details={"versions": {"live": "1.1.0", "rollback_to": "1.0.0"}, "steps": steps},
        at=at,
    )


def test_rollback_drill_fails_without_a_drill_and_passes_after_a_real_one(
    project: Project, opened: Store
) -> None:
    write_skill(project.root / STAGING, NAME)
    api.list_skills(project)
    missing = check(project, opened, "rollback-drill")
    assert missing.status == "fail"
    assert missing.message == f"no rollback drill of {NAME} on record"
    assert f"skillstage drill {NAME}" in missing.details[0]
    assert api.drill(project, NAME).passed  # a first release: promoted, then rolled back
    passed = check(project, opened, "rollback-drill")
    assert passed.status == "pass", passed
    assert passed.message.startswith("rollback drill passed")
    assert "candidate 1.0.0" in passed.details[0]
    assert [d.split(":")[0] for d in passed.details[1:]] == ["copy", "promote", "rollback"]


@SQLITE_ONLY
def test_rollback_drill_reads_the_latest_drill_and_its_age(project: Project, opened: Store) -> None:
    write_skill(project.root / STAGING, NAME)
    drill_event(opened, passed=True, at=NOW - 2 * DAY)
    assert check(project, opened, "rollback-drill").status == "pass"
    drill_event(opened, passed=False, at=NOW - DAY)  # the latest failed: an older pass is not it
    failed = check(project, opened, "rollback-drill")
    assert (failed.status, failed.message) == (
        "fail",
        f"the latest rollback drill of {NAME} failed at its rollback step",
    )
    drill_event(opened, passed=True, at=NOW - 8 * DAY + dt.timedelta(seconds=1))
    # (recorded last but older: the latest by time is the failed one)
    assert check(project, opened, "rollback-drill").status == "fail"
    drill_event(opened, passed=True, at=NOW - DAY / 2)
    assert check(project, opened, "rollback-drill").status == "pass"


@SQLITE_ONLY
def test_rollback_drill_older_than_max_drill_age_days_fails(
    project: Project, opened: Store
) -> None:
    write_skill(project.root / STAGING, NAME)
    drill_event(opened, passed=True, at=NOW - 8 * DAY)
    old = check(project, opened, "rollback-drill")
    assert old.status == "fail"
    assert "passed 8.0 days ago, more than 7 days" in old.message
    assert (
        check(with_thresholds(project, max_drill_age_days=9), opened, "rollback-drill").status
        == "pass"
    )


# -- uptime --------------------------------------------------------------------------------------


def executions(
    project: Project, digest: str, count: int, *, exceptions: int = 0, start: dt.datetime
) -> None:
    """`count` executions of 1.0.0 a minute apart from `start`, the first `exceptions` raising."""
    for index in range(count):
        api.record_execution(
            project,
            NAME,
            version="1.0.0",
            digest=digest,
            timestamp=start + index * dt.timedelta(minutes=1),
            exception=index < exceptions,
        )


def test_uptime_passes_at_99_5_percent_of_200_executions_and_fails_below(
    project: Project, opened: Store
) -> None:
    digest = staged_since(project, opened, NOW - 8 * DAY)
    executions(project, digest, 200, exceptions=1, start=NOW - 3 * DAY)
    result = check(project, opened, "uptime")
    assert result.status == "pass", result
    assert result.message.startswith("uptime 99.50% over 7.0 days in staged")
    assert "1 exception(s) in 200 executions" in result.message
    executions(project, digest, 1, exceptions=1, start=NOW - DAY)  # 2 in 201: 99.0%
    failed = check(project, opened, "uptime")
    assert failed.status == "fail"
    assert "uptime %: 2 of 201 executions raised an exception" in failed.message
    uptime = next(c for c in failed.criteria if c["name"] == "uptime %")
    assert (round(uptime["actual"], 2), uptime["required"]) == (99.0, ">= 99.5")


@SQLITE_ONLY
def test_uptime_counts_only_the_window_and_needs_enough_executions(
    project: Project, opened: Store
) -> None:
    digest = staged_since(project, opened, NOW - 10 * DAY)
    executions(project, digest, 50, exceptions=50, start=NOW - 9 * DAY)  # before the window
    executions(project, digest, 199, start=NOW - 2 * DAY)
    short = check(project, opened, "uptime")
    assert short.status == "fail"
    assert "executions: 1 more needed to show the uptime" in short.message
    assert "0 exception(s) in 199 executions" in short.message
    passed = check(with_thresholds(project, min_uptime_executions=199), opened, "uptime")
    assert passed.status == "pass", passed
    # Over 10 days the old exceptions count.
    wide = with_thresholds(project, uptime_days=10, min_uptime_executions=1)
    assert check(wide, opened, "uptime").status == "fail"


@SQLITE_ONLY
def test_uptime_needs_the_version_in_its_stage_for_the_whole_window(
    project: Project, opened: Store
) -> None:
    digest = staged_since(project, opened, NOW - 2 * DAY)
    executions(project, digest, 300, start=NOW - DAY)
    young = check(project, opened, "uptime")
    assert young.status == "fail"
    assert "days in staged: 5.0 days to go" in young.message
    assert check(with_thresholds(project, uptime_days=2), opened, "uptime").status == "pass"


@SQLITE_ONLY
def test_uptime_of_a_version_not_recorded_in_its_stage_fails(
    project: Project, opened: Store
) -> None:
    write_skill(project.root / STAGING, NAME)  # never registered
    result = check(project, opened, "uptime")
    assert result.status == "fail"
    assert "no record of auth-v2 1.0.0 entering staged" in result.message


# -- monitoring ----------------------------------------------------------------------------------


def configured(project: Project, keys: str) -> Project:
    """The project with these keys under [monitoring]."""
    path = project.root / "skillstage.toml"
    text = path.read_text()
    assert text.count("\n[monitoring]\n") == 1
    path.write_text(text.replace("\n[monitoring]\n", f"\n[monitoring]\n{keys}"))
    return load_config_file(path)


@SQLITE_ONLY
def test_monitoring_fails_with_nothing_configured_and_says_what_to_set(
    project: Project, opened: Store
) -> None:
    write_skill(project.root / STAGING, NAME)
    assert monitoring_configured(project) == (
        False,
        "no monitoring target: set [monitoring] prometheus_url or alert_url, or a "
        f"[notifications] URL that hears alerts, in {project.source}",
    )
    assert check(project, opened, "monitoring").status == "fail"


@SQLITE_ONLY
def test_monitoring_names_the_target_without_its_secrets(project: Project, opened: Store) -> None:
    write_skill(project.root / STAGING, NAME)
    with_prometheus = configured(
        project,
        'prometheus_url = "http://scraper:secret@prometheus:9090/api"\n'
        'alert_url = "https://alerts.example.com/hook/T0KEN"\n',
    )
    ok, evidence = monitoring_configured(with_prometheus)
    assert ok
    assert evidence == (
        "[monitoring] prometheus_url = http://prometheus:9090; "
        "[monitoring] alert_url = https://alerts.example.com"
    )
    result = check(with_prometheus, opened, "monitoring")
    assert (result.status, result.message) == ("pass", f"monitoring configured: {evidence}")


@SQLITE_ONLY
def test_monitoring_counts_notification_urls_that_hear_alerts(project: Project) -> None:
    text = (project.root / "skillstage.toml").read_text()
    path = project.root / "skillstage.toml"
    path.write_text(text.replace("urls = []", 'urls = ["slack://tokenA/tokenB/tokenC"]'))
    ok, evidence = monitoring_configured(load_config_file(path))
    assert ok and evidence == "[notifications] 1 URL(s) hear alerts (slack://…)"
    assert "token" not in evidence
    narrow = '{ url = "mailto://ops@example.com", events = ["promoted"] }'
    path.write_text(text.replace("urls = []", f"urls = [{narrow}]"))
    assert monitoring_configured(load_config_file(path))[0] is False
    no_alerts = text.replace("urls = []", 'urls = ["json://hooks.example.com/x"]').replace(
        '    "alert", ', "    "
    )
    path.write_text(no_alerts)
    assert not load_config_file(path).config.notifications.events.count("alert")
    assert monitoring_configured(load_config_file(path))[0] is False


@SQLITE_ONLY
def test_a_monitoring_url_that_is_not_a_url_is_a_config_error(project: Project) -> None:
    with pytest.raises(ConfigError, match="prometheus_url"):
        configured(project, 'prometheus_url = "prometheus:9090"\n')


# -- the preset ----------------------------------------------------------------------------------


def test_the_seed001_preset_names_the_fact_gates_into_production(tmp_path: Path) -> None:
    config = parse_config(tomllib.loads(SEED001_CONFIG_TOML), tmp_path / "skillstage.toml")
    into_production = next(t for t in config.transitions if t.to_stage == "production")
    assert {"rollback-drill", "uptime", "monitoring", "approval"} <= set(into_production.gates)
    thresholds = into_production.thresholds
    assert (thresholds.min_uptime, thresholds.uptime_days, thresholds.max_drill_age_days) == (
        99.5,
        7,
        7,
    )
    project = Project(tmp_path, config, tmp_path / "skillstage.toml")
    built = {g.name: type(g).__name__ for g in gates_for(project, into_production)}
    assert built["rollback-drill"] == "RollbackDrillGate"
    assert built["uptime"] == "UptimeGate"
    assert built["monitoring"] == "MonitoringGate"
    into_staging = next(t for t in config.transitions if t.to_stage == "staging")
    assert not {"rollback-drill", "uptime", "monitoring"} & set(into_staging.gates)
    # "Security review complete" stays with the sign-off checklist.
    assert "security review complete" in SEED001_CONFIG_TOML


@SQLITE_ONLY
def test_measure_uptime_counts_the_stay_within_the_window(project: Project, opened: Store) -> None:
    digest = staged_since(project, opened, NOW - 3 * DAY)
    executions(project, digest, 10, exceptions=2, start=NOW - 2 * DAY)
    executions(project, "c" * 64, 5, exceptions=5, start=NOW - DAY)  # another content's
    api.ingest_metrics(project)
    measured = measure_uptime(opened, NAME, digest, "staged", days=7, now=NOW)
    assert measured is not None
    assert measured.since == measured.entered  # staged 3 days ago: the stay is the window
    assert (measured.executions, measured.exceptions, measured.percent) == (10, 2, 80.0)
    later = measure_uptime(opened, NAME, digest, "staged", days=1, now=NOW)
    assert later is not None and (later.executions, later.percent) == (0, None)
    assert measure_uptime(opened, NAME, digest, "production", days=7) is None
    assert measure_uptime(opened, "unknown", digest, "staged", days=7) is None
