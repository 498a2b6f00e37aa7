"""The watcher end to end, on real stores (SQLite and PostgreSQL), real skill trees and real
recorded executions (through `api.record_execution` and the inbox, as a host records).

Every trigger is shown with real figures: it waits while its window is not full (saying how many
executions it has), does not fire on a value on its threshold, and fires one execution past it.
A pass that fires rolls back through the promoter, holds the skill, alerts, and a loader serves
the version before; a hold stops re-promotion; the kill switch reaches a loader in another
process; an alert goes out once per episode and its recovery once.
"""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.rollout.guard import SkillHeldError
from skillstage.runtime import Loader
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import controls as store_controls
from skillstage.watch.triggers import Finding
from skillstage.watch.watcher import Watcher
from tests.skilltree import write_skill

NAME = "auth-v2"
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")


def _configure(project: Project, text: str) -> Project:
    """Append TOML to the project's config and read it again."""
    path = project.root / "skillstage.toml"
    path.write_text(path.read_text() + "\n" + text)
    return load_config_file(path)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@dataclass
class Live:
    """1.0.0 was live in production; 1.1.0 replaced it and is live now."""

    project: Project
    old: SkillVersion
    new: SkillVersion


def _promote(project: Project, version: str) -> SkillVersion:
    write_skill(project.root / STAGING, NAME, extra={"version": version})
    (done,) = api.promote(project, [NAME], to="production", actor="tester", overwrite=True)
    assert done.success, done.error
    return read_skill(project.root / PRODUCTION / NAME)


@pytest.fixture
def live(project: Project) -> Live:
    old = _promote(project, "1.0.0")
    new = _promote(project, "1.1.0")
    assert old.digest != new.digest
    return Live(project, old, new)


def record(
    project: Project,
    skill: SkillVersion,
    count: int,
    *,
    fidelity: float | None = 0.95,
    quality: float | None = 0.9,
    time_ms: float | None = 10.0,
    at: dt.datetime | None = None,
    **fields: Any,
) -> None:
    for _ in range(count):
        api.record_execution(
            project,
            NAME,
            version=skill.version,
            digest=skill.digest,
            pattern_fidelity=fidelity,
            outcome_quality=quality,
            execution_time_ms=time_ms,
            **({"timestamp": at} if at is not None else {}),
            **fields,
        )


def findings(project: Project) -> dict[str, Finding]:
    api.ingest_metrics(project)
    with Store.open(project.database_url) as store:
        watcher = Watcher(project, store)
        (version,) = [v for v in watcher.live_versions() if v.name == NAME]
        return {f.code: f for f in watcher.findings(version)}


def history_of(project: Project, kind: str) -> list[Any]:
    return [e for e in api.history(project, NAME, limit=1000) if e.kind == kind]


# -- every trigger -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "field", "bad", "on_threshold", "metric"),
    [
        ("pattern_fidelity_drop_below_85", "fidelity", 0.80, 0.85, "fidelity=0.80"),
        ("outcome_quality_drop_below_80", "quality", 0.70, 0.80, "quality=0.70"),
    ],
)
def test_a_mean_trigger_waits_for_its_window_and_fires_below_the_threshold(
    live: Live, code: str, field: str, bad: float, on_threshold: float, metric: str
) -> None:
    project = live.project
    record(project, live.new, 9, **{field: bad})
    found = findings(project)[code]
    assert not found.fired and found.metric is None
    assert "9/10 executions" in found.detail
    record(project, live.new, 1, **{field: bad})
    found = findings(project)[code]
    assert found.fired and found.metric == metric
    # Ten more on the threshold itself: the window's mean is the threshold, which is not below.
    record(project, live.new, 10, **{field: on_threshold})
    found = findings(project)[code]
    assert not found.fired, found.detail
    # One more just under it moves the window's mean below.
    record(project, live.new, 1, **{field: on_threshold - 0.02})
    assert findings(project)[code].fired


