"""Crash safety of a rollout's completion: a real `skillstage rollout advance` SIGKILLed at every
step of the promoter's journal (SKILLSTAGE_FAULT, as in tests/lifecycle/test_crash.py), then the
next `skillstage rollout tick` settles it.

Afterwards the rollout and the stage agree: either the rollout is completed and production holds
the candidate (rolled forward), or it is still open at 100% with production holding the stable
version (undone). Never a completed rollout with the old version live, nor an open one with the
new version live; no journal entry stays open and no event is doubled.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.rollout.plan import RolloutError
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import rollouts as store_rollouts
from skillstage.store.rollouts import RolloutRecord
from tests.skilltree import write_skill

NAME = "auth-v2"
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")

# Where the promoter dies, and whether recovery then finishes the completion (the new copy is
# live) or undoes it (it never went live).
POINTS = {
    "promote:journaled": "undone",
    "promote:archived": "undone",
    "promote:copied": "undone",
    "promote:swapped": "forward",
    "promote:source-removed": "forward",
    "promote:committed": "forward",
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


def _cli(
    project: Project, *args: str, fault: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    env["SKILLSTAGE_DATABASE_URL"] = project.database_url
    if fault:
        env["SKILLSTAGE_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _at_last_step(project: Project) -> tuple[SkillVersion, SkillVersion]:
    """1.0.0 live, a rollout of 1.1.0 forced to its 100% step; (stable, candidate)."""
    write_skill(project.root / STAGING, NAME)
    (promoted,) = api.promote(project, [NAME], to="production", actor="tester")
    assert promoted.success, promoted.error
    stable = read_skill(project.root / PRODUCTION / NAME)
    candidate = read_skill(write_skill(project.root / STAGING, NAME, extra={"version": "1.1.0"}))
    started = api.rollout_start(
        project, NAME, actor="tester", step_min_duration="0s", step_min_executions=20
    )
    assert started.success, started.error
    for _ in range(2):
        api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="crash")
    return stable, candidate


def _rollout(store: Store) -> RolloutRecord:
    with store.reading() as tx:
        (only,) = store_rollouts.rollouts(tx, name=NAME)
        return only


def _assert_whole(project: Project, stable: SkillVersion, candidate: SkillVersion) -> str:
    """The rollout, the disk and the store agree; "forward" or "undone"."""
    live = read_skill(project.root / PRODUCTION / NAME).digest
    with Store.open(project.database_url) as store:
        assert store.open_journals() == []
        rollout = _rollout(store)
        (assignment,) = store.current_assignments(stage="production", name=NAME)
        events = store.events(NAME, limit=1000)
    assert assignment.digest == live
    assert len({e.id for e in events}) == len(events)
    kinds = [e.kind for e in events]
    assert kinds.count("rollout_start") == 1
    assert kinds.count("rollout_step") == 2
    completions = [e for e in events if e.kind == "promote" and e.version == "1.1.0"]
    if rollout.state == "completed":
        assert live == candidate.digest  # never a completed rollout with the old version live
        assert not (project.root / STAGING / NAME).exists()
        (completion,) = completions
        assert completion.details is not None
        assert completion.details["rollout_id"] == rollout.id
        assert rollout.ended_at is not None
        return "forward"
    assert (rollout.state, rollout.step_index, rollout.weight) == ("active", 2, 100)
    assert live == stable.digest  # never an open rollout with the new version live
    assert completions == []
    assert read_skill(project.root / STAGING / NAME).digest == candidate.digest
    return "undone"


def _registry(project: Project) -> dict[str, object]:
    entry: dict[str, object] = json.loads(project.registry_file.read_text())["skills"][NAME]
    return entry


@pytest.mark.parametrize("point", list(POINTS))
def test_completion_killed_at_each_step_is_settled_whole(project: Project, point: str) -> None:
    stable, candidate = _at_last_step(project)
    killed = _cli(project, "rollout", "advance", NAME, "--force", "--reason", "x", fault=point)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    ticked = _cli(project, "rollout", "tick", "--json")
    assert ticked.returncode == 0, ticked.stdout + ticked.stderr
    assert _assert_whole(project, stable, candidate) == POINTS[point]
    if POINTS[point] == "undone":
        # The rollout waits at 100%, for data or a person: the tick saw it and said so.
        (waiting,) = json.loads(ticked.stdout)
        assert (waiting["action"], waiting["rollout"]["weight"]) == ("waiting", 100)
        assert _registry(project)["rollout"] is not None
        # The next completion goes through, once.
        done = api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="y")
        assert (done.success, done.action) == (True, "completed"), done.error
        assert _assert_whole(project, stable, candidate) == "forward"
    else:
        with pytest.raises(RolloutError, match="has no active rollout"):
            api.rollout_change(project, "advance", NAME, actor="tester", force=True, reason="y")
        assert _assert_whole(project, stable, candidate) == "forward"
    if point != "promote:committed":  # (see the test below)
        entry = _registry(project)
        assert (entry["digest"], entry["rollout"]) == (candidate.digest, None)


def test_registry_file_is_rewritten_after_a_completion_killed_after_its_commit(
    project: Project,
) -> None:
    _, candidate = _at_last_step(project)
    killed = _cli(
        project, "rollout", "advance", NAME, "--force", "--reason", "x", fault="promote:committed"
    )
    assert killed.returncode == -signal.SIGKILL
    assert _cli(project, "rollout", "tick").returncode == 0
    assert _cli(project, "rollout", "status").returncode == 0
    entry = _registry(project)
    assert (entry["digest"], entry["rollout"]) == (candidate.digest, None)
