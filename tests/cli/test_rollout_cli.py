"""`skillstage rollout …` and `skillstage resolve` as a user runs them: a real subprocess in the
project directory, on SQLite and on PostgreSQL, asserting exit codes (0 done, 1 refused or
aborted, 2 bad usage) and what is printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from tests.skilltree import write_skill

NAME = "auth-v2"
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@pytest.fixture
def arms(project: Project) -> tuple[SkillVersion, SkillVersion]:
    """1.0.0 live in production, 1.1.0 waiting in staging: (stable, candidate)."""
    write_skill(project.root / STAGING, NAME)
    (promoted,) = api.promote(project, [NAME], to="production", actor="tester")
    assert promoted.success, promoted.error
    stable = read_skill(project.root / PRODUCTION / NAME)
    candidate = read_skill(write_skill(project.root / STAGING, NAME, extra={"version": "1.1.0"}))
    return stable, candidate


def skillstage(
    project: Project | None, *args: str, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    env["NO_COLOR"] = "1"
    if project is not None:
        env["SKILLSTAGE_DATABASE_URL"] = project.database_url
    return subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=cwd or (project.root if project is not None else None),
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


START = ("rollout", "start", NAME, "--step-min-duration", "0s", "--step-min-executions", "20")


def start(project: Project) -> dict[str, Any]:
    done = skillstage(project, *START, "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    outcome: dict[str, Any] = json.loads(done.stdout)
    return outcome


def record(project: Project, skill: SkillVersion, count: int, fidelity: float = 0.95) -> None:
    for _ in range(count):
        api.record_execution(
            project,
            NAME,
            version=skill.version,
            digest=skill.digest,
            pattern_fidelity=fidelity,
            outcome_quality=0.9,
            execution_time_ms=3.0,
        )


def test_start_json(project: Project, arms: tuple[SkillVersion, SkillVersion]) -> None:
    stable, candidate = arms
    outcome = start(project)
    assert (outcome["success"], outcome["action"], outcome["dry_run"]) == (True, "started", False)
    rollout = outcome["rollout"]
    assert (rollout["state"], rollout["weight"], rollout["steps"]) == ("active", 10, [10, 50, 100])
    assert (rollout["candidate_version"], rollout["candidate_digest"]) == (
        "1.1.0",
        candidate.digest,
    )
    assert (rollout["stable_version"], rollout["stable_digest"]) == ("1.0.0", stable.digest)
    assert (rollout["step_min_duration_s"], rollout["step_min_executions"]) == (0.0, 20)
    gates = {g["gate"]: g["status"] for g in outcome["gates"]}
    assert gates["tests"] == "pass"
    assert outcome["error"] is None
    assert [s.rollout.id for s in api.rollout_status(project, NAME)] == [rollout["id"]]


def test_status_shows_the_step_both_arms_and_what_the_verdict_waits_for(
    project: Project, arms: tuple[SkillVersion, SkillVersion]
) -> None:
    stable, candidate = arms
    rollout_id = start(project)["rollout"]["id"]
    record(project, candidate, 5)
    record(project, stable, 25)
    shown = skillstage(project, "rollout", "status", NAME)
    assert shown.returncode == 0, shown.stderr
    lines = shown.stdout.splitlines()
    assert lines[0] == f"{NAME}: rollout #{rollout_id} into production, active, 1.1.0 beside 1.0.0"
    assert lines[1].split() == ["steps:", "[10%]", "→", "50%", "→", "100%"]
    (candidate_line,) = [line for line in lines if line.lstrip().startswith("candidate:")]
    assert "1.1.0" in candidate_line and " 5 executions" in candidate_line
    assert "fidelity 0.950" in candidate_line and "(this step)" in candidate_line
    (stable_line,) = [line for line in lines if line.lstrip().startswith("stable:")]
    assert "1.0.0" in stable_line and " 25 executions" in stable_line
    assert "analysis:   inconclusive" in shown.stdout
    assert "- 5/20 candidate executions" in shown.stdout
    assert "rollout abort auth-v2" in shown.stdout
    as_json = skillstage(project, "rollout", "status", NAME, "--json")
    assert as_json.returncode == 0
    (entry,) = json.loads(as_json.stdout)
    assert (entry["id"], entry["weight"], entry["step_index"]) == (rollout_id, 10, 0)
    assert entry["verdict"]["outcome"] == "inconclusive"
    assert entry["verdict"]["reasons"] == ["5/20 candidate executions"]
    assert (entry["verdict"]["candidate"]["count"], entry["verdict"]["stable"]["count"]) == (5, 25)
    assert entry["earliest_completion"] is not None
    # With nothing open it says so (and prints an empty list as JSON).
    assert skillstage(project, "rollout", "abort", NAME, "--reason", "done").returncode == 0
    quiet = skillstage(project, "rollout", "status")
    assert (quiet.returncode, quiet.stdout) == (0, "No active rollout.\n")
    assert json.loads(skillstage(project, "rollout", "status", "--json").stdout) == []


def test_resolve_json_and_text(project: Project, arms: tuple[SkillVersion, SkillVersion]) -> None:
    stable, candidate = arms
    before = skillstage(project, "resolve", NAME, "--subject", "user-7", "--json")
    assert before.returncode == 0, before.stderr
    assert json.loads(before.stdout)["digest"] == stable.digest
    start(project)
    for subject in ("user-7", "user-12", "user-40"):
        done = skillstage(project, "resolve", NAME, "--subject", subject, "--json")
        assert done.returncode == 0, done.stderr
        shown = json.loads(done.stdout)
        expected = api.resolve(project, NAME, subject=subject)
        assert shown == json.loads(json.dumps(expected.to_dict()))
        assert shown["digest"] == (candidate if shown["arm"] == "candidate" else stable).digest
        assert shown["sticky"] is True and 1 <= shown["bucket"] <= 100
    text = skillstage(project, "resolve", NAME, "--subject", "user-7")
    resolution = api.resolve(project, NAME, subject="user-7")
    first, second = text.stdout.splitlines()
    assert first.startswith(f"{NAME} {resolution.version} ({resolution.digest[:12]}) ")
    assert f"bucket {resolution.bucket}" in first
    assert second == resolution.path
    unknown = skillstage(project, "resolve", "nosuch", "--subject", "user-7")
    assert unknown.returncode == 1
    assert "no skill named 'nosuch' is live in production" in unknown.stderr


def test_tick_exits_1_when_it_aborts(
    project: Project, arms: tuple[SkillVersion, SkillVersion]
) -> None:
    stable, candidate = arms
    rollout_id = start(project)["rollout"]["id"]
    record(project, stable, 20)
    waiting = skillstage(project, "rollout", "tick")
    assert waiting.returncode == 0, waiting.stderr
    assert waiting.stdout.startswith(f"{NAME}: waiting\n")
    assert "no-data: 0/20 candidate executions in this step" in waiting.stdout
    record(project, candidate, 20, fidelity=0.6)
    aborted = skillstage(project, "rollout", "tick")
    assert aborted.returncode == 1, aborted.stdout + aborted.stderr
    assert aborted.stdout.startswith(f"{NAME}: aborted\n")
    assert f"Rollout #{rollout_id} aborted: all of production is back on 1.0.0" in aborted.stdout
    after = json.loads(skillstage(project, "resolve", NAME, "--subject", "u", "--json").stdout)
    assert (after["arm"], after["digest"], after["rollout_id"]) == ("stable", stable.digest, None)
    idle = skillstage(project, "rollout", "tick")
    assert (idle.returncode, idle.stdout) == (0, "No active rollout.\n")


def test_refusals_exit_1_and_name_the_rollout(
    project: Project, arms: tuple[SkillVersion, SkillVersion]
) -> None:
    stable, _ = arms
    probe = skillstage(project, *START, "--dry-run")
    assert probe.returncode == 0, probe.stderr
    assert (
        "Dry run: auth-v2 1.1.0" in probe.stdout and "would serve 10% of production" in probe.stdout
    )
    assert api.rollout_status(project, NAME) == []
    rollout_id = start(project)["rollout"]["id"]
    again = skillstage(project, *START)
    assert again.returncode == 1
    assert f"#{rollout_id}" in again.stderr and "another rollout" in again.stderr
    assert "rollout abort auth-v2 --reason" in again.stderr
    promote = skillstage(project, "promote", NAME, "--yes", "--overwrite")
    assert promote.returncode == 1
    assert f"#{rollout_id}" in promote.stderr and "a promotion" in promote.stderr
    rollback = skillstage(project, "rollback", NAME, "--reason", "broken", "--yes")
    assert rollback.returncode == 1
    assert f"#{rollout_id}" in rollback.stderr and "a rollback" in rollback.stderr
    waiting = skillstage(project, "rollout", "advance", NAME)
    assert waiting.returncode == 1
    assert "step 1 is no-data: 0/20 candidate executions in this step" in waiting.stdout
    assert read_skill(project.root / PRODUCTION / NAME).digest == stable.digest
    assert api.rollout_status(project, NAME)[0].rollout.step_index == 0


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((*START, "--steps", "50,10"), "must rise"),
        ((*START, "--steps", "10,50"), "must end at 100"),
        ((*START, "--segment", "foo"), "is not KEY=VALUE"),
        ((*START, "--force"), "--force needs --reason"),
        ((*START, "--on-failure", "retry"), "'retry' is not one of"),
        (("rollout", "start", "nosuch"), "no skill named 'nosuch'"),
        (("rollout", "status", "nosuch"), "no skill named 'nosuch'"),
        (("rollout", "advance", NAME, "--force"), "--force needs --reason"),
        (("rollout", "abort", NAME), "Missing option '--reason'"),
        (("resolve", NAME, "--context", "tier"), "is not KEY=VALUE"),
    ],
)
def test_bad_usage_exits_2(
    project: Project, arms: tuple[SkillVersion, SkillVersion], args: tuple[str, ...], message: str
) -> None:
    done = skillstage(project, *args)
    assert done.returncode == 2, done.stdout + done.stderr
    assert message in done.stderr
    assert api.rollout_status(project) == []


SUBCOMMANDS = {
    "start": "Start rolling out NAME's candidate",
    "status": "Each active rollout",
    "advance": "Move NAME's rollout to its next step",
    "pause": "Put all of NAME's traffic back on the stable version",
    "resume": "Serve NAME's candidate its step's share again",
    "abort": "Call NAME's rollout off",
    "retry": "Start NAME's last aborted rollout again",
    "tick": "Evaluate every active rollout once",
}


@pytest.mark.parametrize("command", [*SUBCOMMANDS, None])
def test_help_of_each_subcommand(tmp_path: Path, command: str | None) -> None:
    args = ("rollout", command, "--help") if command else ("rollout", "--help")
    done = skillstage(None, *args, cwd=tmp_path)  # help needs no project
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: skillstage rollout")
    if command is None:
        for name in SUBCOMMANDS:
            assert f"  {name} " in done.stdout
    else:
        assert " ".join(SUBCOMMANDS[command].split()) in " ".join(done.stdout.split())
        assert "--json" in done.stdout


def test_help_of_resolve(tmp_path: Path) -> None:
    done = skillstage(None, "resolve", "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Usage: skillstage resolve [OPTIONS] NAME")
    assert "--subject" in done.stdout and "--context" in done.stdout
