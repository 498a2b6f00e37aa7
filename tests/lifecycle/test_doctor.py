"""`skillstage doctor` on real directories and real stores (SQLite and PostgreSQL): drift made by
hand (or by SIGKILLing a real promoter) is found, repaired under the skill's lock, and gone after.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import stat
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle import doctor as doc
from skillstage.lifecycle import fs
from skillstage.lifecycle.archive import archive_path
from skillstage.lifecycle.doctor import DoctorReport, Finding, run_doctor
from skillstage.lifecycle.fs import delete_scratch
from skillstage.lifecycle.locks import skill_lock
from skillstage.lifecycle.move import PromotionError, retired_path
from skillstage.skill.read import read_skill
from skillstage.store import Store
from tests.lifecycle.test_crash import _assert_whole
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")


def _promote(project: Project, version: str = "1.0.0", name: str = "auth-v2") -> str:
    """Stage `name` at `version` and promote it to production; its digest."""
    source = write_skill(project.root / STAGING, name, extra={"version": version})
    digest = read_skill(source).digest
    (result,) = api.promote(project, [name], actor="tester", overwrite=True)
    assert result.success, result.error
    return digest


def _killed_promoter(project: Project, fault: str, *, exchange: bool = True) -> None:
    """A real `skillstage promote` process, SIGKILLed at `fault` (as `kill -9` would)."""
    env = {**os.environ, "SKILLSTAGE_FAULT": fault}
    if not exchange:
        env["SKILLSTAGE_NO_EXCHANGE"] = "1"
    completed = subprocess.run(
        [sys.executable, "-m", "skillstage", "promote", "auth-v2", "--yes", "--overwrite"],
        cwd=project.root,
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert completed.returncode == -signal.SIGKILL, completed.stderr


def _kinds(report: DoctorReport) -> list[tuple[str, str | None, str | None]]:
    return sorted((f.kind, f.skill, f.stage) for f in report.findings)


def _only(report: DoctorReport, kind: str) -> Finding:
    (finding,) = [f for f in report.findings if f.kind == kind]
    return finding


def _clean(project: Project) -> None:
    """Doctor finds nothing, and the project is whole by the crash tests' standard."""
    again = run_doctor(project)
    assert again.findings == [], [f.to_dict() for f in again.findings]
    _assert_whole(project)


def _live(project: Project, name: str = "auth-v2") -> Path:
    return project.root / PRODUCTION / name


# -- a clean project -----------------------------------------------------------------------------


def test_a_clean_project_has_nothing_to_report(project: Project) -> None:
    _promote(project)
    _promote(project, "1.1.0")
    write_skill(project.root / STAGING, "waiting")
    api.list_skills(project)  # registers the waiting skill
    report = run_doctor(project, repair=True)
    assert report.ok and report.findings == []


# -- open journals ------------------------------------------------------------------------------


def test_a_promoter_killed_after_copying_is_recovered(project: Project) -> None:
    _promote(project)
    write_skill(project.root / STAGING, "auth-v2", extra={"version": "1.1.0"})
    _killed_promoter(project, "promote:copied")

    report = run_doctor(project)
    assert not report.ok
    journal = _only(report, doc.OPEN_JOURNAL)
    assert (journal.skill, journal.stage) == ("auth-v2", "production")
    assert journal.path == str(_live(project))
    assert "promote of auth-v2 1.1.0" in journal.detail
    scratch = _only(report, doc.ORPHAN_SCRATCH)
    assert scratch.skill == "auth-v2" and Path(scratch.path).name.startswith(
        ".skillstage-incoming-auth-v2-"
    )
    assert not any(f.repaired for f in report.findings)

    repaired = run_doctor(project, repair=True)
    assert repaired.ok, [f.to_dict() for f in repaired.findings]
    assert _only(repaired, doc.OPEN_JOURNAL).action == "auth-v2: unfinished promote undone"
    # The copy never went live: the change is undone, 1.0.0 stays, 1.1.0 waits in staging.
    assert read_skill(_live(project)).version == "1.0.0"
    assert read_skill(project.root / STAGING / "auth-v2").version == "1.1.0"
    _clean(project)


