"""Seed 000's TypeScript API in Python (`skillstage.services`): the same answers as the CLI."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.cli import sla as sla_cli
from skillstage.cli.main import cli, main
from skillstage.config import Project, load_config_file
from skillstage.lifecycle import sla
from skillstage.services import PromotionService, SLAEnforcer
from skillstage.store import Store
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
T = dt.datetime(2025, 11, 15, 10, 30, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)

Invoke = Callable[..., tuple[int, Any]]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (as in tests/lifecycle/conftest.py)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@pytest.fixture
def cli_json(
    project: Project, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[Invoke]:
    """`skillstage ARGS... --json` in this process: (exit code, decoded output)."""
    monkeypatch.chdir(project.root)
    added = "sla" not in cli.commands
    if added:
        cli.add_command(sla_cli.sla)

    def invoke(*args: str) -> tuple[int, Any]:
        capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            main([*args, "--json"])
        code = exited.value.code
        assert isinstance(code, int)
        return code, json.loads(capsys.readouterr().out)

    yield invoke
    if added:
        cli.commands.pop("sla")


def test_list_staged_skills_and_check_staleness(project: Project) -> None:
    write_skill(project.root / STAGING, "logging-v3")
    api.list_skills(project, now=T - 52 * HOUR)
    write_skill(project.root / STAGING, "auth-v2")
    api.list_skills(project, now=T - 5 * HOUR)
    write_skill(project.root / ".claude/skills/prototype", "sketch")  # no SLA: not "staged"

    service = PromotionService(project.root)  # a directory works as well as a Project

    staged = service.list_staged_skills(now=T)
    assert [(s.name, s.age_hours) for s in staged] == [("logging-v3", 52.0), ("auth-v2", 5.0)]
    assert [s.name for s in service.list_staged_skills("prototype", now=T)] == ["sketch"]
    (stale,) = service.check_staleness(now=T)
    assert (stale.name, stale.age_hours, stale.sla_breach_hours) == ("logging-v3", 52.0, 4.0)
    assert stale == sla.check(project, now=T).breaches[0]


def test_promote_is_the_promoters(project: Project) -> None:
    path = write_skill(project.root / STAGING, "auth-v2")
    result = PromotionService(project).promote(path, promoted_by="admin@example.com")
    assert result.success, result.error
    assert result.production_path == str(project.root / ".claude/skills/auth-v2")
    with Store.open(project.database_url) as store:
        (event,) = store.events("auth-v2", kind="promote")
    assert (event.actor, event.to_stage) == ("admin@example.com", "production")

    broken = write_skill(project.root / STAGING, "logging-v3", test="#!/bin/bash\nexit 1\n")
    refused = PromotionService(project).promote(broken)
    assert not refused.success and refused.error and "tests" in refused.error
    assert broken.is_dir()


def test_the_api_mirrors_the_cli(project: Project, cli_json: Invoke) -> None:
    now = dt.datetime.now(dt.UTC)
    write_skill(project.root / STAGING, "auth-v2")
    write_skill(project.root / STAGING, "logging-v3", test="#!/bin/bash\nexit 1\n")
    api.list_skills(project, now=now - 52 * HOUR)
    invoke = cli_json

    code, checked = invoke("sla", "check")
    stale = PromotionService(project).check_staleness()
    assert code == 1
    assert [(e["name"], e["breach_hours"]) for e in checked] == [
        (s.name, s.breach_hours) for s in stale
    ]

    code, planned = invoke("sla", "enforce", "--dry-run", "--auto-promote")
    enforcer = SLAEnforcer(project, auto_promote=True)
    dry = enforcer.enforce_sla(dry_run=True)
    assert code == 1
    assert planned["failed"] == dry.to_dict()["failed"]
    assert (planned["stale_skills_found"], planned["would_promote"]) == (
        dry.stale_skills_found,
        dry.would_promote,
    )
    assert [d["action"] for d in planned["details"]] == [d.action for d in dry.details]

    result = enforcer.enforce_sla()
    assert (result.stale_skills_found, result.promoted, result.notified) == (2, 1, 0)
    assert [d.skill.name for d in result.failed] == ["logging-v3"]
    code, after = invoke("sla", "enforce", "--auto-promote")
    assert code == 1
    assert (after["stale_skills_found"], after["promoted"]) == (1, 0)  # auth-v2 is live now