def test_one_critical_false_negative_fires(live: Live) -> None:
    record(live.project, live.new, 3)
    assert not findings(live.project)["critical_false_negative"].fired
    record(live.project, live.new, 1, false_negative=True)  # a miss, not critical
    assert not findings(live.project)["critical_false_negative"].fired
    record(live.project, live.new, 1, false_negative=True, critical=True)
    found = findings(live.project)["critical_false_negative"]
    assert found.fired and found.metric == "critical_false_negatives=1"


@pytest.mark.parametrize(
    ("code", "flag", "at_limit", "metric"),
    [
        ("false_positive_rate_above_10pct", "false_positive", 2, "false_positive_rate=0.15"),
        ("exception_rate_above_5pct", "exception", 1, "exception_rate=0.10"),
    ],
)
def test_a_rate_trigger_waits_for_its_window_and_fires_above_the_rate(
    live: Live, code: str, flag: str, at_limit: int, metric: str
) -> None:
    project = live.project
    record(project, live.new, at_limit + 1, **{flag: True})
    record(project, live.new, 20 - at_limit - 2)
    found = findings(project)[code]
    assert not found.fired and "19/20 executions" in found.detail
    # The window fills: one flagged execution more than the limit allows in 20.
    record(project, live.new, 1)
    found = findings(project)[code]
    assert found.fired and found.metric == metric


def test_rates_on_the_limit_do_not_fire(live: Live) -> None:
    project = live.project
    record(project, live.new, 2, false_positive=True)  # 2/20 = 10%: not above 10%
    record(project, live.new, 1, exception=True)  # 1/20 = 5%: not above 5%
    record(project, live.new, 17)
    found = findings(project)
    assert not found["false_positive_rate_above_10pct"].fired
    assert not found["exception_rate_above_5pct"].fired
    assert found["false_positive_rate_above_10pct"].metric == "false_positive_rate=0.10"


def test_execution_time_against_the_baseline_before_the_stage(project: Project) -> None:
    _promote(project, "1.0.0")
    staged = read_skill(write_skill(project.root / STAGING, NAME, extra={"version": "1.1.0"}))
    # Its baseline: 20 executions at 10 ms while it waited in staging.
    record(project, staged, 20, time_ms=10.0, at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=1))
    new = _promote(project, "1.1.0")
    assert new.digest == staged.digest
    record(project, new, 10, time_ms=30.0)  # exactly 3x: not above
    found = findings(project)["execution_time_above_3x_baseline"]
    assert not found.fired and "before the stage" in found.detail
    record(project, new, 1, time_ms=40.0)
    found = findings(project)["execution_time_above_3x_baseline"]
    assert found.fired and found.metric == "execution_time_ratio=3.10"


def test_execution_time_baseline_from_its_first_executions_in_the_stage(live: Live) -> None:
    project = live.project
    record(project, live.new, 19, time_ms=10.0)
    found = findings(project)["execution_time_above_3x_baseline"]
    assert not found.fired and "19/20" in found.detail  # the baseline is not complete yet
    record(project, live.new, 1, time_ms=10.0)
    record(project, live.new, 9, time_ms=50.0)
    assert "9/10" in findings(project)["execution_time_above_3x_baseline"].detail
    record(project, live.new, 1, time_ms=50.0)
    found = findings(project)["execution_time_above_3x_baseline"]
    assert found.fired and found.metric == "execution_time_ratio=5.00"


def test_seed_001s_optional_triggers_are_off_until_set(live: Live) -> None:
    record(live.project, live.new, 20, exception=False, false_negative=False)
    assert "error_rate_above_1pct" not in findings(live.project)
    project = _configure(
        live.project,
        "[triggers.skills.auth-v2]\nmax_error_rate = 0.01\nmax_performance_degradation = 0.2\n",
    )
    found = findings(project)
    assert not found["error_rate_above_1pct"].fired
    record(project, live.new, 1, false_negative=True)  # a miss is an error: 1/20 = 5%
    found = findings(project)
    assert found["error_rate_above_1pct"].fired
    assert found["error_rate_above_1pct"].metric == "error_rate=0.05"
    assert "performance_degradation_above_20pct" in found


