"""`skillstage stats` (seed 000's key metrics) and `skillstage report` (seed 001's promotion
report) after real promotions on real stores; the seed's dashboard SQL agrees with the numbers."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.integrations.outbox import retry
from skillstage.lifecycle import report as reports
from skillstage.lifecycle import stats
from skillstage.lifecycle.promote import PromotionResult
from skillstage.lifecycle.stats import Objective, Status
from skillstage.store import Store
from tests.seed_sql import (
    PROMOTION_HISTORY,
    PROMOTION_SUCCESS_RATE,
    SKILLS_IN_STAGING,
    SLA_BREACHES,
)
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
HOUR = dt.timedelta(hours=1)
FAILING_TEST = "#!/bin/bash\necho 'expected 2, got 3' >&2\nexit 1\n"


def _stage(project: Project, name: str, **kwargs: Any) -> Path:
    return write_skill(project.root / STAGING, name, **kwargs)


def _promote(project: Project, name: str, **kwargs: Any) -> PromotionResult:
    (result,) = api.promote(project, [name], actor="tester", **kwargs)
    return result


def _metrics(project: Project, now: dt.datetime | None = None) -> dict[str, Any]:
    collected = stats.collect(project, now=now).to_dict()
    return {metric["key"]: metric for metric in collected["metrics"]}


def _with_deploy_hook(project: Project) -> Project:
    """The project with a deploy hook that fails for skills named bad-*, and no retry waits."""
    script = project.root / "deploy.sh"
    script.write_text(
        '#!/bin/bash\ncase "$SKILLSTAGE_SKILL" in bad-*) echo "cluster said no" >&2; exit 1;; '
        'esac\necho "dep-$SKILLSTAGE_SKILL-$SKILLSTAGE_VERSION"\n'
    )
    script.chmod(0o755)
    config = project.root / "skillstage.toml"
    content = config.read_text()
    for old, new in {
        '# deploy = "scripts/deploy.sh"': 'deploy = "./deploy.sh"',
        "retries = 3 ": "retries = 0 ",
        "retry_base_seconds = 1": "retry_base_seconds = 0",
    }.items():
        assert old in content
        content = content.replace(old, new)
    config.write_text(content)
    return load_config_file(config)


# -- statuses -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("objective", "value", "status"),
    [
        (stats.STAGED_SKILLS_COUNT, 0, "ok"),
        (stats.STAGED_SKILLS_COUNT, 9, "ok"),
        (stats.STAGED_SKILLS_COUNT, 10, "warn"),
        (stats.STAGED_SKILLS_COUNT, 20, "warn"),
        (stats.STAGED_SKILLS_COUNT, 21, "alert"),
        (stats.AVERAGE_TIME_IN_STAGING, 23.9, "ok"),
        (stats.AVERAGE_TIME_IN_STAGING, 24, "warn"),
        (stats.AVERAGE_TIME_IN_STAGING, 36, "warn"),
        (stats.AVERAGE_TIME_IN_STAGING, 36.1, "alert"),
        (stats.SLA_BREACH_COUNT, 0, "ok"),
        (stats.SLA_BREACH_COUNT, 1, "warn"),
        (stats.SLA_BREACH_COUNT, 2, "warn"),
        (stats.SLA_BREACH_COUNT, 3, "alert"),
        (stats.PROMOTION_SUCCESS_RATE, 100, "ok"),
        (stats.PROMOTION_SUCCESS_RATE, 95.01, "ok"),
        (stats.PROMOTION_SUCCESS_RATE, 95, "warn"),
        (stats.PROMOTION_SUCCESS_RATE, 90, "warn"),
        (stats.PROMOTION_SUCCESS_RATE, 89.99, "alert"),
        (stats.AUTO_DEPLOY_SUCCESS_RATE, 90.01, "ok"),
        (stats.AUTO_DEPLOY_SUCCESS_RATE, 90, "warn"),
        (stats.AUTO_DEPLOY_SUCCESS_RATE, 85, "warn"),
        (stats.AUTO_DEPLOY_SUCCESS_RATE, 84.99, "alert"),
        (stats.AUTO_DEPLOY_SUCCESS_RATE, None, "n/a"),
    ],
)
def test_status_follows_seed_000s_targets_and_alert_thresholds(
    objective: Objective, value: float | None, status: Status
) -> None:
    assert objective.status(value) == status


def test_targets_and_thresholds_read_as_seed_000_writes_them() -> None:
    table = [(o.label, str(o.target), str(o.alert)) for o in stats.OBJECTIVES]
    assert table == [
        ("Staged Skills Count", "< 10", "> 20"),
        ("Average Time in Staging", "< 24h", "> 36h"),
        ("SLA Breach Count", "0", "> 2"),
        ("Promotion Success Rate", "> 95%", "< 90%"),
        ("Auto-Deploy Success Rate", "> 90%", "< 85%"),
    ]


# -- key metrics on real stores -----------------------------------------------------------------


def test_no_data_is_not_applicable_not_a_division_by_zero(project: Project) -> None:
    metrics = _metrics(project)
    assert {key: (m["value"], m["display"], m["status"]) for key, m in metrics.items()} == {
        "staged_skills_count": (0, "0", "ok"),
        "average_time_in_staging": (None, "n/a", "n/a"),
        "sla_breach_count": (0, "0", "ok"),
        "promotion_success_rate": (None, "n/a", "n/a"),
        "auto_deploy_success_rate": (None, "n/a", "n/a"),
    }


def test_metrics_after_real_promotions(project: Project) -> None:
    project = _with_deploy_hook(project)
    now = dt.datetime.now(dt.UTC)
    _stage(project, "auth-v2")
    _stage(project, "bad-deploy")
    _stage(project, "flaky", test=FAILING_TEST)
    _stage(project, "waiting")
    _stage(project, "overridden", extra={"sla_override": True, "sla_override_reason": "review"})
    api.list_skills(project, now=now - 50 * HOUR)  # all five entered staging 50 hours ago

    assert _promote(project, "auth-v2", deploy=True).success
    assert _promote(project, "bad-deploy", deploy=True).success  # promoted; its deploy fails
    assert not _promote(project, "flaky").success  # refused by the tests gate
    metrics = _metrics(project)

    staged = metrics["staged_skills_count"]
    assert (staged["value"], staged["status"]) == (3, "ok")
    assert sorted(staged["skills"]) == ["flaky", "overridden", "waiting"]
    average = metrics["average_time_in_staging"]
    assert average["value"] == pytest.approx(50.0, abs=0.1) and average["status"] == "alert"
    assert average["finished_stays"] == 2  # auth-v2 and bad-deploy left staging
    sla = metrics["sla_breach_count"]
    assert (sla["value"], sla["status"]) == (2, "warn")
    assert sorted(b["name"] for b in sla["breaches"]) == ["flaky", "waiting"]
    assert sla["exempt"] == ["overridden"]
    rate = metrics["promotion_success_rate"]
    assert (rate["total_promotions"], rate["successful"]) == (3, 2)
    # flaky's refusal is a gate saying no, not a failed promotion: counted apart.
    assert (rate["refused"], rate["failed"], rate["rate_counting_refusals"]) == (1, 0, 66.67)
    assert (rate["value"], rate["display"], rate["status"]) == (100.0, "100.00%", "ok")
    deploy = metrics["auto_deploy_success_rate"]
    # bad-deploy's deploy failed once and will be retried: not settled, not counted yet.
    assert (deploy["delivered"], deploy["failed"], deploy["unsettled"]) == (1, 0, 1)
    assert (deploy["value"], deploy["status"]) == (100.0, "ok")

    with Store.open(project.database_url) as store:
        retry(project, store)
        retry(project, store)  # the third delivery uses up its automatic attempts: failed
    deploy = _metrics(project)["auto_deploy_success_rate"]
    assert (deploy["delivered"], deploy["failed"], deploy["unsettled"]) == (1, 1, 0)
    assert (deploy["value"], deploy["status"]) == (50.0, "alert")


def test_the_window_is_30_days(project: Project) -> None:
    _stage(project, "auth-v2")
    assert _promote(project, "auth-v2").success
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    assert _metrics(project, later)["promotion_success_rate"]["status"] == "n/a"


def test_an_expired_or_unexplained_override_exempts_nothing() -> None:
    today = dt.date(2025, 11, 20)
    assert stats.sla_exempt({"sla_override": True, "sla_override_reason": "r"}, today)
    until = {"sla_override": True, "sla_override_reason": "r", "sla_override_expires": "2025-11-20"}
    assert stats.sla_exempt(until, today)
    assert not stats.sla_exempt(until, today + dt.timedelta(days=1))
    assert not stats.sla_exempt({"sla_override": True}, today)
    assert not stats.sla_exempt({"sla_override_reason": "r"}, today)


def test_without_any_sla_the_breach_count_is_not_applicable(project: Project) -> None:
    config = project.root / "skillstage.toml"
    config.write_text(config.read_text().replace("sla_hours = 48\n", ""))
    project = load_config_file(config)
    assert stats.staging_stages(project) == ["staged"]  # the stage before the last
    _stage(project, "auth-v2")
    api.list_skills(project)
    metrics = _metrics(project)
    assert metrics["staged_skills_count"]["value"] == 1
    assert (metrics["sla_breach_count"]["value"], metrics["sla_breach_count"]["status"]) == (
        None,
        "n/a",
    )


# -- the seed's dashboard SQL, unchanged, agrees ------------------------------------------------


def _run(store: Store, sql: str) -> list[tuple[Any, ...]]:
    with store.atomic() as tx:
        return [tuple(row) for row in tx.query(sql)]


def test_seed_dashboard_queries_agree_with_the_metrics(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SKILLSTAGE_DATABASE_URL", raising=False)  # the embedded SQLite store
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    assert project.database_url.startswith("sqlite:")
    now = dt.datetime.now(dt.UTC)
    _stage(project, "logging-v3")
    _stage(project, "stale-x")
    api.list_skills(project, now=now - 52.3 * HOUR)  # seed 000's example: 52.3 h in staging
    _stage(project, "auth-v2")
    _stage(project, "flaky", test=FAILING_TEST)
    api.list_skills(project, now=now - 12.5 * HOUR)
    assert _promote(project, "stale-x").success
    assert not _promote(project, "flaky").success
    assert _promote(project, "auth-v2").success
    metrics = _metrics(project, now)

    with Store.open(project.database_url) as store:
        in_staging = _run(store, SKILLS_IN_STAGING)
        rate = _run(store, PROMOTION_SUCCESS_RATE)
        breaches = _run(store, SLA_BREACHES)
        history = _run(store, PROMOTION_HISTORY)

    assert [(name, age) for name, _, age in in_staging] == [("logging-v3", 52.3), ("flaky", 12.5)]
    assert metrics["staged_skills_count"]["value"] == len(in_staging) == 2
    mean_age = sum(age for _, _, age in in_staging) / len(in_staging)
    assert metrics["average_time_in_staging"]["value"] == pytest.approx(mean_age, abs=0.1)

    assert rate == [(3, 2, 66.67)]
    promotions = metrics["promotion_success_rate"]
    # The seed's rate counts flaky's refusal as a failure; ours counts it apart, and gives the
    # seed's figure beside it.
    assert (
        promotions["total_promotions"],
        promotions["successful"],
        promotions["rate_counting_refusals"],
    ) == (3, 2, 66.67)
    assert (promotions["refused"], promotions["value"]) == (1, 100.0)

    assert [(name, age, breach) for name, _, age, breach in breaches] == [("logging-v3", 52.3, 4.3)]
    sla = metrics["sla_breach_count"]
    assert sla["value"] == len(breaches) == 1
    assert sla["breaches"] == [{"name": "logging-v3", "breach_hours": 4.3}]

    assert [(name, by) for name, _, by, _ in history] == [
        ("auth-v2", "tester"),
        ("flaky", "tester"),
        ("stale-x", "tester"),
    ]
    assert history[0][3] == str(project.root / PRODUCTION / "auth-v2")
    assert history[1][3] == str(project.root / STAGING / "flaky")  # refused: it stayed put


# -- the promotion report -----------------------------------------------------------------------


SEED_001_KEYS = {
    "component",
    "from_stage",
    "to_stage",
    "date",
    "quality_gates",
    "promotion_criteria",
    "deployment",
    "validation",
}


def test_report_has_seed_001s_shape_filled_from_the_store(project: Project) -> None:
    project = _with_deploy_hook(project)
    _stage(project, "auth-v2")
    promoted = _promote(project, "auth-v2", deploy=True)
    assert promoted.success

    document = reports.report(project, "auth-v2", run_tests=True).to_dict()
    assert set(document) >= SEED_001_KEYS
    assert (document["component"], document["from_stage"], document["to_stage"]) == (
        "auth-v2",
        "staged",
        "production",
    )
    assert promoted.at is not None
    assert document["date"] == promoted.at.isoformat()
    assert document["quality_gates"] == {
        "coverage": None,
        "tests_passing": True,
        "linting": "clean",
        "type_checking": "not run",
        "security": "clean",
    }
    criteria = document["promotion_criteria"]
    assert criteria["all_met"] is True and criteria["forced"] == []
    assert [g["gate"] for g in criteria["details"]] == [g.gate for g in promoted.gates]
    assert document["deployment"] == {
        "success": True,
        "status": "delivered",
        "environment": "production",
        "version": "1.0.0",
        "deployment_id": "dep-auth-v2-1.0.0",
        "attempts": 1,
        "last_error": None,
    }
    validation = document["validation"]
    assert (validation["smoke_tests"], validation["health_checks"], validation["monitoring"]) == (
        "passed",
        "passed",
        "normal",
    )
    assert validation["matches_promoted"] is True
    json.dumps(document)  # JSON-able as it stands


def test_report_of_a_forced_promotion_says_what_was_forced(project: Project) -> None:
    _stage(project, "auth-v2", test=FAILING_TEST)
    assert _promote(project, "auth-v2", force=True, reason="hotfix INC-1").success

    document = reports.report(project, "auth-v2").to_dict()
    assert document["quality_gates"]["tests_passing"] is False
    criteria = document["promotion_criteria"]
    assert (criteria["all_met"], criteria["forced"], criteria["reason"]) == (
        False,
        ["tests"],
        "hotfix INC-1",
    )
    assert document["deployment"]["status"] == "not requested"
    # Re-run now on the live copy, its test.sh still fails.
    rerun = reports.report(project, "auth-v2", run_tests=True).to_dict()["validation"]
    assert (rerun["smoke_tests"], rerun["health_checks"]) == ("failed", "failed")


def test_report_of_a_refused_attempt_and_of_a_rollback(project: Project) -> None:
    _stage(project, "auth-v2")
    assert _promote(project, "auth-v2").success
    _stage(project, "auth-v2", extra={"version": "1.1.0"}, test=FAILING_TEST)
    assert not _promote(project, "auth-v2", overwrite=True).success

    refused = reports.report(project, "auth-v2").to_dict()
    assert (refused["success"], refused["version"]) == (False, "1.1.0")
    assert refused["promotion_criteria"]["all_met"] is False
    assert refused["deployment"]["status"] == "not promoted"
    assert refused["validation"]["live_version"] == "1.0.0"
    assert "production now holds 1.0.0, not the promoted 1.1.0" in refused["validation"]["notes"]

    _stage(project, "auth-v2", extra={"version": "1.1.0"})
    assert _promote(project, "auth-v2", overwrite=True).success
    api.rollback(project, "auth-v2", reason="fidelity dropped")
    rolled = reports.report(project, "auth-v2").to_dict()
    assert (rolled["version"], rolled["validation"]["monitoring"]) == ("1.1.0", "rolled back")
    assert rolled["validation"]["matches_promoted"] is False


def test_report_of_an_edited_live_copy_points_at_doctor(project: Project) -> None:
    _stage(project, "auth-v2")
    assert _promote(project, "auth-v2").success
    skill_md = project.root / PRODUCTION / "auth-v2" / "SKILL.md"
    skill_md.write_text(skill_md.read_text() + "\nedited\n")
    validation = reports.report(project, "auth-v2").to_dict()["validation"]
    assert validation["matches_promoted"] is False
    assert any("skillstage doctor" in note for note in validation["notes"])


def test_report_of_a_skill_never_promoted_is_a_usage_error(project: Project) -> None:
    with pytest.raises(UsageError, match="no promotion of 'ghost'"):
        reports.report(project, "ghost")


# -- the commands -------------------------------------------------------------------------------

Cli = Callable[..., int]


@pytest.fixture
def cli(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """`skillstage …` in this process, with `stats` and `report` registered until main.py does."""
    from skillstage.cli.main import cli as group
    from skillstage.cli.main import main
    from skillstage.cli.stats import report, stats

    added = [c for c in (stats, report) if c.name not in group.commands]
    for command in added:
        group.add_command(command)
    monkeypatch.chdir(project.root)

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        code = exited.value.code
        assert isinstance(code, int)
        return code

    yield run
    for command in added:
        assert command.name is not None
        group.commands.pop(command.name)


def test_stats_command(project: Project, cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("stats") == 0
    out = capsys.readouterr().out
    assert "KEY METRICS (staging: staged)" in out
    assert "Promotion Success Rate" in out and "n/a" in out

    for name in ("a-skill", "b-skill", "c-skill"):
        _stage(project, name)
    api.list_skills(project, now=dt.datetime.now(dt.UTC) - 49 * HOUR)
    assert cli("stats", "--json") == 1  # three SLA breaches: past the alert threshold
    data = json.loads(capsys.readouterr().out)
    sla = next(m for m in data["metrics"] if m["key"] == "sla_breach_count")
    assert (sla["value"], sla["target"], sla["alert_threshold"], sla["status"]) == (
        3,
        "0",
        "> 2",
        "alert",
    )
    assert data["window_days"] == 30


def test_report_command(project: Project, cli: Cli, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("report", "auth-v2") == 2
    assert "no promotion of 'auth-v2'" in capsys.readouterr().err

    _stage(project, "auth-v2")
    assert _promote(project, "auth-v2").success
    assert cli("report", "auth-v2") == 0
    out = capsys.readouterr().out
    assert "PROMOTION REPORT: auth-v2 1.0.0 (staged → production, promoted)" in out
    assert "health_checks:" in out
    assert cli("report", "auth-v2", "--json") == 0
    assert set(json.loads(capsys.readouterr().out)) >= SEED_001_KEYS