def test_a_promoter_killed_between_two_renames_leaves_nothing_missing(project: Project) -> None:
    digest = _promote(project)
    write_skill(project.root / STAGING, "auth-v2", extra={"version": "1.1.0"})
    _killed_promoter(project, "promote:between-renames", exchange=False)
    assert not _live(project).exists()  # the instant the journal exists for

    report = run_doctor(project)
    assert {doc.OPEN_JOURNAL, doc.MISSING_LIVE_DIR, doc.ORPHAN_SCRATCH} <= {
        f.kind for f in report.findings
    }
    repaired = run_doctor(project, repair=True)
    assert repaired.ok, [f.to_dict() for f in repaired.findings]
    # Recovery put the old copy back, which settled the missing directory too.
    missing = _only(repaired, doc.MISSING_LIVE_DIR)
    assert missing.repaired and missing.action == "resolved by the repairs above"
    assert read_skill(_live(project)).digest == digest
    _clean(project)


def test_repairs_wait_for_the_skills_lock(project: Project) -> None:
    _promote(project)
    write_skill(project.root / STAGING, "auth-v2", extra={"version": "1.1.0"})
    _killed_promoter(project, "promote:copied")
    with Store.open(project.database_url) as store, skill_lock(project, store, "auth-v2"):
        # Another process (here: this test) holds the lock, as a running promoter would.
        seen = run_doctor(project)
        assert "its lock is held" in _only(seen, doc.OPEN_JOURNAL).detail
        blocked = run_doctor(project, repair=True, lock_timeout=0.2)
        assert not blocked.ok
        journal = _only(blocked, doc.OPEN_JOURNAL)
        assert not journal.repaired
        assert journal.action is not None and journal.action.startswith("repair failed:")
        assert "gave up after 0.2 s" in journal.action
    assert run_doctor(project, repair=True).ok
    _clean(project)


# -- live directories ---------------------------------------------------------------------------


def test_a_missing_live_directory_is_restored_from_the_archive(project: Project) -> None:
    digest = _promote(project)
    shutil.rmtree(_live(project))

    report = run_doctor(project)
    finding = _only(report, doc.MISSING_LIVE_DIR)
    assert (finding.skill, finding.stage, finding.path) == (
        "auth-v2",
        "production",
        str(_live(project)),
    )
    assert "1.0.0 is in the archive" in finding.detail
    assert not _live(project).exists()  # without --repair nothing changes

    repaired = run_doctor(project, repair=True, actor="alice")
    finding = _only(repaired, doc.MISSING_LIVE_DIR)
    assert finding.repaired and finding.action == "restored auth-v2 1.0.0 from the archive"
    live = read_skill(_live(project))
    assert live.digest == digest
    # Restored as a live copy: writable like any other, not the archive's read-only files.
    assert os.stat(_live(project) / "SKILL.md").st_mode & stat.S_IWUSR
    (event,) = api.history(project, "auth-v2", limit=1)
    assert (event.kind, event.actor, event.version, event.to_stage) == (
        "repair",
        "alice",
        "1.0.0",
        "production",
    )
    _clean(project)


def test_a_missing_live_directory_with_no_archive_copy_says_what_to_do(project: Project) -> None:
    digest = _promote(project)
    shutil.rmtree(_live(project))
    delete_scratch(archive_path(project, "auth-v2", "1.0.0", digest))

    report = run_doctor(project, repair=True)
    assert not report.ok
    finding = _only(report, doc.MISSING_LIVE_DIR)
    assert not finding.repaired
    assert "1.0.0 is not in the archive" in finding.detail
    assert finding.action is not None and "git checkout" in finding.action
    assert "skillstage rollback auth-v2" in finding.action
    # The assignment is left as it was: the store still says where the skill should be.
    with Store.open(project.database_url) as store:
        (assignment,) = store.current_assignments(name="auth-v2")
    assert (assignment.stage, assignment.version) == ("production", "1.0.0")


def test_a_live_copy_edited_in_place_is_swapped_back_and_kept(project: Project) -> None:
    digest = _promote(project)
    skill_md = _live(project) / "SKILL.md"
    skill_md.write_text(skill_md.read_text() + "\nA hotfix typed straight into production.\n")
    edited = read_skill(_live(project)).digest

    report = run_doctor(project)
    finding = _only(report, doc.EDITED_LIVE_DIR)
    assert (finding.skill, finding.stage) == ("auth-v2", "production")
    assert edited[:12] in finding.detail and digest[:12] in finding.detail
    assert "matches no registered version" in finding.detail

    repaired = run_doctor(project, repair=True)
    assert repaired.ok, [f.to_dict() for f in repaired.findings]
    assert read_skill(_live(project)).digest == digest
    # Nothing is lost: the edited copy is an immutable archive entry, with the reason beside it.
    kept = archive_path(project, "auth-v2", "unregistered", edited)
    assert read_skill(kept).digest == edited
    assert "A hotfix typed straight into production." in (kept / "SKILL.md").read_text()
    assert not os.stat(kept / "SKILL.md").st_mode & stat.S_IWUSR
    (reason,) = json.loads(kept.with_name(kept.name + ".json").read_text())
    assert reason["reason"] == "edited-in-place"
    assert (reason["replaced_by_version"], reason["replaced_by_digest"]) == ("1.0.0", digest)
    assert str(kept) in (_only(repaired, doc.EDITED_LIVE_DIR).action or "")
    _clean(project)