def test_a_failing_dependency_fires_with_its_name(live: Live) -> None:
    (live.project.root / "check-db.sh").write_text(
        "#!/bin/sh\necho 'db: connection refused'\nexit 2\n"
    )
    (live.project.root / "check-db.sh").chmod(0o755)
    project = _configure(
        live.project,
        '[dependencies.db]\ncommand = "./check-db.sh"\nskills = ["auth-v2"]\n',
    )
    with Store.open(project.database_url) as store:
        watcher = Watcher(project, store, dry_run=True)
        result = watcher.run_pass()
    (action,) = result.actions
    assert action.reason == "dependency_failure:db" and action.metric == "exit=2"
    assert "connection refused" in (action.detail or "")
    assert action.dry_run and not action.acted
    assert len(history_of(project, "rollback")) == 0  # a dry run changes nothing


def test_a_skills_frontmatter_can_lower_a_threshold(project: Project) -> None:
    _promote(project, "1.0.0")
    write_skill(
        project.root / STAGING,
        NAME,
        extra={"version": "1.1.0", "metadata": {"triggers": "min_pattern_fidelity=0.5"}},
    )
    (done,) = api.promote(project, [NAME], to="production", actor="tester", overwrite=True)
    assert done.success, done.error
    new = read_skill(project.root / PRODUCTION / NAME)
    record(project, new, 10, fidelity=0.6)
    found = findings(project)
    assert "pattern_fidelity_drop_below_50" in found
    assert not found["pattern_fidelity_drop_below_50"].fired


# -- the pass acts -------------------------------------------------------------------------------


