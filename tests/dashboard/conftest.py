"""A project with something on every part of the dashboard, and the server fixtures.

`team` builds, on a real store: auth-v2 1.0.0 live in production with executions recorded over
the last six hours, 1.1.0 signed off in staging and rolled out to 10% of production with a real
loader's tagged executions; logging-v3 waiting in staging for 52 hours (an SLA breach) and held.
The `live` fixture (a real uvicorn on loopback) is the server tests' own.
"""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.lifecycle.readiness import review_items
from skillstage.runtime import Loader
from tests.server.conftest import live  # noqa: F401 (a fixture, used by name)
from tests.skilltree import write_skill

NAME = "auth-v2"
WAITING = "logging-v3"
APPROVER = "alice"
STAGING = Path(".claude/skills/staging")


@dataclass
class Team:
    project: Project
    stable: str  # versions
    candidate: str


def signoff_form(project: Project, to_stage: str, path: Path) -> Path:
    """A checklist answering every review item of a move into `to_stage` YES."""
    items = review_items(project, to_stage)
    path.write_text(
        "human_review:\n" + "".join(f"  {item}: YES\n" for item in items), encoding="utf-8"
    )
    return path


def build_team(root: Path) -> Team:
    api.init(root)
    config = root / "skillstage.toml"
    text = config.read_text(encoding="utf-8")
    # The move into production needs a sign-off, and alice may give it.
    marker = 'to = "production"\ngates = ["structure", "schema", "spec", "tests", "conflicts", '
    text = text.replace(
        marker + '"dependencies", "security"]', marker + '"dependencies", "security", "approval"]'
    )
    text = text.replace("approvers = []", f'approvers = ["{APPROVER}"]')
    config.write_text(text, encoding="utf-8")
    project = load_config_file(config)
    write_skill(root / STAGING, NAME)
    api.approve(
        project,
        NAME,
        to_stage="production",
        ticket="APPROVAL_TEST_001",
        decision="approved",
        approver=APPROVER,
        checklist_file=signoff_form(project, "production", root / "signoff-1.yaml"),
    )
    (promoted,) = api.promote(project, [NAME], to="production", actor="tester", approver=APPROVER)
    assert promoted.success, promoted.error
    rng = random.Random(7)
    now = dt.datetime.now(dt.UTC)
    for i in range(72):
        api.record_execution(
            project,
            NAME,
            version="1.0.0",
            timestamp=now - dt.timedelta(hours=6) + dt.timedelta(minutes=5 * i),
            subject=f"user-{i % 9}",
            pattern_fidelity=rng.choice([1.0, 1.0, 0.9, 0.67]),
            outcome_quality=rng.choice([1.0] * 9 + [0.0]),
            execution_time_ms=round(rng.uniform(1.0, 9.0), 2),
            exception=rng.random() < 0.05,
        )
    api.ingest_metrics(project)
    write_skill(root / STAGING, NAME, extra={"version": "1.1.0"})
    api.list_skills(project)
    api.approve(
        project,
        NAME,
        to_stage="production",
        ticket="APPROVAL_TEST_002",
        decision="approved",
        approver=APPROVER,
        checklist_file=signoff_form(project, "production", root / "signoff-2.yaml"),
    )
    outcome = api.rollout_start(
        project, NAME, actor="tester", step_min_duration="0s", step_min_executions=20
    )
    assert outcome.success, outcome.error
    with Loader(project) as loader:
        for i in range(200):
            resolution = loader.resolve(NAME, subject=f"user-{i}")
            loader.record(
                resolution,
                pattern_fidelity=0.95,
                outcome_quality=0.9,
                execution_time_ms=round(rng.uniform(2.0, 12.0), 2),
            )
    api.ingest_metrics(project)
    write_skill(root / STAGING, WAITING, extra={"version": "3.1.0"})
    api.list_skills(project, stage="staged", now=now - dt.timedelta(hours=52, minutes=18))
    api.switch(project, WAITING, kind="hold", on=True, actor=APPROVER, reason="waiting for review")
    return Team(project, "1.0.0", "1.1.0")


@pytest.fixture
def team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Team:
    """The team's project on SQLite and on PostgreSQL."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    return build_team(tmp_path / "project")


@pytest.fixture
def sqlite_team(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str) -> Team:
    """The team's project on SQLite only (for the browser tests: one store is enough there)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", sqlite_url)
    return build_team(tmp_path / "project")
