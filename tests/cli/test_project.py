"""init and list: a project as a user creates and uses it (real subprocesses, real SQLite)."""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import tomllib
from pathlib import Path

from skillstage import api
from skillstage.config import DEFAULT_CONFIG_TOML, Config, load_config_file, parse_config
from tests.cli.conftest import Run
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")


def test_default_config_text_is_the_default_config() -> None:
    assert parse_config(tomllib.loads(DEFAULT_CONFIG_TOML), Path("skillstage.toml")) == Config()


def test_init_creates_config_folders_and_database(run_cli: Run, tmp_path: Path) -> None:
    result = run_cli("init")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "skillstage.toml").read_text() == DEFAULT_CONFIG_TOML
    for folder in (".skillstage", ".claude/skills/staging", ".claude/skills/prototype"):
        assert (tmp_path / folder).is_dir()
    tables = {
        row[0]
        for row in sqlite3.connect(tmp_path / ".skillstage/state.db").execute(
            "SELECT name FROM sqlite_master"
        )
    }
    assert {"skill", "staged_skills", "skill_promotions", "execution_metrics"} <= tables


def test_init_keeps_an_existing_config(run_cli: Run, tmp_path: Path) -> None:
    (tmp_path / "skillstage.toml").write_text('state_dir = ".state"\n')
    result = run_cli("init", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["config_written"] is False
    assert (tmp_path / ".state" / "state.db").is_file()
    assert (tmp_path / "skillstage.toml").read_text() == 'state_dir = ".state"\n'


def test_init_print_shows_the_commented_default(run_cli: Run) -> None:
    result = run_cli("init", "--print")
    assert result.stdout == DEFAULT_CONFIG_TOML
    assert "sla_hours = 48" in result.stdout


def test_list_registers_skills_on_first_sight(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    write_skill(tmp_path / STAGING, "auth-v2", extra={"version": "2.0.0"})
    write_skill(tmp_path / ".claude/skills", "logging")
    first = json.loads(run_cli("list", "--json").stdout)
    assert first["registered"] == 2
    rows = {(s["stage"], s["name"], s["version"]) for s in first["skills"]}
    assert rows == {("staged", "auth-v2", "2.0.0"), ("production", "logging", "1.0.0")}
    second = json.loads(run_cli("list", "--json").stdout)
    assert second["registered"] == 0
    assert [s["entered_at"] for s in second["skills"]] == [s["entered_at"] for s in first["skills"]]


def test_list_output_follows_the_seed(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    write_skill(tmp_path / STAGING, "auth-v2", extra={"version": "2.0.0"})
    result = run_cli("list", "--stage", "staged")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[1] == "STAGED SKILLS (1 total)"
    assert "  Skill:    auth-v2" in lines
    assert "  Version:  2.0.0" in lines
    assert "  Age:      0.0h" in lines
    assert "  Path:     .claude/skills/staging/auth-v2" in lines


def test_age_counts_from_when_the_version_entered_the_stage(tmp_path: Path) -> None:
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    skill = write_skill(tmp_path / STAGING, "auth-v2")
    start = dt.datetime(2025, 11, 14, 10, 0, tzinfo=dt.UTC)
    api.list_skills(project, now=start)
    later = api.list_skills(project, now=start + dt.timedelta(hours=52, minutes=18))
    assert [(s.name, s.age_hours) for s in later.skills] == [("auth-v2", 52.3)]
    # A new version in the stage starts its own clock.
    (skill / "SKILL.md").write_text((skill / "SKILL.md").read_text().replace("1.0.0", "1.1.0"))
    newer = api.list_skills(project, now=start + dt.timedelta(hours=60))
    assert [(s.version, s.age_hours) for s in newer.skills] == [("1.1.0", 0.0)]
    assert newer.registered == 1


def test_changed_content_without_a_version_bump_is_flagged(tmp_path: Path) -> None:
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    skill = write_skill(tmp_path / STAGING, "auth-v2")
    api.list_skills(project)
    (skill / "execute.sh").write_text("#!/bin/bash\necho changed\n")
    (listed,) = api.list_skills(project).skills
    assert listed.problems and "bump" in " ".join(listed.problems).lower()


def test_unreadable_skills_are_reported_not_fatal(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    write_skill(tmp_path / STAGING, "good")
    write_skill(tmp_path / STAGING, "broken", extra={"version": "v1"})
    result = run_cli("list")
    assert result.returncode == 0, result.stderr
    assert "Skill:    good" in result.stdout
    assert "unreadable: .claude/skills/staging/broken: VERSION_NOT_SEMVER" in result.stdout


def test_unknown_stage_is_a_usage_error(run_cli: Run) -> None:
    run_cli("init")
    result = run_cli("list", "--stage", "qa")
    assert result.returncode == 2
    assert "unknown stage 'qa'" in result.stderr


def test_seed_dashboard_query_runs_unchanged(tmp_path: Path) -> None:
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    write_skill(tmp_path / STAGING, "logging-v3")
    api.list_skills(project, now=dt.datetime.now(dt.UTC) - dt.timedelta(hours=52))
    rows = (
        sqlite3.connect(tmp_path / ".skillstage/state.db")
        .execute(
            """
        SELECT
          name,
          created_at,
          ROUND((julianday('now') - julianday(created_at)) * 24, 1) as age_hours,
          ROUND((julianday('now') - julianday(created_at)) * 24 - 48, 1) as breach_hours
        FROM staged_skills
        WHERE promoted = 0
          AND created_at < datetime('now', '-48 hours')
        ORDER BY created_at ASC;
        """
        )
        .fetchall()
    )
    assert [(row[0], round(row[2]), round(row[3])) for row in rows] == [("logging-v3", 52, 4)]


def test_validate_all_uses_stage_templates(tmp_path: Path) -> None:
    config = tmp_path / "skillstage.toml"
    config.write_text(
        "transitions = []\n"
        '[stages.prototype]\npath = "skills/{name}_prototype"\n'
        '[stages.staged]\npath = "skills/{name}_staged"\nsla_hours = 48\n'
        '[stages.production]\npath = "prod/{name}"\n'
    )
    write_skill(tmp_path / "skills", "auth_staged", extra={"name": "auth"})
    report = api.validate([], project=load_config_file(config), all_stages=True)
    (skill,) = report.skills
    assert skill.name == "auth"
    assert skill.findings == []


def test_list_on_either_store(run_cli: Run, tmp_path: Path, store_url: str) -> None:
    """The same commands against SQLite and the real PostgreSQL server."""
    env = {"SKILLSTAGE_DATABASE_URL": store_url}
    assert run_cli("init", env=env).returncode == 0
    write_skill(tmp_path / STAGING, "auth-v2")
    first = run_cli("list", "--json", env=env)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["registered"] == 1
    second = json.loads(run_cli("list", "--json", env=env).stdout)
    assert second["registered"] == 0
    assert [(s["name"], s["stage"]) for s in second["skills"]] == [("auth-v2", "staged")]


def test_an_outdated_store_refuses_and_names_the_upgrade(run_cli: Run, tmp_path: Path) -> None:
    run_cli("init")
    database = sqlite3.connect(tmp_path / ".skillstage/state.db")
    with database:
        database.execute("UPDATE alembic_version SET version_num = '0000'")
    result = run_cli("list")
    assert result.returncode == 2
    assert "run `skillstage db upgrade`" in result.stderr


def test_a_skill_named_unlike_its_directory_is_not_registered(tmp_path: Path) -> None:
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    write_skill(tmp_path / STAGING, "auth")
    write_skill(tmp_path / STAGING, "auth-copy", extra={"name": "auth", "version": "2.0.0"})
    for _ in range(2):
        listing = api.list_skills(project)
        assert [(s.name, s.version) for s in listing.skills] == [("auth", "1.0.0")]
        ((path, error),) = listing.unreadable
        assert path.name == "auth-copy" and error.startswith("NAME_MISMATCH_DIRECTORY")
