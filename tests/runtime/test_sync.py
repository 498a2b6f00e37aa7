"""`skillstage sync` on real directories and real stores (SQLite and PostgreSQL): what a
subject's directory holds, that only changes touch it, and that nothing of anyone else's is lost."""

from __future__ import annotations

import json
import os
import queue
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.lifecycle import fs
from skillstage.lifecycle.move import retired_path
from skillstage.rollout.bucket import bucket
from skillstage.runtime.routing import archive_entry
from skillstage.runtime.sync import MANIFEST_NAME, SyncError, SyncResult, watch
from skillstage.skill.read import read_skill
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")

# (st_ino, st_ctime_ns, st_mtime_ns, st_mode) of every path under a directory, by relative path.
Snapshot = dict[str, tuple[int, int, int, int]]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    root = tmp_path / "project"
    api.init(root)
    return load_config_file(root / "skillstage.toml")


@pytest.fixture
def into(tmp_path: Path) -> Path:
    """The directory a subject syncs into (not there yet)."""
    return tmp_path / "host" / "skills"


def _promote(project: Project, name: str, version: str = "1.0.0", **kwargs: Any) -> None:
    write_skill(project.root / STAGING, name, extra={"version": version}, **kwargs)
    # A later version replaces the one live: the conflicts gate wants that said.
    results = api.promote(project, [name], to="production", overwrite=version != "1.0.0")
    assert [r.success for r in results] == [True], [r.error for r in results]


def _start_rollout(project: Project, name: str, version: str = "1.1.0") -> str:
    """Roll `version` of `name` out to 10% of production; its digest."""
    staged = write_skill(project.root / STAGING, name, extra={"version": version})
    digest = read_skill(staged).digest
    outcome = api.rollout_start(project, name, step_min_duration="0s", step_min_executions=5)
    assert outcome.success, outcome.error
    assert outcome.rollout is not None and outcome.rollout.weight == 10
    return digest


def _subjects(name: str) -> tuple[str, str]:
    """A subject in the first 10% of `name`'s buckets, and one outside them."""
    inside = next(f"user-{i}" for i in range(10_000) if bucket(name, f"user-{i}") <= 10)
    outside = next(f"user-{i}" for i in range(10_000) if bucket(name, f"user-{i}") > 10)
    return inside, outside


def _live_digest(project: Project, name: str) -> str:
    return read_skill(project.stage_path("production", name)).digest


def _snapshot(directory: Path) -> Snapshot:
    found: Snapshot = {}
    for path in (directory, *sorted(directory.rglob("*"))):
        st = path.lstat()
        found[str(path.relative_to(directory))] = (
            st.st_ino,
            st.st_ctime_ns,
            st.st_mtime_ns,
            stat.S_IMODE(st.st_mode),
        )
    return found


