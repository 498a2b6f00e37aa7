"""A move the system stops (a folder that cannot be written, a process killed and the command run
again): a clear error and nothing half done, or the move done and said so; never done twice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import load_config_file
from skillstage.store import Store
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
LIVE = Path(".claude/skills")


def _cli(root: Path, *args: str, fault: str | None = None, limited: bool = False):  # type: ignore[no-untyped-def]
    """`skillstage ARGS`; `limited`: without root's power over file permissions."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    if fault:
        env["SKILLSTAGE_FAULT"] = fault
    prefix: list[str] = []
    if limited and os.geteuid() == 0:
        if shutil.which("setpriv") is None:
            pytest.skip("running as root without setpriv: permissions cannot be made to hold")
        prefix = [
            "setpriv",
            "--bounding-set",
            "-dac_override,-dac_read_search",
            "--inh-caps",
            "-all",
        ]
    return subprocess.run(
        [*prefix, sys.executable, "-m", "skillstage", *args],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def two_versions(tmp_path: Path) -> Path:
    """alpha 1.0.0 promoted, then 1.1.0 promoted over it: a rollback has somewhere to go."""
    api.init(tmp_path)
    for version in ("1.0.0", "1.1.0"):
        write_skill(tmp_path / STAGING, "alpha", extra={"version": version})
        done = _cli(tmp_path, "promote", "alpha", "--yes", "--overwrite")
        assert done.returncode == 0, done.stderr
    return tmp_path


def _live_version(root: Path) -> str:
    return (root / LIVE / "alpha" / "SKILL.md").read_text().split("version: ")[1].split()[0]


def _rollbacks(root: Path) -> list[dict[str, object]]:
    events = json.loads(_cli(root, "history", "alpha", "--json").stdout)
    return [e for e in events if e["kind"] == "rollback"]


def _open_journals(root: Path) -> int:
    with Store.open(load_config_file(root / "skillstage.toml").database_url) as store:
        return len(store.open_journals())


def test_a_rollback_run_again_after_it_was_killed_does_not_go_back_twice(
    two_versions: Path,
) -> None:
    root = two_versions
    killed = _cli(root, "rollback", "alpha", "--reason", "bad", "--yes", fault="rollback:swapped")
    assert killed.returncode == -9
    again = _cli(root, "rollback", "alpha", "--reason", "bad", "--yes", "--json")
    assert again.returncode == 0, again.stderr
    assert "it is now completed, and nothing more was rolled back" in again.stderr
    assert _live_version(root) == "1.0.0"  # not demoted out of production
    assert len(_rollbacks(root)) == 1


def test_a_rollback_whose_archive_note_cannot_be_written_is_done_and_says_so(
    two_versions: Path,
) -> None:
    root = two_versions
    archive = root / ".skillstage" / "archive" / "alpha"
    archive.chmod(0o555)
    try:
        done = _cli(root, "rollback", "alpha", "--reason", "bad", "--yes", "--json", limited=True)
    finally:
        archive.chmod(0o755)
    assert done.returncode == 0, done.stderr
    (warning,) = json.loads(done.stdout)["warnings"]
    assert warning.startswith("done, but tidying up after it failed: Permission denied")
    assert _live_version(root) == "1.0.0"
    assert len(_rollbacks(root)) == 1


def test_a_stage_folder_that_cannot_be_written_stops_the_promotion_before_it_starts(
    two_versions: Path,
) -> None:
    root = two_versions
    write_skill(root / STAGING, "alpha", extra={"version": "1.2.0"})
    (root / STAGING).chmod(0o555)
    try:
        refused = _cli(root, "promote", "alpha", "--yes", "--overwrite", limited=True)
    finally:
        (root / STAGING).chmod(0o755)
    assert refused.returncode == 1
    assert "cannot be written to: nothing was moved" in refused.stderr
    assert _live_version(root) == "1.1.0"  # production untouched
    assert _open_journals(root) == 0


def test_a_promotion_stopped_by_the_system_is_undone_and_said_plainly(tmp_path: Path) -> None:
    api.init(tmp_path)
    write_skill(tmp_path / STAGING, "beta")
    archive = tmp_path / ".skillstage" / "archive"
    archive.mkdir(parents=True, exist_ok=True)
    archive.chmod(0o555)  # the new version cannot be archived
    try:
        stopped = _cli(tmp_path, "promote", "beta", "--yes", limited=True)
    finally:
        archive.chmod(0o755)
    assert stopped.returncode == 1, stopped.stderr
    assert "the promotion of beta stopped: Permission denied" in stopped.stderr
    assert "unexpected error" not in stopped.stderr
    assert (tmp_path / STAGING / "beta").is_dir() and not (tmp_path / LIVE / "beta").exists()
    assert _open_journals(tmp_path) == 0
    assert _cli(tmp_path, "promote", "beta", "--yes").returncode == 0  # and it goes once fixed


def test_doctor_leaves_a_half_done_move_alone_until_it_can_be_settled(two_versions: Path) -> None:
    root = two_versions
    write_skill(root / STAGING, "alpha", extra={"version": "1.2.0"})
    killed = _cli(root, "promote", "alpha", "--yes", "--overwrite", fault="promote:swapped")
    assert killed.returncode == -9
    (root / STAGING).chmod(0o555)  # the source cannot leave: recovery cannot finish the move
    try:
        stuck = _cli(root, "doctor", "--repair", "--json", limited=True)
    finally:
        (root / STAGING).chmod(0o755)
    assert stuck.returncode == 1, stuck.stderr
    findings = json.loads(stuck.stdout)["findings"]
    assert not any(f["repaired"] for f in findings if f["action"].startswith("repair failed"))
    assert any(f["action"].startswith("left alone: alpha has an unfinished move") for f in findings)
    assert _live_version(root) == "1.2.0"  # not "restored" as if edited in place
    settled = _cli(root, "doctor", "--repair")
    assert settled.returncode == 0, settled.stdout + settled.stderr
    assert _live_version(root) == "1.2.0"
    events = json.loads(_cli(root, "history", "alpha", "--json").stdout)
    assert (events[0]["kind"], events[0]["version"]) == ("promote", "1.2.0")
    assert not any(e["kind"] == "repair" for e in events)


@pytest.mark.parametrize(
    ("step", "outcome", "live"),
    [
        ("promote:copied", "beta: unfinished promote undone", False),
        ("promote:swapped", "beta: promotion of 1.0.0 completed", True),
    ],
)
def test_a_promotion_interrupted_by_ctrl_c_is_settled_and_said_at_once(
    tmp_path: Path, step: str, outcome: str, live: bool
) -> None:
    api.init(tmp_path)
    write_skill(tmp_path / STAGING, "beta")
    interrupted = _cli(tmp_path, "promote", "beta", "--yes", fault=f"{step}+sigint")
    assert interrupted.returncode == 130, interrupted.stderr
    assert f"the promotion of beta stopped: interrupted; {outcome}" in interrupted.stderr
    assert (tmp_path / LIVE / "beta").is_dir() is live
    assert (tmp_path / STAGING / "beta").is_dir() is not live
    assert _open_journals(tmp_path) == 0