def test_a_pass_rolls_back_holds_alerts_and_the_loader_serves_the_version_before(
    live: Live, receiver: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = receiver
    project = _configure(live.project, "")
    (project.root / "skillstage.toml").write_text(
        (project.root / "skillstage.toml").read_text().replace("urls = []", f'urls = ["{url}"]', 1)
    )
    project = load_config_file(project.root / "skillstage.toml")
    with Loader(project, refresh_ms=50) as loader:
        assert loader.resolve(NAME).digest == live.new.digest
        record(project, live.new, 10, fidelity=0.6)
        result = api.watch_pass(project)
        (action,) = [a for a in result.actions if a.kind == "rollback"]
        assert action.acted and action.reason == "pattern_fidelity_drop_below_85"
        assert action.metric == "fidelity=0.60" and action.restored == "1.0.0"
        assert result.acted
        deadline = time.monotonic() + 5
        while loader.resolve(NAME).digest != live.old.digest and time.monotonic() < deadline:
            time.sleep(0.02)
        assert loader.resolve(NAME).digest == live.old.digest
    (event,) = history_of(project, "rollback")
    assert event.reason == "pattern_fidelity_drop_below_85"
    assert event.trigger_metric == "fidelity=0.60"
    assert event.actor == "skillstage-watch" and event.details["automated"] is True
    with Store.open(project.database_url) as store, store.reading() as tx:
        hold = store_controls.control_on(tx, "hold", NAME, "production")
        steps = {s.step for s in store_controls.steps(tx, [event.id])[event.id]}
    assert hold is not None and hold.digest == live.new.digest
    assert {"switched", "archived", "reindexed", "alert_sent"} <= steps
    bodies = [str(m.get("title", "")) + str(m.get("message", "")) for m in received]
    assert any("auth-v2" in b and "1.1.0" in b for b in bodies), received
    # Nothing more to do: the next pass watches the restored version and stays quiet.
    again = api.watch_pass(project)
    assert not again.acted and len(history_of(project, "rollback")) == 1


def test_a_hold_stops_re_promotion_until_a_person_clears_it(live: Live) -> None:
    project = live.project
    record(project, live.new, 1, false_negative=True, critical=True)
    assert api.watch_pass(project).acted
    write_skill(project.root / STAGING, NAME, extra={"version": "1.2.0"})
    with pytest.raises(SkillHeldError, match="held in production"):
        api.promote(project, [NAME], to="production", actor="tester", overwrite=True)
    with pytest.raises(SkillHeldError):
        api.rollout_start(project, NAME, actor="tester")
    cleared = api.switch(
        project, NAME, kind="hold", on=False, actor="lead", reason="fixed in 1.2.0"
    )
    assert cleared.changed
    (done,) = api.promote(project, [NAME], to="production", actor="tester", overwrite=True)
    assert done.success, done.error
    kinds = [e.kind for e in api.history(project, NAME, limit=100)]
    assert "hold_clear" in kinds


def test_a_held_skill_is_reported_not_rolled_back(live: Live) -> None:
    project = live.project
    api.switch(project, NAME, kind="hold", on=True, actor="lead", reason="investigating")
    record(project, live.new, 10, fidelity=0.5)
    result = api.watch_pass(project)
    (action,) = result.actions
    assert action.kind == "held" and not action.acted and not result.acted
    assert not history_of(project, "rollback")
    # Alerted once, not at every pass.
    alerted = [a for a in result.alerts if a.kind == "trigger"]
    assert len(alerted) == 1 and alerted[0].severity == "critical"
    assert not [a for a in api.watch_pass(project).alerts if a.kind == "trigger"]


def test_a_manual_override_records_its_approver(live: Live) -> None:
    result = api.rollback(
        live.project, NAME, reason="customer escalation", actor="oncall", approver="lead"
    )
    assert result.success
    (event,) = history_of(live.project, "rollback")
    assert event.approver == "lead" and event.details["override"] is True


def test_a_failed_smoke_check_rolls_the_promotion_back(project: Project) -> None:
    old = _promote(project, "1.0.0")
    project = _configure(project, "")
    text = (project.root / "skillstage.toml").read_text()
    marker = "[stages.production]\n"
    assert marker in text
    (project.root / "skillstage.toml").write_text(
        text.replace(marker, marker + "smoke = \"sh -c 'exit 3'\"\n", 1)
    )
    project = load_config_file(project.root / "skillstage.toml")
    write_skill(project.root / STAGING, NAME, extra={"version": "1.1.0"})
    (done,) = api.promote(project, [NAME], to="production", actor="tester", overwrite=True)
    assert done.success
    (event,) = history_of(project, "rollback")
    assert event.reason == "smoke_test_failed" and event.trigger_metric == "exit=3"
    assert read_skill(project.root / PRODUCTION / NAME).digest == old.digest


# -- the kill switch -----------------------------------------------------------------------------

_WATCHER = """
import sys, time
from skillstage.runtime import Loader
loader = Loader(sys.argv[1])
print("ready", flush=True)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    if loader.resolve("auth-v2").arm == "disabled":
        print("disabled", time.time(), flush=True)
        break
    time.sleep(0.005)
names = [e.name for e in loader.catalog()]
print("catalog", ",".join(names), flush=True)
"""


def test_the_kill_switch_reaches_a_loader_in_another_process_within_a_second(
    live: Live,
) -> None:
    host = subprocess.Popen(
        [sys.executable, "-c", _WATCHER, str(live.project.root)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert host.stdout is not None
    assert host.stdout.readline().strip() == "ready"
    switched = time.time()
    result = api.switch(
        live.project, NAME, kind="disabled", on=True, actor="oncall", reason="INC-7"
    )
    assert result.changed
    line = host.stdout.readline().split()
    assert line[0] == "disabled", line
    assert float(line[1]) - switched < 1.0
    assert host.stdout.readline().strip() == "catalog"  # the catalog leaves it out
    host.wait(10)
    # Nothing moved on disk; enable serves the same version again.
    assert read_skill(live.project.root / PRODUCTION / NAME).digest == live.new.digest
    api.switch(live.project, NAME, kind="disabled", on=False, actor="oncall")
    assert api.resolve(live.project, NAME).arm == "stable"
    kinds = [e.kind for e in api.history(live.project, NAME, limit=100)]
    assert "disable" in kinds and "enable" in kinds


# -- alerts --------------------------------------------------------------------------------------


def test_an_alert_is_sent_once_per_episode_and_its_recovery_once(live: Live) -> None:
    project = _configure(
        live.project, ""
    )  # error rate: warning over 5%, critical over 10%, from 20 executions
    api.switch(project, NAME, kind="hold", on=True, actor="lead", reason="keep it live")
    record(project, live.new, 17)
    record(project, live.new, 3, exception=True)  # 15%: critical
    first = [a for a in api.watch_pass(project).alerts if a.kind == "error_rate"]
    assert [(a.change, a.severity) for a in first] == [("opened", "critical")]
    second = [a for a in api.watch_pass(project).alerts if a.kind == "error_rate"]
    assert second == []
    record(project, live.new, 80)  # 3/100 = 3%: below the warning level
    third = [a for a in api.watch_pass(project).alerts if a.kind == "error_rate"]
    assert [(a.change, a.severity) for a in third] == [("recovered", "critical")]
    with Store.open(project.database_url) as store, store.reading() as tx:
        episodes = store_controls.episodes(tx, open_only=False, name=NAME)
    assert [e.kind for e in episodes if e.kind == "error_rate"] == ["error_rate"]


def test_sync_stops_serving_a_switched_off_skill_and_the_loader_will_not_load_it(
    live: Live, tmp_path: Path
) -> None:
    from skillstage.runtime.loader import SkillDisabledError

    laptop = tmp_path / "laptop"
    api.sync(live.project, laptop, subject="user-7")
    assert (laptop / NAME / "SKILL.md").is_file()
    api.switch(live.project, NAME, kind="disabled", on=True, actor="oncall", reason="INC-8")
    result = api.sync(live.project, laptop, subject="user-7")
    assert not (laptop / NAME).exists(), result.to_dict()
    with Loader(live.project) as loader:
        resolution = loader.resolve(NAME, subject="user-7")
        assert resolution.arm == "disabled"
        with pytest.raises(SkillDisabledError, match="switched off"):
            loader.load(resolution)
        assert NAME not in [entry.name for entry in loader.catalog()]
    registry = (live.project.state_dir / "skills_registry.json").read_text()
    assert '"disabled": true' in registry
    api.switch(live.project, NAME, kind="disabled", on=False, actor="oncall")
    api.sync(live.project, laptop, subject="user-7")
    assert (laptop / NAME / "SKILL.md").is_file()


def test_a_refused_rollback_is_said_and_the_pass_still_rolls_back_the_others(
    project: Project,
) -> None:
    """Someone's uncommitted edits in auth-v2's live copy refuse its rollback (nothing of theirs
    is thrown away); billing, failing in the same pass, is still rolled back, and `watch --once`
    exits 1 with the refusal said."""
    subprocess.run(["git", "init", "-q", str(project.root)], check=True)
    for name in (NAME, "billing"):
        for version in ("1.0.0", "1.1.0"):
            write_skill(project.root / STAGING, name, extra={"version": version})
            (done,) = api.promote(project, [name], to="production", actor="t", overwrite=True)
            assert done.success, done.error
    new = {n: read_skill(project.root / PRODUCTION / n) for n in (NAME, "billing")}
    for name, skill in new.items():
        for _ in range(10):
            api.record_execution(
                project, name, version="1.1.0", digest=skill.digest, pattern_fidelity=0.5
            )
    edited = project.root / PRODUCTION / NAME / "SKILL.md"
    edited.write_text(edited.read_text() + "\nA hand edit nobody committed.\n")
    run = subprocess.run(
        [sys.executable, "-m", "skillstage", "watch", "--once"],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 1, run.stdout + run.stderr
    assert "rollback of auth-v2 in production" in run.stderr and "SKILL.md" in run.stderr
    assert "A hand edit nobody committed." in edited.read_text()  # kept
    assert read_skill(project.root / PRODUCTION / "billing").version == "1.0.0"
    assert read_skill(project.root / PRODUCTION / NAME).version == "1.1.0"
    rollbacks = [e for e in api.history(project, None, limit=100) if e.kind == "rollback"]
    assert [e.name for e in rollbacks] == ["billing"]