def _manifest(into: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((into / MANIFEST_NAME).read_text(encoding="utf-8"))
    return data


def _names(result: SyncResult) -> dict[str, list[str]]:
    return {
        "added": [s.name for s in result.added],
        "updated": [s.name for s in result.updated],
        "removed": result.removed,
    }


def _delete(path: Path) -> None:
    fs.delete_scratch(path)  # the copies are read-only


# -- one sync ----------------------------------------------------------------------------------


def test_first_sync_installs_every_skill_read_only_with_its_digest(
    project: Project, into: Path
) -> None:
    _promote(project, "alpha")
    _promote(project, "beta", files={"references/guide.md": "# Guide\n"})

    result = api.sync(project, into, subject="dev-1")

    assert _names(result) == {"added": ["alpha", "beta"], "updated": [], "removed": []}
    assert (result.unchanged, result.skipped, result.foreign) == (0, {}, [])
    assert (result.stage, result.subject) == ("production", "dev-1")
    for name in ("alpha", "beta"):
        copy = into / name
        assert read_skill(copy).digest == _live_digest(project, name)
        assert stat.S_IMODE((copy / "SKILL.md").stat().st_mode) == 0o444
        assert stat.S_IMODE((copy / "execute.sh").stat().st_mode) == 0o555
        assert stat.S_IMODE(copy.stat().st_mode) == 0o555
    assert stat.S_IMODE((into / "beta" / "references").stat().st_mode) == 0o555
    assert stat.S_IMODE((into / "beta" / "references" / "guide.md").stat().st_mode) == 0o444
    manifest = _manifest(into)
    assert manifest["stage"] == "production" and manifest["subject"] == "dev-1"
    assert manifest["skills"] == {
        name: {"version": "1.0.0", "digest": _live_digest(project, name), "arm": "stable"}
        for name in ("alpha", "beta")
    }
    assert json.loads(json.dumps(result.to_dict()))["added"][0]["name"] == "alpha"
    # Nothing but the skills and the manifest is left in the directory.
    assert sorted(p.name for p in into.iterdir()) == [MANIFEST_NAME, "alpha", "beta"]


def test_a_second_sync_touches_nothing(project: Project, into: Path) -> None:
    for name in ("alpha", "beta", "gamma"):
        _promote(project, name)
    api.sync(project, into, subject="dev-1")
    before = _snapshot(into)

    result = api.sync(project, into, subject="dev-1")

    assert _names(result) == {"added": [], "updated": [], "removed": []}
    assert result.unchanged == 3 and not result.changed
    assert _snapshot(into) == before  # the manifest too: not rewritten


def test_a_subject_in_the_rollout_gets_the_candidate_and_an_abort_swaps_it_back(
    project: Project, tmp_path: Path
) -> None:
    _promote(project, "alpha")
    _promote(project, "beta")
    stable = _live_digest(project, "alpha")
    candidate = _start_rollout(project, "alpha")
    inside, outside = _subjects("alpha")
    mine, theirs = tmp_path / "inside", tmp_path / "outside"

    joined = api.sync(project, mine, subject=inside)
    not_joined = api.sync(project, theirs, subject=outside)

    (alpha,) = [s for s in joined.added if s.name == "alpha"]
    assert (alpha.version, alpha.arm, alpha.digest) == ("1.1.0", "candidate", candidate)
    assert alpha.bucket is not None and alpha.bucket <= 10
    assert read_skill(mine / "alpha").digest == candidate
    (other,) = [s for s in not_joined.added if s.name == "alpha"]
    assert (other.version, other.arm, other.digest) == ("1.0.0", "stable", stable)
    assert read_skill(theirs / "alpha").digest == stable
    assert read_skill(mine / "beta").digest == read_skill(theirs / "beta").digest

    beta_before = _snapshot(mine / "beta")
    api.rollout_change(project, "abort", "alpha", reason="x")
    back = api.sync(project, mine, subject=inside)

    assert _names(back) == {"added": [], "updated": ["alpha"], "removed": []}
    assert (back.updated[0].previous, back.updated[0].version) == ("1.1.0", "1.0.0")
    assert back.updated[0].arm == "stable" and back.unchanged == 1
    assert read_skill(mine / "alpha").digest == stable
    assert _snapshot(mine / "beta") == beta_before
    assert _manifest(mine)["skills"]["alpha"]["digest"] == stable


def test_a_promotion_or_rollback_updates_one_skill_and_a_skill_leaving_is_removed(
    project: Project, into: Path
) -> None:
    for name in ("alpha", "beta", "gamma"):
        _promote(project, name)
    api.sync(project, into, subject="dev-1")
    gamma_before = _snapshot(into / "gamma")

    _promote(project, "beta", "1.1.0")
    promoted = api.sync(project, into, subject="dev-1")
    assert _names(promoted) == {"added": [], "updated": ["beta"], "removed": []}
    assert read_skill(into / "beta").version == "1.1.0"

    rolled_back = api.rollback(project, "beta", reason="x")
    assert rolled_back.success, rolled_back.error
    back = api.sync(project, into, subject="dev-1")
    assert _names(back) == {"added": [], "updated": ["beta"], "removed": []}
    assert read_skill(into / "beta").version == "1.0.0"
    assert read_skill(into / "beta").digest == _live_digest(project, "beta")

    # alpha has no earlier version: rolled back, it goes back to staged and leaves production.
    left = api.rollback(project, "alpha", reason="x")
    assert left.success, left.error
    gone = api.sync(project, into, subject="dev-1")
    assert _names(gone) == {"added": [], "updated": [], "removed": ["alpha"]}
    assert not os.path.lexists(into / "alpha")
    assert sorted(_manifest(into)["skills"]) == ["beta", "gamma"]
    assert _snapshot(into / "gamma") == gamma_before
    # The copies swapped out wait in the retired folder, read-only, and can still be deleted.
    retired = retired_path(project)
    assert len(fs.sweep_retired(retired, grace=-1)) >= 3
    assert list(retired.iterdir()) == []


def test_a_directory_sync_did_not_install_is_left_alone(project: Project, into: Path) -> None:
    _promote(project, "alpha")
    _promote(project, "beta")
    write_skill(into, "alpha", body="# My own alpha\n")  # a developer's own copy
    mine = write_skill(into, "mine")
    (into / "notes.txt").write_text("keep me\n")
    kept = {name: _snapshot(into / name) for name in ("alpha", "mine")}

    result = api.sync(project, into, subject="dev-1")

    assert _names(result) == {"added": ["beta"], "updated": [], "removed": []}
    assert "was not installed by skillstage sync" in result.skipped["alpha"]
    assert result.foreign == ["mine"]
    assert any("alpha" in w for w in result.warnings) and any("mine" in w for w in result.warnings)
    assert {name: _snapshot(into / name) for name in ("alpha", "mine")} == kept
    assert (into / "notes.txt").read_text() == "keep me\n" and mine.is_dir()
    assert sorted(_manifest(into)["skills"]) == ["beta"]

    # Still left alone when its skill stops serving: only what sync installed is removed.
    assert api.rollback(project, "alpha", reason="x").success
    again = api.sync(project, into, subject="dev-1")
    assert not again.changed and again.foreign == ["alpha", "mine"]
    assert _snapshot(into / "alpha") == kept["alpha"]


def test_a_missing_directory_is_installed_again(project: Project, into: Path) -> None:
    _promote(project, "alpha")
    _promote(project, "beta")
    api.sync(project, into, subject="dev-1")
    beta_before = _snapshot(into / "beta")
    _delete(into / "alpha")

    result = api.sync(project, into, subject="dev-1")

    assert _names(result) == {"added": ["alpha"], "updated": [], "removed": []}
    assert read_skill(into / "alpha").digest == _live_digest(project, "alpha")
    assert _snapshot(into / "beta") == beta_before


def test_without_rename_exchange_and_without_the_archive(
    project: Project, into: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SKILLSTAGE_NO_EXCHANGE", "1")  # the two-rename fallback
    _promote(project, "alpha")
    api.sync(project, into, subject="dev-1")
    _promote(project, "alpha", "1.1.0")
    digest = _live_digest(project, "alpha")
    _delete(archive_entry(project, "alpha", "1.1.0", digest))  # from the live copy, then

    result = api.sync(project, into, subject="dev-1")

    assert _names(result) == {"added": [], "updated": ["alpha"], "removed": []}
    assert read_skill(into / "alpha").digest == digest
    assert sorted(p.name for p in into.iterdir()) == [MANIFEST_NAME, "alpha"]


def test_no_intact_copy_keeps_the_old_one_and_says_why(project: Project, into: Path) -> None:
    _promote(project, "alpha")
    api.sync(project, into, subject="dev-1")
    before = _snapshot(into / "alpha")
    _promote(project, "alpha", "1.1.0")
    digest = _live_digest(project, "alpha")
    _delete(archive_entry(project, "alpha", "1.1.0", digest))
    # Someone edits the live copy: it no longer holds the digest the store names.
    (project.stage_path("production", "alpha") / "SKILL.md").write_text("---\nname: x\n---\n")

    result = api.sync(project, into, subject="dev-1")

    assert not result.changed
    assert "no intact copy of 1.1.0" in result.skipped["alpha"]
    assert _snapshot(into / "alpha") == before
    assert _manifest(into)["skills"]["alpha"]["version"] == "1.0.0"


@pytest.mark.parametrize("what", ["file", "stage folder", "state dir", "blank subject", "stage"])
def test_bad_input_is_a_usage_error(project: Project, tmp_path: Path, what: str) -> None:
    target = tmp_path / "out"
    subject: str | None = "dev-1"
    stage = None
    if what == "file":
        target.write_text("not a directory\n")
    elif what == "stage folder":
        target = project.stage_root("production")
    elif what == "state dir":
        target = project.state_dir / "skills"
    elif what == "blank subject":
        subject = "   "
    else:
        stage = "nowhere"
    with pytest.raises(UsageError) as raised:
        api.sync(project, target, subject=subject, stage=stage)
    assert raised.value.hint
    assert not (project.state_dir / "skills").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root may write anywhere")
def test_a_directory_that_is_not_writable_is_a_usage_error(project: Project, into: Path) -> None:
    into.mkdir(parents=True)
    into.chmod(0o555)
    with pytest.raises(UsageError, match="not writable"):
        api.sync(project, into, subject="dev-1")


def test_a_manifest_that_is_not_one_is_refused(project: Project, into: Path) -> None:
    _promote(project, "alpha")
    into.mkdir(parents=True)
    (into / MANIFEST_NAME).write_text('{"format": 1, "skills": {"../x": {}}}')
    with pytest.raises(SyncError, match="not a skillstage sync manifest"):
        api.sync(project, into, subject="dev-1")
    assert sorted(p.name for p in into.iterdir()) == [MANIFEST_NAME]


def test_a_killed_sync_leaves_nothing_the_next_one_does_not_finish(
    project: Project, into: Path
) -> None:
    _promote(project, "alpha")
    into.mkdir(parents=True)
    # What a sync killed after putting alpha in place but before its last manifest write
    # leaves: the claim (no digest), the directory, and a half-built copy.
    api.sync(project, into, subject="dev-1")
    manifest = _manifest(into)
    manifest["skills"]["alpha"]["digest"] = None
    (into / MANIFEST_NAME).write_text(json.dumps(manifest))
    fs.copy_tree(project.stage_path("production", "alpha"), fs.sibling(into / "alpha", "syncing"))

    result = api.sync(project, into, subject="dev-1")

    assert _names(result) == {"added": [], "updated": ["alpha"], "removed": []}
    assert sorted(p.name for p in into.iterdir()) == [MANIFEST_NAME, "alpha"]
    assert _manifest(into)["skills"]["alpha"]["digest"] == _live_digest(project, "alpha")


# -- keeping it in step ------------------------------------------------------------------------


def test_watch_follows_a_promotion_and_stops(project: Project, into: Path) -> None:
    _promote(project, "alpha")
    results: queue.Queue[SyncResult] = queue.Queue()
    errors: list[Exception] = []
    stop = threading.Event()
    thread = threading.Thread(
        target=watch,
        args=(project, into),
        kwargs={
            "subject": "dev-1",
            "stop": stop,
            "on_change": results.put,
            "on_error": errors.append,
            "interval": 0.05,
        },
    )
    thread.start()
    try:
        first = results.get(timeout=30)
        assert _names(first)["added"] == ["alpha"]
        _promote(project, "beta")
        promoted_at = time.monotonic()
        second = results.get(timeout=10)
        assert time.monotonic() - promoted_at < 1.0
        assert _names(second) == {"added": ["beta"], "updated": [], "removed": []}
        assert read_skill(into / "beta").digest == _live_digest(project, "beta")
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not thread.is_alive() and errors == []
    assert results.empty()  # nothing changed between: nothing reported


# -- the command -------------------------------------------------------------------------------


def _environment(project: Project) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    environment["SKILLSTAGE_DATABASE_URL"] = project.database_url
    return environment


def _skillstage(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=project.root,
        env=_environment(project),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_command_prints_json_and_a_summary(project: Project, into: Path) -> None:
    _promote(project, "alpha")

    done = _skillstage(project, "sync", "--subject", "ci-7", "--into", str(into), "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert [s["name"] for s in report["added"]] == ["alpha"]
    assert report["added"][0]["digest"] == _live_digest(project, "alpha")
    assert (report["stage"], report["subject"], report["unchanged"]) == ("production", "ci-7", 0)

    again = _skillstage(project, "sync", "--subject", "ci-7", "--into", str(into))
    assert again.returncode == 0, again.stderr
    assert "0 added, 0 updated, 0 removed, 1 unchanged" in again.stdout


def test_the_command_refuses_bad_input_without_a_traceback(
    project: Project, tmp_path: Path
) -> None:
    (tmp_path / "a-file").write_text("x\n")
    as_file = _skillstage(project, "sync", "--subject", "s", "--into", str(tmp_path / "a-file"))
    unknown = _skillstage(
        project, "sync", "--subject", "s", "--into", str(tmp_path / "o"), "--stage", "nowhere"
    )
    for done in (as_file, unknown):
        assert done.returncode == 2, done.stderr
        assert "error:" in done.stderr.lower() and "Traceback" not in done.stderr
    assert "unknown stage 'nowhere'" in unknown.stderr


def test_watch_command_follows_a_promotion_and_stops_on_sigterm(
    project: Project, into: Path
) -> None:
    _promote(project, "alpha")
    command = ["sync", "--watch", "--subject", "dev-1", "--into", str(into)]
    process = subprocess.Popen(
        [sys.executable, "-m", "skillstage", *command],
        cwd=project.root,
        env=_environment(project),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: queue.Queue[str] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            lines.put(line)

    threading.Thread(target=read, daemon=True).start()
    try:
        assert "1 added" in lines.get(timeout=60)
        assert lines.get(timeout=10).strip().startswith("added alpha 1.0.0")
        _promote(project, "beta")
        promoted_at = time.monotonic()
        changed = lines.get(timeout=10)
        elapsed = time.monotonic() - promoted_at
        assert changed.strip() == "added beta 1.0.0 (stable)"
        assert elapsed < 1.5, f"the watcher took {elapsed:.2f} s to follow the promotion"
        assert read_skill(into / "beta").digest == _live_digest(project, "beta")

        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=10) == 0
        assert process.stderr is not None and "Traceback" not in process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        for stream in (process.stdout, process.stderr):
            if stream is not None:
                stream.close()