def test_an_older_version_copied_over_the_live_one_is_named(project: Project) -> None:
    _promote(project)
    old = archive_path(project, "auth-v2", "1.0.0", read_skill(_live(project)).digest)
    digest = _promote(project, "1.1.0")
    shutil.rmtree(_live(project))
    shutil.copytree(old, _live(project))  # someone "rolled back" by hand
    for path in [_live(project), *_live(project).rglob("*")]:
        path.chmod(path.stat().st_mode | stat.S_IWUSR)

    finding = _only(run_doctor(project), doc.EDITED_LIVE_DIR)
    assert "it holds registered version 1.0.0" in finding.detail
    repaired = run_doctor(project, repair=True)
    assert repaired.ok
    assert read_skill(_live(project)).digest == digest
    _clean(project)


def test_an_unknown_directory_is_registered(project: Project) -> None:
    _promote(project)
    made = write_skill(project.root / PRODUCTION, "hand-made")  # copied in, never promoted

    finding = _only(run_doctor(project), doc.UNKNOWN_DIR)
    assert (finding.skill, finding.stage, finding.path) == ("hand-made", "production", str(made))
    assert "holds no registered version" in finding.detail

    repaired = run_doctor(project, repair=True)
    assert repaired.ok
    assert _only(repaired, doc.UNKNOWN_DIR).action == "registered (as `list` does)"
    with Store.open(project.database_url) as store:
        (assignment,) = store.current_assignments(name="hand-made")
    assert assignment.stage == "production"
    assert archive_path(project, "hand-made", "1.0.0", assignment.digest).is_dir()
    _clean(project)


def test_an_unknown_directory_that_cannot_be_registered_remains(project: Project) -> None:
    write_skill(project.root / PRODUCTION, "misnamed", extra={"name": "other-name"})
    report = run_doctor(project, repair=True)
    assert not report.ok
    finding = _only(report, doc.UNKNOWN_DIR)
    assert not finding.repaired
    assert finding.action is not None and "NAME_MISMATCH_DIRECTORY" in finding.action


def test_an_unknown_directory_conflicting_with_a_registered_version_remains(
    project: Project,
) -> None:
    _promote(project)
    # The same version number with other content, dropped into the prototype folder by hand.
    write_skill(project.root / ".claude/skills/prototype", "auth-v2", body="# Other\n")
    report = run_doctor(project, repair=True)
    assert not report.ok
    finding = _only(report, doc.UNKNOWN_DIR)
    assert (finding.stage, finding.repaired) == ("prototype", False)
    assert finding.action is not None
    assert "auth-v2 1.0.0 is already registered with other content" in finding.action


# -- scratch copies and the archive -------------------------------------------------------------


def test_an_orphan_scratch_directory_is_deleted(project: Project) -> None:
    _promote(project)
    scratch = project.root / PRODUCTION / ".skillstage-incoming-auth-v2-0123456789ab"
    write_skill(scratch.parent, scratch.name)
    archived = project.state_dir / "archive/auth-v2/.skillstage-archiving-1.0.0-x-fedcba987654"
    archived.mkdir()
    # A killed writer's half-written archive record: a file, not a tree.
    record = project.state_dir / "archive/auth-v2/.skillstage-writing-1.0.0-x.json-0123456789ab"
    record.write_text('{"reason": ')

    report = run_doctor(project)
    assert {(f.skill, f.stage, f.path) for f in report.findings} == {
        ("auth-v2", None, str(archived)),
        ("auth-v2", None, str(record)),
        ("auth-v2", "production", str(scratch)),
    }
    assert {f.kind for f in report.findings} == {doc.ORPHAN_SCRATCH}

    assert run_doctor(project, repair=True).ok
    assert not scratch.exists() and not archived.exists() and not record.exists()
    _clean(project)


def test_a_missing_archive_copy_is_taken_from_the_live_copy(project: Project) -> None:
    digest = _promote(project)
    entry = archive_path(project, "auth-v2", "1.0.0", digest)
    delete_scratch(entry)

    finding = _only(run_doctor(project), doc.ARCHIVE_MISSING)
    assert finding.path == str(entry)
    assert run_doctor(project, repair=True).ok
    assert read_skill(entry).digest == digest
    assert not os.stat(entry / "SKILL.md").st_mode & stat.S_IWUSR
    _clean(project)


