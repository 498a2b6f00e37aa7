"""The go/no-go decision (seed 003 "Decision Framework"): each branch from real evidence.

A project is built ready to deploy — 1.0.0 live in production, 1.1.0 waiting in staging with its
README changed, a rollback drill passed, a monitoring target configured, the sign-off recorded —
and each test takes one piece of evidence away (or adds a failure) and checks the decision and the
criterion that made it.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.lifecycle.go_no_go import GoNoGo
from skillstage.lifecycle.readiness import review_items
from tests.skilltree import write_skill

NAME = "auth-v2"
APPROVER = "alice"
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")


def _monitor(text: str, setting: str) -> str:
    """The config text with `setting` under its (commented-out) [monitoring] section."""
    assert "\n[monitoring]\n" in text
    return text.replace("\n[monitoring]\n", f"\n[monitoring]\n{setting}\n", 1)


def _configure(project: Project, *, monitoring: bool) -> Project:
    config = project.root / "skillstage.toml"
    text = config.read_text(encoding="utf-8").replace(
        "approvers = []", f'approvers = ["{APPROVER}"]'
    )
    if monitoring:
        text = _monitor(text, 'prometheus_url = "http://127.0.0.1:9090"')
    config.write_text(text, encoding="utf-8")
    return load_config_file(config)


def _stage(
    project: Project, version: str, readme: str, test: str = "#!/bin/bash\nexit 0\n"
) -> None:
    write_skill(
        project.root / STAGING,
        NAME,
        extra={"version": version},
        files={"README.md": readme},
        test=test,
    )


def _sign_off(project: Project, decision: str = "approved") -> None:
    form = project.root / f"signoff-{decision}.yaml"
    form.write_text(
        "human_review:\n"
        + "".join(f"  {item}: YES\n" for item in review_items(project, "production")),
        encoding="utf-8",
    )
    api.approve(
        project,
        NAME,
        to_stage="production",
        ticket=f"APPROVAL_20261207_{decision.upper()[:3]}",
        decision=decision,
        approver=APPROVER,
        checklist_file=form,
        notes="not this one" if decision == "rejected" else None,
    )


def _ready(
    project: Project,
    *,
    monitoring: bool = True,
    drill: bool = True,
    sign_off: bool = True,
    readme: str = "# auth-v2\n\n1.1.0: refresh tokens.\n",
) -> Project:
    project = _configure(project, monitoring=monitoring)
    _stage(project, "1.0.0", "# auth-v2\n\n1.0.0: first release.\n")
    (done,) = api.promote(project, [NAME], to="production", actor="tester")
    assert done.success, done.error
    _stage(project, "1.1.0", readme)
    if drill:
        result = api.drill(project, NAME, actor="tester")
        assert result.passed
    if sign_off:
        _sign_off(project)
    return project


def _criterion(result: GoNoGo, name: str) -> tuple[str, str]:
    for criterion in result.criteria + [c for s in result.skills for c in s.criteria]:
        if criterion.name == name:
            return criterion.verdict, criterion.evidence
    raise AssertionError(f"no criterion {name}: {result.to_dict()}")


def test_everything_in_place_is_go(project: Project) -> None:
    project = _ready(project)
    result = api.go_no_go(project, concurrency=2)
    assert result.decision == "GO", json.dumps(result.to_dict(), indent=1)
    (skill,) = result.skills
    assert (skill.name, skill.version, skill.stage) == (NAME, "1.1.0", "staged")
    assert {c.name for c in skill.criteria} == {
        "rollback_drill",
        "failure_reports",
        "tests",
        "docs_updated",
        "sign_off",
    }
    assert "README.md" in _criterion(result, "docs_updated")[1]
    assert APPROVER in _criterion(result, "sign_off")[1]
    assert "prometheus" in _criterion(result, "monitoring")[1].lower()


def test_no_rollback_drill_is_no_go(project: Project) -> None:
    project = _ready(project, drill=False)
    result = api.go_no_go(project, concurrency=2)
    assert result.decision == "NO-GO"
    assert _criterion(result, "rollback_drill") == ("NO-GO", "no rollback drill is recorded")


def test_a_drill_older_than_allowed_is_no_go(project: Project) -> None:
    project = _ready(project)
    time.sleep(0.2)
    result = api.go_no_go(project, concurrency=2, drill_days=0.1 / 86_400)  # 0.1 s
    verdict, evidence = _criterion(result, "rollback_drill")
    assert (result.decision, verdict) == ("NO-GO", "NO-GO")
    assert "longer ago than" in evidence


def test_monitoring_not_configured_is_delay(project: Project) -> None:
    project = _ready(project, monitoring=False)
    result = api.go_no_go(project, concurrency=2)
    assert result.decision == "DELAY"
    assert _criterion(result, "monitoring")[0] == "DELAY"


def test_documentation_not_updated_is_delay(project: Project) -> None:
    project = _ready(project, readme="# auth-v2\n\n1.0.0: first release.\n")
    result = api.go_no_go(project, concurrency=2)
    verdict, evidence = _criterion(result, "docs_updated")
    assert (result.decision, verdict) == ("DELAY", "DELAY")
    assert "did not change" in evidence


def test_a_missing_sign_off_is_delay_and_a_rejected_one_no_go(project: Project) -> None:
    project = _ready(project, sign_off=False)
    result = api.go_no_go(project, concurrency=2)
    assert result.decision == "DELAY"
    assert _criterion(result, "sign_off")[0] == "DELAY"
    _sign_off(project, "rejected")
    result = api.go_no_go(project, concurrency=2)
    verdict, evidence = _criterion(result, "sign_off")
    assert (result.decision, verdict) == ("NO-GO", "NO-GO")
    assert "REJECTED" in evidence and "not this one" in evidence


def test_failing_runtime_checks_are_no_go(project: Project) -> None:
    project = _ready(project)
    live = project.root / PRODUCTION / NAME / "SKILL.md"
    live.write_text(live.read_text(encoding="utf-8") + "\nEdited in place.\n", encoding="utf-8")
    result = api.go_no_go(project, concurrency=2)
    verdict, evidence = _criterion(result, "runtime_checks")
    assert (result.decision, verdict) == ("NO-GO", "NO-GO")
    assert "failed" in evidence


def test_a_failing_test_gate_of_the_candidate_is_no_go(project: Project) -> None:
    project = _ready(project, drill=False)
    _stage(project, "1.1.0", "# auth-v2\n\n1.1.0: refresh tokens.\n", test="#!/bin/bash\nexit 1\n")
    (refused,) = api.promote(project, [NAME], to="production", actor="tester", approver=APPROVER)
    assert not refused.success
    result = api.go_no_go(project, NAME, concurrency=2)
    verdict, evidence = _criterion(result, "tests")
    assert verdict == "NO-GO"
    assert evidence.startswith("tests failed")


def test_an_open_automated_rollback_is_no_go_until_its_hold_is_cleared(project: Project) -> None:
    project = _ready(project)
    (done,) = api.promote(
        project, [NAME], to="production", actor="tester", approver=APPROVER, overwrite=True
    )
    assert done.success, done.error
    for _ in range(10):  # the default trigger: mean fidelity below 0.85 over ten executions
        api.record_execution(
            project,
            NAME,
            version="1.1.0",
            digest=done.digest,
            pattern_fidelity=0.5,
            outcome_quality=0.9,
            execution_time_ms=10.0,
        )
    api.ingest_metrics(project)
    api.watch_pass(project)
    result = api.go_no_go(project, concurrency=2)
    (skill,) = result.skills
    assert (skill.version, skill.stage) == ("1.0.0", "production")  # rolled back to it
    verdict, evidence = _criterion(result, "failure_reports")
    assert (result.decision, verdict) == ("NO-GO", "NO-GO")
    assert "still open" in evidence and "failure.md" in evidence
    api.switch(project, NAME, kind="hold", on=False, actor="tester", reason="fixed in 1.1.1")
    verdict, evidence = _criterion(api.go_no_go(project, concurrency=2), "failure_reports")
    assert verdict == "GO" and "closed" in evidence


def test_one_skill_or_an_unknown_one(project: Project) -> None:
    project = _ready(project)
    assert api.go_no_go(project, NAME, concurrency=2).decision == "GO"
    with pytest.raises(UsageError, match="neither in production nor waiting"):
        api.go_no_go(project, "nope", concurrency=2)


def test_the_command_exits_0_go_1_no_go_2_delay(project: Project) -> None:
    project = _ready(project, monitoring=False)
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    env["SKILLSTAGE_DATABASE_URL"] = project.database_url

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "skillstage", "go-no-go", "--concurrency", "2", *args],
            cwd=project.root,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )

    delayed = run("--json")
    assert delayed.returncode == 2, delayed.stderr
    document = json.loads(delayed.stdout)
    assert document["decision"] == "DELAY"
    assert dt.datetime.fromisoformat(document["at"]).tzinfo is not None
    monitoring = next(c for c in document["criteria"] if c["name"] == "monitoring")
    assert monitoring["verdict"] == "DELAY" and monitoring["hint"]
    config = project.root / "skillstage.toml"
    text = _monitor(
        config.read_text(encoding="utf-8"), 'alert_url = "https://alerts.example.com/hook"'
    )
    config.write_text(text, encoding="utf-8")
    go = run()
    assert go.returncode == 0, go.stdout + go.stderr
    assert "Decision: GO" in go.stdout
    _sign_off(load_config_file(config), "rejected")
    no_go = run(NAME)
    assert no_go.returncode == 1, no_go.stdout + no_go.stderr
    assert "Decision: NO-GO" in no_go.stdout and "sign_off" in no_go.stdout
    bad = run("--concurrency", "0")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr


def test_nothing_to_decide_is_a_clear_error(project: Project) -> None:
    with pytest.raises(UsageError, match="nothing to decide"):
        api.go_no_go(project, concurrency=2)
