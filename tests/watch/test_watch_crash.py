"""The watcher's rollback under real concurrency and real crashes: `skillstage watch --once`
processes racing each other, and one SIGKILLed at random points of its pass.

Two watchers that see one failing version at once make one rollback: one event, one hold, the
version before live on disk and in the store; the process that lost says it did not act. A
watcher killed anywhere in a rollback (before, during or after the move) leaves what the next
pass finishes: one rollback event, the version before live, no journal entry open, the failed
version in the archive, one hold, no scratch copy beside the live directory, and a failure report
for the rollback.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.lifecycle.archive import archive_path
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from skillstage.store import Event, Store
from skillstage.store import controls as store_controls
from skillstage.watch.report import failure_events_without_report, report_paths
from tests.skilltree import write_skill

NAME = "auth-v2"
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
ROUNDS = 6
TRIALS = 30  # kills at delays spread over a whole watcher's life
MOVE_TRIALS = 10  # and at delays spread over its move
# A skill with 25 reference files of 200 kB: copying the version before out of the archive (and
# checking digests) makes the move ten-odd ms rather than 3, so kills at random delays land in it.
REFERENCES: dict[str, str | bytes] = {
    f"references/part-{i:02}.md": f"# Part {i}\n\n" + "Reference text. " * 12_500 + "\n"
    for i in range(25)
}
# The promoter's journal steps (SKILLSTAGE_FAULT) and where a kill there lands.
ROLLBACK_POINTS = {
    "rollback:journaled": "during, not swapped",
    "rollback:archived": "during, not swapped",
    "rollback:copied": "during, not swapped",
    "rollback:swapped": "during, swapped",
    "rollback:committed": "after",
}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


def _promote(
    project: Project, version: str, files: dict[str, str | bytes] | None = None
) -> SkillVersion:
    write_skill(project.root / STAGING, NAME, extra={"version": version}, files=files)
    (done,) = api.promote(project, [NAME], to="production", actor="tester", overwrite=True)
    assert done.success, done.error
    return read_skill(project.root / PRODUCTION / NAME)


def _trip(project: Project, bad: SkillVersion) -> None:
    """Ten executions of `bad` at fidelity 0.5 (the trigger is a mean below 0.85 over ten),
    ingested, so every watcher started next sees the failure at once."""
    for _ in range(10):
        api.record_execution(
            project,
            NAME,
            version=bad.version,
            digest=bad.digest,
            pattern_fidelity=0.5,
            outcome_quality=0.9,
            execution_time_ms=10.0,
        )
    api.ingest_metrics(project)


# `python -m skillstage ARGS...` that first imports what a watch pass needs and then waits for a
# wall-clock moment (argv[1]): started back to back, two interpreters come up tens of
# milliseconds apart (their start-ups compete for the CPUs), about as long as a pass takes to
# reach its rollback, so the second would mostly find the work done; from one start line both
# passes run together.
_STARTING_AT = """
import runpy, sys, time
import skillstage.cli, skillstage.lifecycle.promote, skillstage.watch.watcher
time.sleep(max(0.0, float(sys.argv[1]) - time.time()))
sys.argv = ["skillstage", *sys.argv[2:]]
runpy.run_module("skillstage", run_name="__main__", alter_sys=True)
"""


def _watch(
    project: Project, *, start_at: float | None = None, fault: str | None = None
) -> subprocess.Popen[str]:
    """A real `skillstage watch --once --json` in the project, on the project's store; with
    `start_at` (a `time.time()`), its pass starts then; with `fault`, it dies at that fault point
    (SKILLSTAGE_FAULT, src/skillstage/lifecycle/fs.py)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    env["SKILLSTAGE_DATABASE_URL"] = project.database_url
    if fault is not None:
        env["SKILLSTAGE_FAULT"] = fault
    args = ["watch", "--once", "--json"]
    command = (
        [sys.executable, "-m", "skillstage", *args]
        if start_at is None
        else [sys.executable, "-c", _STARTING_AT, repr(start_at), *args]
    )
    return subprocess.Popen(
        command,
        cwd=project.root,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _finished(process: subprocess.Popen[str]) -> tuple[int, dict[str, Any]]:
    """(exit code, the pass as JSON) of a watcher that ran to its end."""
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode in (0, 1), stdout + stderr
    assert "Traceback" not in stderr, stderr
    passed: dict[str, Any] = json.loads(stdout)
    assert passed["errors"] == [], passed["errors"]
    return process.returncode, passed


def _rollbacks(project: Project) -> list[Event]:
    return [e for e in api.history(project, NAME, limit=1000) if e.kind == "rollback"]


def _holds(store: Store) -> list[store_controls.Control]:
    with store.reading() as tx:
        return store_controls.controls(tx, kind="hold")


def _live_in_store(store: Store) -> str:
    (assignment,) = store.current_assignments(stage="production", name=NAME)
    return assignment.digest


# -- two watchers at once ------------------------------------------------------------------------


def test_two_watchers_at_once_make_one_rollback(project: Project) -> None:
    old = _promote(project, "1.0.0")
    losers: Counter[str] = Counter()  # what the watcher that did not act had seen
    for round_ in range(1, ROUNDS + 1):
        if round_ > 1:  # re-arm: a person clears the hold and promotes a new (bad) version
            cleared = api.switch(
                project, NAME, kind="hold", on=False, actor="lead", reason=f"round {round_}"
            )
            assert cleared.changed
        bad = _promote(project, f"1.{round_}.0")
        _trip(project, bad)
        start_at = time.time() + 0.8  # both interpreters are up and waiting by then
        watchers = [_watch(project, start_at=start_at) for _ in range(2)]
        outcomes = [_finished(w) for w in watchers]

        rollbacks = _rollbacks(project)
        assert len(rollbacks) == round_  # one more, not two
        assert rollbacks[0].version == old.version
        assert (rollbacks[0].details or {}).get("failed_version") == bad.version
        assert read_skill(project.root / PRODUCTION / NAME).digest == old.digest
        with Store.open(project.database_url) as store:
            assert _live_in_store(store) == old.digest
            (hold,) = _holds(store)
            assert (hold.stage, hold.digest) == ("production", bad.digest)
            assert hold.details is not None and hold.details["event_id"] == rollbacks[0].id
            assert store.open_journals() == []
            assert failure_events_without_report(store) == []
        assert all(path.is_file() for path in report_paths(project, NAME, rollbacks[0].id))

        acted = [(code, p) for code, p in outcomes if p["acted"]]
        stood_down = [(code, p) for code, p in outcomes if not p["acted"]]
        assert len(acted) == 1 and len(stood_down) == 1, outcomes
        code, winner = acted[0]
        (action,) = [a for a in winner["actions"] if a["acted"]]
        assert code == 1
        assert (action["kind"], action["version"]) == ("rollback", bad.version)
        assert (action["restored"], action["event_id"]) == (old.version, rollbacks[0].id)
        code, loser = stood_down[0]
        assert code == 0
        assert not [a for a in loser["actions"] if a["acted"]]
        # The loser saw the failing version live too, and found it rolled back (or held) when
        # it went to roll it back; or it looked after the rollback and saw the version before.
        if not loser["actions"]:
            losers["looked after the rollback"] += 1
            continue
        (seen,) = loser["actions"]
        assert (seen["kind"], seen["version"]) in (("rollback", bad.version), ("held", bad.version))
        if seen["kind"] == "held":
            losers["saw it live, then held"] += 1
        else:
            assert seen["detail"] == "another process rolled it back first"
            losers["saw it live, found it rolled back"] += 1
    print(f"\n{project.database_url.split(':')[0]}, {ROUNDS} rounds: {dict(losers)}")


# -- a watcher killed at random points of its rollback -------------------------------------------


def _remove_tree(path: Path) -> None:
    # Archive entries are read-only directories: make them writable so their files can go.
    for directory, _, _ in os.walk(path):
        os.chmod(directory, 0o700)
    shutil.rmtree(path)


def _scratch_left(project: Project) -> list[str]:
    """Scratch copies beside the live directory, or in the skill's archive folder."""
    found = []
    for folder in (project.root / PRODUCTION, project.state_dir / "archive" / NAME):
        for entry in folder.iterdir():
            if entry.name.startswith((".skillstage-", f".{NAME}")) or "incoming" in entry.name:
                found.append(str(entry))
    return found


def _moment(project: Project, old: SkillVersion) -> str:
    """Where in the rollback the kill landed, from what it left: before the move (nothing
    recorded), during it (the journal entry open; the version before already swapped in or not
    yet), or after it (the rollback committed)."""
    with Store.open(project.database_url) as store:
        if [e for e in store.events(NAME, limit=1000) if e.kind == "rollback"]:
            return "after"
        if not store.open_journals():
            return "before"
    swapped = read_skill(project.root / PRODUCTION / NAME).digest == old.digest
    return "during, swapped" if swapped else "during, not swapped"


def _assert_rolled_back_once(project: Project, old: SkillVersion, new: SkillVersion) -> None:
    (rollback,) = _rollbacks(project)
    assert rollback.version == old.version
    assert (rollback.details or {}).get("failed_version") == new.version
    assert read_skill(project.root / PRODUCTION / NAME).digest == old.digest
    archived = archive_path(project, NAME, new.version, new.digest)
    assert read_skill(archived).digest == new.digest
    assert _scratch_left(project) == []
    with Store.open(project.database_url) as store:
        assert store.open_journals() == []
        assert _live_in_store(store) == old.digest
        (hold,) = _holds(store)
        assert (hold.stage, hold.digest) == ("production", new.digest)
        assert hold.details is not None and hold.details["event_id"] == rollback.id
        assert failure_events_without_report(store) == []
    assert all(path.is_file() for path in report_paths(project, NAME, rollback.id))


def _restore(project: Project, template: Path) -> None:
    """Put the project back as the template has it, at the same absolute path."""
    _remove_tree(project.root)
    shutil.copytree(template, project.root, symlinks=True)


def _move_begun(project: Project, watcher: subprocess.Popen[str]) -> None:
    """Wait for the watcher's move to begin (its first scratch copy, made with its journal entry
    open) or for the watcher to end."""
    while watcher.poll() is None and not _scratch_left(project):
        pass  # no sleep: the move is over in milliseconds


def _move_length(project: Project) -> float:
    """How long the rollback's move lasted, by the watcher's own clock: from the rollback's time
    (taken as its journal entry opens) to its "switched" step (in the commit)."""
    (rollback,) = _rollbacks(project)
    with Store.open(project.database_url) as store, store.reading() as tx:
        (switched,) = [
            s for s in store_controls.steps(tx, [rollback.id])[rollback.id] if s.step == "switched"
        ]
    return (switched.at - rollback.at).total_seconds()


def _killed(
    project: Project,
    template: Path,
    old: SkillVersion,
    *,
    after: float | None = None,
    into_move: float | None = None,
    fault: str | None = None,
) -> str:
    """From the template's state, a watcher killed `after` seconds into its life, `into_move`
    seconds after its move's first scratch copy appeared, or at `fault`; then the next pass run
    to its end. Where the kill landed ("finished": the watcher was done before it)."""
    _restore(project, template)
    watcher = _watch(project, fault=fault)
    if after is not None:
        time.sleep(after)
    if into_move is not None:
        _move_begun(project, watcher)
        time.sleep(into_move)
    if fault is None:
        watcher.send_signal(signal.SIGKILL)
    watcher.communicate(timeout=120)
    killed = watcher.returncode == -signal.SIGKILL
    assert killed or watcher.returncode == 1  # a pass the kill came too late for acted
    moment = _moment(project, old)
    code, passed = _finished(_watch(project))
    if moment in ("before", "during, not swapped"):
        # Nothing had moved, or recovery undid it: the next pass makes the rollback.
        assert (code, passed["acted"]) == (1, True), passed
    else:  # recovery finished it, or it was done: nothing more to roll back
        assert (code, passed["acted"]) == (0, False), passed
        finished = [line for line in passed["recovered"] if "removed leftover" not in line]
        if moment == "during, swapped":
            assert finished == [f"{NAME}: rollback to {old.version} completed"], passed
        else:  # at most the copy swapped out, which the kill kept from being retired
            assert finished == [], passed
    return moment if killed else "finished"


def test_a_watcher_killed_anywhere_in_a_rollback_is_finished_by_the_next_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = tmp_path / "p"
    template = tmp_path / "template"
    # The store inside the project, so one copy of the tree is one copy of the whole state
    # (the store holds absolute paths: every trial puts the tree back at the same place).
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", f"sqlite:///{root / '.skillstage' / 'state.db'}")
    api.init(root)
    project = load_config_file(root / "skillstage.toml")
    old = _promote(project, "1.0.0", REFERENCES)
    new = _promote(project, "1.1.0", REFERENCES)
    _trip(project, new)
    shutil.copytree(root, template, symlinks=True)

    # Uninterrupted passes: what every kill must come back to, how long a watcher lives, and how
    # long its move lasts; the median of three, as the first runs on cold caches.
    lives, moves = [], []
    for _ in range(3):
        _restore(project, template)
        started = time.monotonic()
        code, passed = _finished(_watch(project))
        lives.append(time.monotonic() - started)
        assert code == 1 and passed["acted"]
        _assert_rolled_back_once(project, old, new)
        moves.append(_move_length(project))
    duration, move = statistics.median(lives), statistics.median(moves)

    rng = random.Random(20260311)
    uniform: Counter[str] = Counter()
    for _ in range(TRIALS):
        uniform[_killed(project, template, old, after=rng.uniform(0, duration))] += 1
        _assert_rolled_back_once(project, old, new)
    # Start-up is most of a watcher's life, and varies by more than the move lasts: these kills
    # wait for the move to begin, then for a random part of it.
    in_move: Counter[str] = Counter()
    for _ in range(MOVE_TRIALS):
        in_move[_killed(project, template, old, into_move=rng.uniform(0, move))] += 1
        _assert_rolled_back_once(project, old, new)
    # And at each step of the promoter's journal.
    for point, moment in ROLLBACK_POINTS.items():
        assert _killed(project, template, old, fault=point) == moment, point
        _assert_rolled_back_once(project, old, new)
    print(
        f"\n{TRIALS} kills over a {duration:.3f} s watcher landed {dict(uniform)};"
        f" {MOVE_TRIALS} in its {move:.3f} s move landed {dict(in_move)}"
    )