def test_a_tampered_archive_entry_is_reported_not_repaired(project: Project) -> None:
    digest = _promote(project)
    _promote(project, "1.1.0")
    entry = archive_path(project, "auth-v2", "1.0.0", digest)
    entry.chmod(0o755)
    (entry / "SKILL.md").chmod(0o644)
    (entry / "SKILL.md").write_text("---\nname: auth-v2\nversion: 1.0.0\n---\nchanged\n")

    report = run_doctor(project, repair=True)
    assert not report.ok
    assert _kinds(report) == [
        (doc.ARCHIVE_DIGEST_MISMATCH, "auth-v2", None),
        (doc.ARCHIVE_WRITABLE, "auth-v2", None),
    ]
    writable = _only(report, doc.ARCHIVE_WRITABLE)
    assert "2 path(s)" in writable.detail and "SKILL.md" in writable.detail
    assert writable.action is not None and f"chmod -R a-w {entry}" in writable.action
    mismatch = _only(report, doc.ARCHIVE_DIGEST_MISMATCH)
    assert f"named for digest {digest[:12]}" in mismatch.detail
    # Shown as "not repaired: by hand: …" (it used to say "not repaired: not repaired: …").
    assert mismatch.action is not None and mismatch.action.startswith("by hand: ")
    assert not any(f.repaired for f in report.findings)
    assert "changed" in (entry / "SKILL.md").read_text()  # reported, left for a person
    # Nor does a rollback put the changed copy live under the digest it no longer has.
    with pytest.raises(PromotionError, match="no longer holds it") as refused:
        api.rollback(project, "auth-v2", reason="broken", to_version="1.0.0")
    assert "nothing was rolled back" in refused.value.message
    with pytest.raises(PromotionError, match="no longer holds it"):
        api.rollback(project, "auth-v2", reason="broken")  # the same entry, found by itself
    assert read_skill(_live(project)).version == "1.1.0"


# -- the command --------------------------------------------------------------------------------

Cli = Callable[..., int]


@pytest.fixture
def cli(project: Project, monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """`skillstage …` in this process, with `doctor` registered until main.py does it."""
    from skillstage.cli.doctor import doctor
    from skillstage.cli.main import cli as group
    from skillstage.cli.main import main

    added = "doctor" not in group.commands
    if added:
        group.add_command(doctor)
    monkeypatch.chdir(project.root)

    def run(*args: str) -> int:
        with pytest.raises(SystemExit) as exited:
            main(list(args))
        code = exited.value.code
        assert isinstance(code, int)
        return code

    yield run
    if added:
        group.commands.pop("doctor")


def test_the_command_exits_1_while_drift_remains(
    project: Project, cli: Cli, capsys: pytest.CaptureFixture[str]
) -> None:
    _promote(project)
    assert cli("doctor") == 0
    assert "No drift" in capsys.readouterr().out

    shutil.rmtree(_live(project))
    assert cli("doctor") == 1
    out = capsys.readouterr().out
    assert "missing_live_dir" in out and "auth-v2 (production)" in out
    assert "Run `skillstage doctor --repair`" in out

    assert cli("doctor", "--repair", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert (data["ok"], data["found"], data["repaired"], data["remaining"]) == (True, 1, 1, 0)
    (finding,) = data["findings"]
    assert set(finding) == {"kind", "skill", "stage", "path", "detail", "repaired", "action"}
    assert (finding["kind"], finding["repaired"]) == ("missing_live_dir", True)

    assert cli("doctor", "--json") == 0
    assert json.loads(capsys.readouterr().out)["findings"] == []


def test_repair_deletes_retired_copies_once_their_readers_had_their_minute(
    project: Project, cli: Cli, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    _promote(project)
    _promote(project, "1.1.0")  # 1.0.0's live copy is swapped out, kept for its readers
    (kept,) = retired_path(project).iterdir()
    assert cli("doctor", "--repair", "--json") == 0
    assert json.loads(capsys.readouterr().out)["swept"] == []  # not a minute old yet
    assert kept.is_dir()

    monkeypatch.setattr(fs, "RETIRE_GRACE_SECONDS", 0.0)  # as if the minute had passed
    assert cli("doctor") == 0  # not drift: without --repair it stays, and nothing is wrong
    assert kept.is_dir() and "Deleted" not in capsys.readouterr().out
    assert cli("doctor", "--repair") == 0
    assert "Deleted 1 copy swapped out of a stage more than 0 s ago" in capsys.readouterr().out
    assert not kept.exists()
    _clean(project)
