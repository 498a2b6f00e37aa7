"""`skillstage check-runtime` as a user runs it: a real subprocess in the project directory, on
SQLite and on PostgreSQL; exit 0 when nothing failed (warnings shown), 1 on a failure (or, with
--strict, a warning), 2 on bad usage; the table, and --json."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from tests.cli.conftest import Run
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
Skillstage = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """billing and auth-v2 live in production, on SQLite and on PostgreSQL."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    for name in ("billing", "auth-v2"):
        write_skill(project.root / STAGING, name)
        (result,) = api.promote(project, [name], to="production", actor="tester")
        assert result.success, result.error
    return project


@pytest.fixture
def skillstage(project: Project, run_cli: Run) -> Skillstage:
    """Run `skillstage ARGS…` in the project, on its store, without colour."""

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        env = {"NO_COLOR": "1", "SKILLSTAGE_DATABASE_URL": project.database_url}
        return run_cli(*args, cwd=project.root, env=env)

    return run


def test_a_healthy_project_prints_the_table_and_exits_0(
    project: Project, skillstage: Skillstage
) -> None:
    done = skillstage("check-runtime", "--concurrency", "2")

    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "RUNTIME CHECK: 2 version(s) in production, 2 threads and 2 processes" in lines
    rows = {
        line.split()[0]: line.split()[1]
        for line in lines
        if line.startswith("  ") and line.split()[1:2] in (["PASS"], ["WARN"], ["FAIL"])
    }
    assert rows == {
        "skills": "PASS",
        "skill_files": "PASS",
        "dependencies": "PASS",
        "thread_loads": "PASS",
        "process_loads": "PASS",
        "memory": "PASS",
        "cache": "PASS",
    }
    assert any(line.strip().startswith("processes:  4 loads  p50 ") for line in lines)
    assert "warn at 75 MB, fail at 100 MB" in done.stdout
    assert lines[-1].startswith("Verdict: PASS")


def test_json_and_a_failure_exit_1_naming_the_skill(
    project: Project, skillstage: Skillstage
) -> None:
    shutil.rmtree(project.root / PRODUCTION / "billing")

    done = skillstage("check-runtime", "--concurrency", "2", "--json")

    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert report["verdict"] == "fail"
    (files,) = [c for c in report["criteria"] if c["name"] == "skill_files"]
    assert files["status"] == "fail"
    (evidence,) = files["evidence"]
    assert evidence["skill"] == "billing"
    assert evidence["path"] == str(project.root / PRODUCTION / "billing")
    assert report["loads"]["processes"]["loads_done"] == 4


def test_a_warning_exits_0_and_1_with_strict(project: Project, skillstage: Skillstage) -> None:
    assert project.source is not None
    text = project.source.read_text()
    project.source.write_text(
        text.replace(
            "[runtime_check]\nmemory_warning_mb = 75 ", "[runtime_check]\nmemory_warning_mb = 1 "
        )
    )

    done = skillstage("check-runtime", "--concurrency", "1", "--skill", "billing")
    assert done.returncode == 0, done.stderr
    assert "memory         WARN" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("Verdict: WARN")

    strict = skillstage("check-runtime", "--concurrency", "1", "--strict", "--json")
    assert strict.returncode == 1
    assert json.loads(strict.stdout)["verdict"] == "warn"


@pytest.mark.parametrize("bad", ["0", "-3", "65", "many"])
def test_a_bad_concurrency_is_a_usage_error(skillstage: Skillstage, bad: str) -> None:
    done = skillstage("check-runtime", "--concurrency", bad)

    assert done.returncode == 2
    assert "Invalid value for '--concurrency'" in done.stderr
    assert "Traceback" not in done.stderr


def test_an_unknown_skill_is_a_usage_error_with_the_live_ones(skillstage: Skillstage) -> None:
    done = skillstage("check-runtime", "--skill", "nope", "--json")

    assert done.returncode == 2
    error = json.loads(done.stdout)["error"]
    assert error["message"] == "'nope' is not live in production: there is nothing of it to load"
    assert error["hint"] == "skills live in production: auth-v2, billing"


def test_help_explains_the_criteria(skillstage: Skillstage) -> None:
    done = skillstage("check-runtime", "--help")

    assert done.returncode == 0
    for word in ("--concurrency", "--skill", "--strict", "--json", "memory", "cache", "a → b → a"):
        assert word in done.stdout
    assert "seed" not in done.stdout.lower()
