"""`skillstage drill`: the real command in a subprocess on a real project (SQLite)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from skillstage import api
from skillstage.config import load_config_file
from skillstage.lifecycle.archive import archive_path
from skillstage.store import Store
from tests.cli.conftest import Run
from tests.skilltree import write_skill

NAME = "auth-v2"


def test_drill_prints_the_steps_records_them_and_exits_by_the_outcome(
    run_cli: Run, tmp_path: Path
) -> None:
    assert run_cli("init").returncode == 0
    project = load_config_file(tmp_path / "skillstage.toml")
    for version in ("1.0.0", "1.1.0"):
        write_skill(tmp_path / ".claude/skills/staging", NAME, extra={"version": version})
        (result,) = api.promote(project, [NAME], actor="tester", overwrite=True)
        assert result.success, result.error

    shown = run_cli("drill", NAME, "--json")
    assert shown.returncode == 0, shown.stderr
    report = json.loads(shown.stdout)
    assert report["passed"] is True
    assert [s["step"] for s in report["steps"]] == ["copy", "rollback", "restore"]
    assert report["versions"] == {"live": "1.1.0", "candidate": None, "rollback_to": "1.0.0"}
    text = run_cli("drill", NAME)
    assert text.returncode == 0, text.stderr
    assert "Drill passed: auth-v2 in production" in text.stdout
    history = run_cli("history", NAME).stdout
    assert history.count(" drill ") == 2
    assert "drill     auth-v2 1.1.0  (passed)  in production  by " in history

    # Broken: the archive copy a rollback would restore no longer holds its version.
    with Store.open(project.database_url) as store:
        record = store.find_version(NAME, "1.0.0")
    assert record is not None
    entry = archive_path(project, NAME, "1.0.0", record.digest)
    os.chmod(entry, 0o755)
    (entry / "SKILL.md").chmod(0o644)
    (entry / "SKILL.md").write_text("not a skill\n")
    failed = run_cli("drill", NAME)
    assert failed.returncode == 1
    assert "✗ rollback" in failed.stdout
    assert "Drill FAILED at the rollback step" in failed.stderr
    assert "(failed)  in production" in run_cli("history", NAME, "--limit", "1").stdout
    as_json = run_cli("drill", NAME, "--json")
    assert as_json.returncode == 1 and json.loads(as_json.stdout)["passed"] is False

    unknown = run_cli("drill", "other")
    assert unknown.returncode == 2 and "no skill named 'other'" in unknown.stderr
    assert "Traceback" not in unknown.stderr + failed.stderr


def test_drill_refuses_a_skill_with_nothing_to_roll_back_to(run_cli: Run, tmp_path: Path) -> None:
    assert run_cli("init").returncode == 0
    project = load_config_file(tmp_path / "skillstage.toml")
    write_skill(tmp_path / ".claude/skills/staging", NAME)
    (result,) = api.promote(project, [NAME], actor="tester")
    assert result.success, result.error
    refused = run_cli("drill", NAME, "--json")
    assert refused.returncode == 1
    error = json.loads(refused.stdout)["error"]
    assert error["code"] == "DRILL_REFUSED"
    assert "only version production has had" in error["message"]
    assert "drill" not in run_cli("history", NAME).stdout.split()
