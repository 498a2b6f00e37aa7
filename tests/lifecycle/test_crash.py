"""Crash safety: the promoter SIGKILLed at every step of its journal, then recovered.

Each fault point kills a real `skillstage` process (as `kill -9` would) right after that step.
Afterwards (recovery runs first thing in the next mutating command) every skill must be whole: each
live directory holds exactly one archived version, the store agrees with the disk, no journal entry
stays open, no scratch directory is left, and no event is lost or doubled.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle.archive import archive_path
from skillstage.skill.read import read_skill, stage_directories
from skillstage.store import Store
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")

PROMOTE_POINTS = [
    "promote:journaled",
    "promote:archived",
    "promote:copied",
    "promote:swapped",
    "promote:source-removed",
    "promote:committed",
]
ROLLBACK_POINTS = [
    "rollback:journaled",
    "rollback:archived",
    "rollback:copied",
    "rollback:swapped",
    "rollback:committed",
]


def _cli(project: Project, *args: str, fault: str | None = None, exchange: bool = True) -> int:
    env = dict(os.environ)
    if fault:
        env["SKILLSTAGE_FAULT"] = fault
    if not exchange:
        env["SKILLSTAGE_NO_EXCHANGE"] = "1"
    return subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        timeout=120,
    ).returncode


def _assert_whole(project: Project) -> None:
    # `list` is the next command a user would run: it recovers, then registers on first sight.
    assert not api.list_skills(project).unreadable
    with Store.open(project.database_url) as store:
        assert store.open_journals() == []
        on_disk = {(e.name, e.stage): read_skill(e.path) for e in stage_directories(project)}
        in_store = {(a.name, a.stage): a for a in store.current_assignments()}
        assert set(on_disk) == set(in_store), (on_disk.keys(), in_store.keys())
        for key, skill in on_disk.items():
            assert skill.digest == in_store[key].digest
            assert skill.version == in_store[key].version
            archived = archive_path(project, skill.name, skill.version, skill.digest)
            assert read_skill(archived).digest == skill.digest
        events = store.events(limit=1000)
        assert len({e.id for e in events}) == len(events)
    for root in {project.stage_root(s) for s in project.config.stages}:
        if root.is_dir():
            assert not [p.name for p in root.iterdir() if p.name.startswith(".skillstage-")]


def _promotions(project: Project, version: str) -> int:
    with Store.open(project.database_url) as store:
        return sum(
            1 for e in store.events(limit=1000) if e.kind == "promote" and e.version == version
        )


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
@pytest.mark.parametrize("point", [*PROMOTE_POINTS, "promote:between-renames"])
def test_promotion_killed_at_each_step_recovers(
    project: Project, point: str, exchange: bool
) -> None:
    if point == "promote:between-renames" and exchange:
        pytest.skip("only the two-rename fallback has this step")
    write_skill(project.root / STAGING, "auth-v2")
    assert _cli(project, "promote", "auth-v2", "--yes") == 0
    write_skill(project.root / STAGING, "auth-v2", extra={"version": "1.1.0"})
    code = _cli(
        project, "promote", "auth-v2", "--yes", "--overwrite", fault=point, exchange=exchange
    )
    assert code == -signal.SIGKILL
    _assert_whole(project)
    live = read_skill(project.root / ".claude/skills/auth-v2")
    assert live.version in ("1.0.0", "1.1.0")
    assert _promotions(project, "1.1.0") == (1 if live.version == "1.1.0" else 0)
    # The next promotion works (and is recorded once).
    if live.version == "1.0.0":
        assert _cli(project, "promote", "auth-v2", "--yes", "--overwrite") == 0
    assert _promotions(project, "1.1.0") == 1
    _assert_whole(project)


@pytest.mark.parametrize("point", ROLLBACK_POINTS)
def test_rollback_killed_at_each_step_recovers(project: Project, point: str) -> None:
    for version in ("1.0.0", "1.1.0"):
        write_skill(project.root / STAGING, "auth-v2", extra={"version": version})
        assert _cli(project, "promote", "auth-v2", "--yes", "--overwrite") == 0
    code = _cli(project, "rollback", "auth-v2", "--reason", "broken", "--yes", fault=point)
    assert code == -signal.SIGKILL
    _assert_whole(project)
    live = read_skill(project.root / ".claude/skills/auth-v2").version
    with Store.open(project.database_url) as store:
        rollbacks = [e for e in store.events(limit=100) if e.kind == "rollback"]
    assert len(rollbacks) == (1 if live == "1.0.0" else 0)


def test_list_recovers_a_crashed_promotion_first(project: Project) -> None:
    write_skill(project.root / STAGING, "auth-v2")
    assert _cli(project, "promote", "auth-v2", "--yes", fault="promote:swapped") == -signal.SIGKILL
    listing = api.list_skills(project)
    assert [(s.name, s.stage) for s in listing.skills] == [("auth-v2", "production")]
