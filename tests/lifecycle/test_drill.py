"""The rollback drill (seed 001 "Rollback procedure tested", seed 003 "Rollback procedures
tested") on real skill trees and real stores (SQLite and PostgreSQL): the real promote and
rollback run on a scratch copy, and nothing live changes but the drill's own event."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.lifecycle.archive import archive_path
from skillstage.lifecycle.drill import DrillRefused, latest_drill
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store.export import fingerprint_of
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
NAME = "auth-v2"


def put_live(project: Project, *versions: str) -> None:
    """Each version staged, then promoted into production, in turn."""
    for version in versions:
        write_skill(project.root / STAGING, NAME, extra={"version": version})
        (result,) = api.promote(project, [NAME], actor="tester", overwrite=True)
        assert result.success, result.error


def tree_fingerprint(root: Path) -> dict[str, str]:
    """Every file, directory and link under `root` (the store's own files left out): its
    mode and content."""
    found = {}
    for directory, folders, files in os.walk(root):
        for entry in [*folders, *files]:
            path = Path(directory, entry)
            relative = str(path.relative_to(root))
            if entry.startswith("state.db"):
                continue
            info = path.lstat()
            if path.is_symlink():
                found[relative] = f"link {os.readlink(path)}"
            elif path.is_dir():
                found[relative] = f"dir {oct(info.st_mode)}"
            else:
                found[relative] = (
                    f"{oct(info.st_mode)} {hashlib.sha256(path.read_bytes()).hexdigest()}"
                )
    return found


def store_state(store: Store) -> dict[str, Any]:
    """The store's history: every event, every stage pointer, every table's row count."""
    with store.reading() as tx:
        counts = fingerprint_of(tx)["tables"]
    return {
        "events": [
            (e.id, e.kind, e.version, e.digest, e.from_stage, e.to_stage, e.success, e.details)
            for e in store.events(limit=100_000)
        ],
        "assignments": store.current_assignments(),
        "journals": store.open_journals(),
        "tables": counts,
    }


def without_drills(state: dict[str, Any]) -> dict[str, Any]:
    drills = sum(1 for e in state["events"] if e[1] == "drill")
    return {
        **state,
        "events": [e for e in state["events"] if e[1] != "drill"],
        "tables": {**state["tables"], "event": state["tables"]["event"] - drills},
    }


def test_a_waiting_version_is_promoted_then_rolled_back_and_nothing_live_changes(
    project: Project, opened: Store
) -> None:
    put_live(project, "1.0.0")
    write_skill(project.root / STAGING, NAME, extra={"version": "1.1.0"})
    tree, state = tree_fingerprint(project.root), store_state(opened)

    result = api.drill(project, NAME, actor="drill-tester")

    assert result.passed, result.to_dict()
    assert [s.step for s in result.steps] == ["copy", "promote", "rollback"]
    assert (result.live_version, result.candidate_version, result.rollback_version) == (
        "1.0.0",
        "1.1.0",
        "1.0.0",
    )
    assert [s.expected_version for s in result.steps[1:]] == ["1.1.0", "1.0.0"]
    assert all(s.seconds > 0 for s in result.steps)
    assert "production holds auth-v2 1.0.0" in result.steps[2].message
    # Nothing live changed: the tree, and the store's history but for the drill's event.
    assert tree_fingerprint(project.root) == tree
    after = store_state(opened)
    assert without_drills(after) == state
    assert read_skill(project.root / STAGING / NAME).version == "1.1.0"  # still waiting
    # The drill is on record, and the readiness criterion reads it.
    (event,) = opened.events(NAME, kind="drill")
    assert (event.success, event.version, event.to_stage, event.actor) == (
        True,
        "1.0.0",
        "production",
        "drill-tester",
    )
    assert event.details is not None and event.details["versions"]["candidate"] == "1.1.0"
    assert [s["step"] for s in event.details["steps"]] == ["copy", "promote", "rollback"]
    record = latest_drill(opened, NAME)
    assert record is not None and record.passed and record.event_id == result.event_id
    assert record.version == "1.0.0" and record.seconds > 0
    assert record.to_dict()["versions"]["rollback_to"] == "1.0.0"
    assert result.store_copy == f"the {opened.dialect} store's records in a scratch SQLite store"


def test_with_nothing_waiting_production_rolls_back_then_the_live_version_is_restored(
    project: Project, opened: Store
) -> None:
    put_live(project, "1.0.0", "1.1.0", "1.2.0")
    tree, state = tree_fingerprint(project.root), store_state(opened)

    result = api.drill(project, NAME)

    assert result.passed, result.to_dict()
    assert [s.step for s in result.steps] == ["copy", "rollback", "restore"]
    # The version a real rollback would restore: the one live before.
    assert (result.live_version, result.rollback_version) == ("1.2.0", "1.1.0")
    assert "production holds auth-v2 1.2.0" in result.steps[2].message
    assert tree_fingerprint(project.root) == tree
    assert without_drills(store_state(opened)) == state
    # A real rollback afterwards picks the same version the drill did: the drill marked nothing
    # failed on the live store.
    rolled = api.rollback(project, NAME, reason="after the drill")
    assert rolled.version == "1.1.0"


def test_a_first_release_is_promoted_then_rolled_back_to_the_stage_it_waited_in(
    project: Project, opened: Store
) -> None:
    write_skill(project.root / STAGING, NAME, extra={"version": "1.0.0"})
    api.list_skills(project)  # registers it in staged
    tree = tree_fingerprint(project.root)

    result = api.drill(project, NAME)

    assert result.passed, result.to_dict()
    assert [s.step for s in result.steps] == ["copy", "promote", "rollback"]
    assert "production holds no version" in result.steps[2].message
    assert "staged holds auth-v2 1.0.0" in result.steps[2].message
    assert tree_fingerprint(project.root) == tree
    assert not (project.root / PRODUCTION / NAME).exists()


def test_a_corrupted_archive_entry_fails_the_rollback_step_and_is_recorded(
    project: Project, opened: Store
) -> None:
    put_live(project, "1.0.0", "1.1.0")
    record = opened.find_version(NAME, "1.0.0")
    assert record is not None
    entry = archive_path(project, NAME, "1.0.0", record.digest)
    skill_md = entry / "SKILL.md"
    os.chmod(entry, 0o755)
    os.chmod(skill_md, 0o644)
    skill_md.write_text(skill_md.read_text() + "tampered\n")
    tree = tree_fingerprint(project.root)

    result = api.drill(project, NAME)

    assert not result.passed
    failed = result.failed_step
    assert failed is not None and failed.step == "rollback"
    assert "archive copy of auth-v2 1.0.0" in failed.message
    assert f"({entry})" in failed.message  # the live entry's path, not the scratch copy's
    assert [s.step for s in result.steps] == ["copy", "rollback"]  # it stopped there
    assert tree_fingerprint(project.root) == tree
    (event,) = opened.events(NAME, kind="drill")
    assert not event.success
    assert event.reason is not None and event.reason.startswith("the rollback step failed")
    drill = latest_drill(opened, NAME)
    assert drill is not None and not drill.passed


def test_a_skill_with_nothing_to_roll_back_to_is_refused_and_nothing_recorded(
    project: Project, opened: Store
) -> None:
    put_live(project, "1.0.0")
    with pytest.raises(DrillRefused, match="only version production has had") as refused:
        api.drill(project, NAME)
    assert refused.value.exit_code == 1
    assert latest_drill(opened, NAME) is None
    with pytest.raises(UsageError, match="no skill named 'missing'"):
        api.drill(project, "missing")


def test_no_hook_notification_or_git_commit_runs_in_the_scratch_copy(
    project: Project, opened: Store, receiver: tuple[str, list[dict[str, object]]]
) -> None:
    url, received = receiver
    marker = project.root.parent / "hook-ran"
    config = project.root / "skillstage.toml"
    text = config.read_text()
    for old, new in (
        (
            "retry_base_seconds = 1\n",
            f'retry_base_seconds = 1\npost_rollback = "touch {marker}"\n'
            f'post_promote = "touch {marker}"\n',
        ),
        ("urls = []\n", f'urls = ["{url}"]\n'),
        (
            'path = ".claude/skills/{name}"\n',
            f'path = ".claude/skills/{{name}}"\nsmoke = "touch {marker}"\n',
        ),
    ):
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    config.write_text(text)
    configured = load_config_file(project.root / "skillstage.toml")
    put_live(configured, "1.0.0")
    marker.unlink(missing_ok=True)
    write_skill(project.root / STAGING, NAME, extra={"version": "1.1.0"})

    result = api.drill(configured, NAME)

    assert result.passed, result.to_dict()
    assert not marker.exists()
    assert received == []
