"""Promote and roll back on real directories and real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import threading
import time
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import LockError, UsageError
from skillstage.lifecycle import promote as promote_module
from skillstage.lifecycle.archive import archive_path
from skillstage.lifecycle.doctor import run_doctor
from skillstage.lifecycle.gates import GateContext, GateResult
from skillstage.lifecycle.locks import skill_lock
from skillstage.lifecycle.move import PromotionError
from skillstage.process import run
from skillstage.skill.read import read_skill
from skillstage.store import Store
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")


def staged(
    project: Project,
    name: str = "auth-v2",
    version: str = "1.0.0",
    extra: dict[str, object] | None = None,
    **kwargs: object,
) -> Path:
    fields = {"version": version, **(extra or {})}
    return write_skill(project.root / STAGING, name, extra=fields, **kwargs)  # type: ignore[arg-type]


def promote(project: Project, *refs: str, **kwargs: object) -> api.PromotionResult:  # type: ignore[name-defined]
    (result,) = api.promote(project, list(refs), actor="tester", **kwargs)  # type: ignore[arg-type]
    return result


def test_promote_moves_archives_and_records(project: Project, opened: Store) -> None:
    source = staged(project)
    digest = read_skill(source).digest
    result = promote(project, "auth-v2")
    assert result.success, result.error
    live = project.root / PRODUCTION / "auth-v2"
    assert read_skill(live).digest == digest
    assert not source.exists()  # seed 000: a move, not a copy
    archived = archive_path(project, "auth-v2", "1.0.0", digest)
    assert read_skill(archived).digest == digest
    assert not os.stat(archived / "SKILL.md").st_mode & stat.S_IWUSR  # immutable
    (assignment,) = opened.current_assignments(name="auth-v2")
    assert (assignment.stage, assignment.version, assignment.digest) == (
        "production",
        "1.0.0",
        digest,
    )
    (event,) = opened.events("auth-v2")
    assert (event.kind, event.from_stage, event.to_stage, event.actor) == (
        "promote",
        "staged",
        "production",
        "tester",
    )
    assert opened.open_journals() == []
    assert not [p for p in live.parent.iterdir() if p.name.startswith(".skillstage-")]


def test_result_mirrors_seed_000(project: Project) -> None:
    staged(project)
    result = promote(project, "auth-v2").to_dict()
    assert set(result) >= {
        "success",
        "skill_name",
        "version",
        "digest",
        "from_stage",
        "to_stage",
        "production_path",
        "deployment_id",
        "commit_hash",
        "gates",
        "error",
    }
    assert [g["gate"] for g in result["gates"]] == [
        "structure",
        "schema",
        "spec",
        "tests",
        "conflicts",
        "dependencies",
        "security",
    ]


def test_failing_gates_block_and_force_needs_a_reason(project: Project, opened: Store) -> None:
    source = staged(project)
    (source / "execute.sh").chmod(0o644)
    result = promote(project, "auth-v2")
    assert not result.success
    assert result.error == "gates failed: structure (required files: 1 error(s))"
    assert source.exists() and opened.current_assignments(name="auth-v2") == []
    (refused,) = opened.events()  # the refused attempt is audited, as a failed promotion
    assert (refused.kind, refused.success, refused.reason) == ("promote", False, result.error)
    with pytest.raises(UsageError, match="--force needs --reason"):
        promote(project, "auth-v2", force=True)
    forced = promote(project, "auth-v2", force=True, reason="hotfix INC-1")
    assert forced.success and forced.forced == ["structure"]
    kinds = [(e.kind, e.reason) for e in opened.events("auth-v2")]
    assert ("force", "hotfix INC-1") in kinds and ("promote", "hotfix INC-1") in kinds


def test_dry_run_changes_nothing(project: Project, opened: Store) -> None:
    source = staged(project)
    result = promote(project, "auth-v2", dry_run=True)
    assert result.success and result.dry_run
    assert source.exists() and not (project.root / PRODUCTION / "auth-v2").exists()
    assert opened.events() == [] and opened.open_journals() == []


def test_conflict_needs_overwrite_and_keeps_the_old_version(
    project: Project, opened: Store
) -> None:
    staged(project)
    assert promote(project, "auth-v2").success
    staged(project, version="1.1.0")
    blocked = promote(project, "auth-v2")
    assert not blocked.success
    (conflict,) = [g for g in blocked.gates if g.gate == "conflicts"]
    assert conflict.message.startswith("Skill already exists in production")
    assert promote(project, "auth-v2", overwrite=True).success
    assert read_skill(project.root / PRODUCTION / "auth-v2").version == "1.1.0"
    old = archive_path(project, "auth-v2", "1.0.0", opened.find_version("auth-v2", "1.0.0").digest)  # type: ignore[union-attr]
    assert '"overwritten"' in old.with_name(old.name + ".json").read_text()


def test_same_version_other_content_is_refused(project: Project) -> None:
    staged(project)
    assert promote(project, "auth-v2").success
    staged(project, files={"extra.md": "changed"})
    result = promote(project, "auth-v2", overwrite=True)
    assert not result.success
    (conflict,) = [g for g in result.gates if g.gate == "conflicts"]
    assert "already registered with other content" in conflict.message


def test_dependencies_must_be_in_place(project: Project) -> None:
    staged(project, "logging", extra={"dependencies": ["auth-v2"]})
    staged(project, "auth-v2")
    first = promote(project, "logging")
    assert not first.success and "auth-v2" in first.error  # type: ignore[operator]
    assert promote(project, "auth-v2").success
    assert promote(project, "logging").success


def test_rollback_restores_the_previous_version(project: Project, opened: Store) -> None:
    staged(project)
    promote(project, "auth-v2")
    staged(project, version="1.1.0")
    promote(project, "auth-v2", overwrite=True)
    result = api.rollback(
        project, "auth-v2", reason="pattern_fidelity_drop_below_85", trigger_metric="fidelity=0.83"
    )
    assert (result.previous_version, result.version) == ("1.1.0", "1.0.0")
    live = project.root / PRODUCTION / "auth-v2"
    assert read_skill(live).version == "1.0.0"
    (assignment,) = opened.current_assignments(name="auth-v2")
    assert assignment.version == "1.0.0"
    failed = archive_path(
        project, "auth-v2", "1.1.0", opened.find_version("auth-v2", "1.1.0").digest
    )  # type: ignore[union-attr]
    assert '"failed"' in failed.with_name(failed.name + ".json").read_text()
    assert "fidelity=0.83" in failed.with_name(failed.name + ".json").read_text()


def test_rollback_events_view_on_sqlite(project: Project) -> None:
    if not project.database_url.startswith("sqlite"):
        pytest.skip("the seed's SQL is SQLite's")
    staged(project)
    promote(project, "auth-v2")
    staged(project, version="1.1.0")
    promote(project, "auth-v2", overwrite=True)
    api.rollback(project, "auth-v2", reason="manual_override", trigger_metric="fidelity=0.83")
    rows = (
        sqlite3.connect(project.database_url.removeprefix("sqlite:///"))
        .execute(
            "SELECT skill_id, from_state, to_state, trigger_reason, trigger_metric"
            " FROM rollback_events"
        )
        .fetchall()
    )
    assert rows == [("auth-v2", "production", "production", "manual_override", "fidelity=0.83")]


def test_rollback_without_an_earlier_version_returns_to_staged(
    project: Project, opened: Store
) -> None:
    staged(project)
    promote(project, "auth-v2")
    result = api.rollback(project, "auth-v2", reason="broken")
    assert result.to_stage == "staged"
    assert not (project.root / PRODUCTION / "auth-v2").exists()
    assert read_skill(project.root / STAGING / "auth-v2").version == "1.0.0"
    (assignment,) = opened.current_assignments(name="auth-v2")
    assert assignment.stage == "staged"


def test_rollback_to_a_named_version(project: Project) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        staged(project, version=version)
        assert promote(project, "auth-v2", overwrite=True).success
    result = api.rollback(project, "auth-v2", reason="r", to_version="1.0.0")
    assert result.version == "1.0.0"
    with pytest.raises(PromotionError, match="not in the archive"):
        api.rollback(project, "auth-v2", reason="r", to_version="9.9.9")


def test_a_second_promoter_waits_then_fails_with_a_lock_error(
    project: Project, opened: Store
) -> None:
    staged(project)
    held = threading.Event()
    release = threading.Event()

    def holder() -> None:
        with Store.open(project.database_url) as other, skill_lock(project, other, "auth-v2"):
            held.set()
            release.wait(10)

    thread = threading.Thread(target=holder)
    thread.start()
    try:
        held.wait(10)
        started = time.monotonic()
        with pytest.raises(LockError, match="being promoted or rolled back by another process"):
            promote(project, "auth-v2", lock_timeout=0.5)
        assert 0.4 < time.monotonic() - started < 5
    finally:
        release.set()
        thread.join()
    assert promote(project, "auth-v2").success


def test_all_ready_promotes_only_skills_whose_gates_pass(project: Project) -> None:
    staged(project, "good")
    bad = staged(project, "bad")
    (bad / "execute.sh").chmod(0o644)
    results = api.promote(project, [], all_ready_from="staged", actor="t")
    outcome = {r.skill_name: r.success for r in results}
    assert outcome == {"bad": False, "good": True}


def test_a_second_checkout_sharing_the_store_acts_on_its_own_files(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # The store keeps the path each version was registered at; another checkout (or the project
    # moved or copied) must act on its own directories, never on that path.
    staged(project)
    promote(project, "auth-v2")
    staged(project, version="1.1.0")
    promote(project, "auth-v2", overwrite=True)
    other_root = tmp_path_factory.mktemp("checkout") / "project"
    shutil.copytree(project.root, other_root, symlinks=True)
    other = load_config_file(other_root / "skillstage.toml")
    assert run_doctor(other).findings == []

    result = api.rollback(other, "auth-v2", reason="broken in this checkout")
    assert (result.previous_version, result.version) == ("1.1.0", "1.0.0")
    assert read_skill(other_root / PRODUCTION / "auth-v2").version == "1.0.0"
    assert read_skill(project.root / PRODUCTION / "auth-v2").version == "1.1.0"  # untouched
    assert run_doctor(other).findings == []
    (listed,) = api.list_skills(other, stage="production").skills
    assert listed.path == other_root / PRODUCTION / "auth-v2"


def test_an_approval_named_for_a_promotion_must_be_the_recorded_sign_off(project: Project) -> None:
    # The transition needs no approval (default gates), but one named goes on record: unchecked,
    # anyone could put any approver and ticket in the audit trail.
    staged(project)
    named = promote(project, "auth-v2", approver="mallory", approval_ticket="FAKE_TICKET")
    assert not named.success
    (approval,) = [g for g in named.gates if g.blocks]
    assert approval.gate == "approval"
    assert approval.message.startswith(
        "--approver and --approval-ticket ask for a sign-off: no sign-off of auth-v2 1.0.0"
    )
    assert approval.details[-1].endswith(
        "without --approver and --approval-ticket the promotion needs none"
    )
    assert (project.root / STAGING / "auth-v2").is_dir()
    assert promote(project, "auth-v2").success  # without naming one, no sign-off is needed


def test_a_source_moved_away_while_a_gate_runs_is_reported_as_moved(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Another promoter takes the staging copy while this one's tests gate is about to run
    # test.sh (found a moment before): running it fails. That is the race, not a broken skill.
    # The gate below plays both parts, so the race happens every time.
    elsewhere = project.root.parent / f"{project.root.name}-taken-by-another-promoter"

    class RacedGate:
        name = "tests"

        def check(self, context: GateContext) -> GateResult:
            source = context.skill.path
            source.rename(elsewhere)
            run(["./test.sh"], cwd=source, timeout=5)  # raises: the copy is gone
            raise AssertionError("unreachable")

    monkeypatch.setattr(promote_module, "gates_for", lambda project, transition: [RacedGate()])
    staged(project)
    result = promote(project, "auth-v2")
    assert not result.success
    assert result.error == (
        "auth-v2 was moved out of staged by another process (see `skillstage history auth-v2`)"
    )
    assert (elsewhere / "SKILL.md").is_file()


def test_a_skill_named_after_a_stage_folder_is_not_promoted_over_it(project: Project) -> None:
    # Production's path is .claude/skills/{name}: a skill named "staging" would land on the
    # staging folder itself and swap every staged skill out with it.
    staged(project, "auth-v2")
    staged(project, "staging")
    with pytest.raises(UsageError, match="that is staged's folder"):
        promote(project, "staging", overwrite=True)
    assert (project.root / STAGING / "auth-v2" / "SKILL.md").is_file()
    assert (project.root / STAGING / "staging" / "SKILL.md").is_file()


def test_a_skill_directory_that_is_a_symlink_is_promoted_and_only_the_link_goes(
    project: Project, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = write_skill(tmp_path_factory.mktemp("elsewhere"), "linked")
    staging = project.root / STAGING
    staging.mkdir(parents=True, exist_ok=True)
    mode = stat.S_IMODE(staging.stat().st_mode)
    (staging / "linked").symlink_to(outside, target_is_directory=True)
    assert promote(project, "linked").success
    assert (project.root / PRODUCTION / "linked" / "SKILL.md").is_file()
    assert not os.path.lexists(staging / "linked")
    assert (outside / "SKILL.md").is_file()  # what the link pointed to is untouched
    assert stat.S_IMODE(staging.stat().st_mode) == mode
    assert [p.name for p in staging.iterdir()] == []


def test_a_name_too_long_for_the_scratch_copies_is_refused_before_anything_moves(
    project: Project, opened: Store
) -> None:
    name = "a" * 230  # a file name the filesystem takes; ".skillstage-incoming-" + it, not
    staged(project, name)
    with pytest.raises(UsageError, match="at most 200 can be promoted"):
        promote(project, name, force=True, reason="past the name check")
    assert (project.root / STAGING / name / "SKILL.md").is_file()
    assert opened.open_journals() == []
