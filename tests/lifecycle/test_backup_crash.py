"""Crash safety of restores: a real `skillstage backup restore` SIGKILLed at each step of its
journal, then finished by `backup restore --resume` (or `doctor --repair`). Afterwards the tree,
the archive and the store are the backup's, every restored skill has exactly one `restore`
event, and no journal or scratch copy is left."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle.backup import backups_dir
from skillstage.lifecycle.doctor import run_doctor
from skillstage.lifecycle.leftovers import unfinished_restore
from tests.lifecycle.test_backup import _fingerprint as _tree
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")

POINTS = [
    "restore:journaled",
    "restore:store",
    "restore:one-swapped",
    "restore:swapped",
    "restore:recorded",
]


def _cli(project: Project, *args: str, fault: str | None = None, exchange: bool = True) -> int:
    env = {**os.environ, "NO_COLOR": "1"}
    env.pop("SKILLSTAGE_FAULT", None)
    if fault:
        env["SKILLSTAGE_FAULT"] = fault
    if not exchange:
        env["SKILLSTAGE_NO_EXCHANGE"] = "1"
    done = subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    return done.returncode


def _populate(project: Project) -> None:
    for name in ("alpha", "beta", "delta"):
        write_skill(project.root / STAGING, name, files={"notes.md": f"{name} notes\n"})
        (result,) = api.promote(project, [name], actor="tester")
        assert result.success, result.error
    write_skill(project.root / STAGING, "gamma")
    api.list_skills(project)  # registers gamma: the store and the disk agree in the backup


def _damage(project: Project) -> None:
    """What the restore has to undo: skills edited, removed and added, one archive entry lost."""
    (project.root / PRODUCTION / "alpha" / "SKILL.md").write_text("broken\n")
    shutil.rmtree(project.root / PRODUCTION / "beta")
    write_skill(project.root / STAGING, "epsilon")
    write_skill(project.root / STAGING, "delta", extra={"version": "1.1.0"})
    (result,) = api.promote(project, ["delta"], actor="tester", overwrite=True)
    assert result.success, result.error
    archive = project.state_dir / "archive" / "alpha"
    for entry in archive.iterdir():
        if entry.is_dir():
            subprocess.run(["chmod", "-R", "u+w", str(entry)], check=True)
            shutil.rmtree(entry)


def _restore_events(project: Project) -> list[dict[str, object]]:
    return [e for e in api.history_entries(project, limit=1000) if e["kind"] == "restore"]


def _assert_restored(project: Project, expected: dict[str, tuple[str, int]]) -> None:
    assert unfinished_restore(project) is None
    now = _tree(project)
    # The live trees exactly as backed up; the archive keeps every version that ever entered a
    # stage (delta 1.1.0's entry, newer than the backup, stays), the backup's put back.
    assert {k: v for k, v in now.items() if k.startswith(".claude")} == {
        k: v for k, v in expected.items() if k.startswith(".claude")
    }
    assert {k: now.get(k) for k in expected} == expected
    names = [e["skill_name"] for e in _restore_events(project)]
    assert sorted(names) == sorted(set(names)), names  # each once
    assert {"alpha", "beta", "epsilon"} <= set(names)
    leftovers = [p.name for p in backups_dir(project).iterdir() if p.name.startswith(".")]
    assert leftovers == []
    for root in (project.root / STAGING, project.root / PRODUCTION):
        assert not [p.name for p in root.iterdir() if p.name.startswith(".skillstage-")]
    # The store agrees with the disk: doctor finds nothing to repair.
    report = run_doctor(project)
    assert report.ok, [f.to_dict() for f in report.findings]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
@pytest.mark.parametrize("point", [*POINTS, "restore:between-renames"])
def test_a_restore_killed_at_each_step_is_resumed(
    project: Project, point: str, exchange: bool
) -> None:
    if point == "restore:between-renames" and exchange:
        pytest.skip("only the two-rename fallback has this step")
    _populate(project)
    expected = _tree(project)
    backup_id = api.backup_create(project, name="good").backup.id
    _damage(project)

    code = _cli(project, "backup", "restore", backup_id, "--force", fault=point, exchange=exchange)
    assert code == -signal.SIGKILL
    assert unfinished_restore(project) is not None
    # Nothing else starts over a half-done restore.
    assert _cli(project, "backup", "create") == 1
    assert _cli(project, "backup", "restore", backup_id, "--force") == 1

    assert _cli(project, "backup", "restore", "--resume", exchange=exchange) == 0
    _assert_restored(project, expected)
    # A second resume has nothing to do.
    assert _cli(project, "backup", "restore", "--resume") == 2


@pytest.mark.parametrize("point", ["restore:one-swapped", "restore:recorded"])
def test_doctor_repair_finishes_a_killed_restore(project: Project, point: str) -> None:
    _populate(project)
    expected = _tree(project)
    backup_id = api.backup_create(project, name="good").backup.id
    _damage(project)
    assert _cli(project, "backup", "restore", backup_id, "--force", fault=point) == -signal.SIGKILL
    found = json.loads(
        subprocess.run(
            [sys.executable, "-m", "skillstage", "doctor", "--json"],
            cwd=project.root,
            capture_output=True,
            text=True,
            timeout=120,
        ).stdout
    )
    assert "unfinished_restore" in json.dumps(found)
    repaired = subprocess.run(
        [sys.executable, "-m", "skillstage", "doctor", "--repair", "--json"],
        cwd=project.root,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert repaired.returncode == 0, repaired.stdout + repaired.stderr
    _assert_restored(project, expected)


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_one_skill_restore_killed_is_resumed(project: Project) -> None:
    _populate(project)
    alpha = project.root / PRODUCTION / "alpha"
    kept = (alpha / "SKILL.md").read_bytes()
    backup_id = api.backup_create(project).backup.id
    (alpha / "SKILL.md").write_text("broken\n")
    code = _cli(
        project, "backup", "restore", backup_id, "--skill", "alpha", fault="restore:one-swapped"
    )
    assert code == -signal.SIGKILL
    assert (alpha / "SKILL.md").read_bytes() == kept  # swapped, its event not yet recorded
    assert _restore_events(project) == []
    result = api.backup_resume(project)
    assert result.resumed and result.skill == "alpha"
    (event,) = _restore_events(project)
    assert event["skill_name"] == "alpha"
    assert unfinished_restore(project) is None
