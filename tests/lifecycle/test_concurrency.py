"""Concurrency: 8 `skillstage` processes promoting and rolling back the same skills at once.

Every process must either succeed (exit 0) or be refused with a message that says why: the lock
error ("being promoted or rolled back by another process"), or a refusal that follows from what a
concurrent process did first (listed in `REFUSALS`). No traceback, no exit 3. Afterwards the event
log has no gap, no duplicate and no lost change (replaying it gives the live version), it holds one
promote or rollback event per process that reported success, no journal entry is open, the store
agrees with the disk, and no scratch directory is left. On SQLite and on PostgreSQL.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import pytest

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle.locks import skill_lock
from skillstage.skill.read import read_skill
from skillstage.store import Event, Store
from tests.lifecycle.test_crash import _assert_whole
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
SKILLS = ("alpha", "beta", "gamma")
ARCHIVED = ("1.0.0", "1.1.0", "1.2.0")  # promoted one after the other before the races start
ROUNDS = 3  # each round stages a new version of every skill, then starts 8 processes at once
PROCESSES = 8
LOCK_TIMEOUT = 30  # seconds: long enough that no process of a round gives up waiting
PROCESS_TIMEOUT = 45  # a batch still running after this is a hang: killed, and the test fails
TEST_TIME_LIMIT = 75  # seconds per test (SIGALRM): a deadlock fails the test instead of hanging

LOCK_ERROR = "being promoted or rolled back by another process"

# Refusals that are legitimate in a race, each a (kind, exit code, stream, pattern) and why.
REFUSALS: dict[str, tuple[str, int, str, str]] = {
    # This promoter found the staging copy, then another promoter of the skill moved it to
    # production while this one waited for the lock: the source is gone, nothing is moved.
    "source moved": (
        "promote",
        1,
        "stdout",
        r"Promotion failed: \w+ was moved (or changed in|out of) \w+ by another process",
    ),
    # The staging copy was already gone when this promoter looked for it.
    "source gone": ("promote", 2, "stderr", r"no skill named '\w+' in a stage it can be promoted"),
    # Another process already made the requested version live.
    "already live": ("rollback", 1, "stderr", r"error: \w+ [\d.]+ is the version live now"),
    # The version staged this round has not been promoted (so archived) yet.
    "not archived yet": ("rollback", 1, "stderr", r"error: \w+ [\d.]+ is not in the archive"),
    # Only with a short --lock-timeout (not in the races: LOCK_TIMEOUT is long).
    "locked": ("any", 4, "stderr", LOCK_ERROR),
}


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """Fail a test that runs longer than TEST_TIME_LIMIT (a deadlock must not hang the suite)."""

    def expired(_signum: int, _frame: FrameType | None) -> None:
        pytest.fail(f"took longer than {TEST_TIME_LIMIT} s", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- running processes --------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    kind: str  # promote or rollback
    skill: str
    to_version: str | None = None  # rollback --to

    def argv(self, lock_timeout: float) -> list[str]:
        wait = ["--lock-timeout", f"{lock_timeout:g}", "--yes"]
        if self.kind == "promote":
            return ["promote", self.skill, "--overwrite", *wait]
        assert self.to_version is not None
        return ["rollback", self.skill, "--to", self.to_version, "--reason", "r", *wait]


@dataclass(frozen=True)
class Outcome:
    operation: Operation
    returncode: int
    stdout: str
    stderr: str

    def describe(self) -> str:
        return (
            f"{' '.join(self.operation.argv(0))} exited {self.returncode}\n"
            f"stdout:\n{self.stdout}\nstderr:\n{self.stderr}"
        )


def _environment() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SKILLSTAGE_FAULT", "COLUMNS")}
    return {**env, "USER": "racer", "NO_COLOR": "1"}


def _run_at_once(
    project: Project, operations: list[Operation], *, lock_timeout: float = LOCK_TIMEOUT
) -> list[Outcome]:
    """Start every operation as its own `skillstage` process, all at once; wait for all."""
    env = _environment()
    started: list[subprocess.Popen[str]] = []
    try:
        for operation in operations:
            started.append(
                subprocess.Popen(
                    [sys.executable, "-m", "skillstage", *operation.argv(lock_timeout)],
                    cwd=project.root,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.PIPE,
                    text=True,
                )
            )
        deadline = time.monotonic() + PROCESS_TIMEOUT
        outcomes = []
        for operation, process in zip(operations, started, strict=True):
            try:
                stdout, stderr = process.communicate(timeout=max(deadline - time.monotonic(), 1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"{operation} still running after {PROCESS_TIMEOUT} s (a deadlock?)")
            outcomes.append(Outcome(operation, process.returncode, stdout, stderr))
        return outcomes
    finally:
        for process in started:
            if process.poll() is None:
                process.kill()
                process.wait()


def _classify(outcome: Outcome) -> str:
    """'ok', or the name of the legitimate refusal it is; fails the test on anything else."""
    text = outcome.stdout + outcome.stderr
    assert "Traceback" not in text and "unexpected error" not in text, outcome.describe()
    if outcome.returncode == 0:
        return "ok"
    for name, (kind, code, stream, pattern) in REFUSALS.items():
        output = outcome.stdout if stream == "stdout" else outcome.stderr
        if (
            kind in ("any", outcome.operation.kind)
            and outcome.returncode == code
            and re.search(pattern, output)
        ):
            return name
    pytest.fail("neither a success nor a legitimate refusal:\n" + outcome.describe())


# -- the project --------------------------------------------------------------------------------


def _stage(project: Project, name: str, version: str) -> None:
    write_skill(
        project.root / STAGING,
        name,
        extra={"version": version},
        files={"references/notes.md": f"{name} {version}\n"},
    )


def _set_up(project: Project) -> None:
    """Every skill promoted through ARCHIVED, in order: those versions are in the archive."""
    for name in SKILLS:
        for version in ARCHIVED:
            _stage(project, name, version)
            (result,) = api.promote(project, [name], actor="setup", overwrite=True)
            assert result.success, result.error


def _events(project: Project) -> list[Event]:
    with Store.open(project.database_url) as store:
        return sorted(store.events(limit=100_000), key=lambda e: e.id)


def _changes(events: list[Event]) -> Counter[tuple[str, str]]:
    return Counter((e.name, e.kind) for e in events if e.success and e.kind != "register")


def _assert_log_consistent(project: Project, events: list[Event]) -> None:
    """No gap, no duplicate, per-skill order, and no lost change: replaying each skill's events
    in id order gives the version live in production, and every rollback took out exactly the
    version that the event before it had made live."""
    ids = [e.id for e in events]
    assert len(ids) == len(set(ids)), "duplicate event ids"
    assert ids == list(range(ids[0], ids[0] + len(ids))), f"gap in the event ids: {ids}"
    for name in sorted({e.name for e in events}):
        mine = [e for e in events if e.name == name]
        times = [e.at for e in mine]
        assert times == sorted(times), f"{name}: event ids and times disagree on the order"
        live: str | None = None
        for event in mine:
            if not event.success or event.to_stage != "production":
                continue
            if event.kind == "rollback":
                assert event.details is not None
                assert event.details["failed_version"] == live, (
                    f"{name}: event {event.id} rolled back {event.details['failed_version']}, "
                    f"but the log says {live} was live: a change is missing or doubled"
                )
            live = event.version
        assert read_skill(project.root / PRODUCTION / name).version == live, name


def _scratch_left(project: Project) -> list[str]:
    """Scratch paths anywhere under the stage folders or the archive (before any recovery)."""
    roots = [project.root / PRODUCTION, project.state_dir / "archive"]
    return [str(path) for root in roots for path in root.rglob(".skillstage-*")]


def _round(index: int) -> list[Operation]:
    """8 operations over the three skills: every skill has a promoter (of the version staged
    this round), the first has two; rollbacks go to archived versions and, once per round, to the
    version being promoted right then."""
    a, b, c = SKILLS[index % 3], SKILLS[(index + 1) % 3], SKILLS[(index + 2) % 3]
    staged = _staged_version(index)
    return [
        Operation("promote", a),
        Operation("rollback", a, ARCHIVED[0]),
        Operation("promote", b),
        Operation("rollback", b, ARCHIVED[1]),
        Operation("promote", a),
        Operation("rollback", c, staged),
        Operation("promote", c),
        Operation("rollback", b, ARCHIVED[2]),
    ]


def _staged_version(index: int) -> str:
    return f"1.{len(ARCHIVED) + index}.0"


# -- tests --------------------------------------------------------------------------------------


def test_eight_processes_promote_and_roll_back_the_same_skills(project: Project) -> None:
    _set_up(project)
    seen: Counter[str] = Counter()
    for index in range(ROUNDS):
        for name in SKILLS:
            _stage(project, name, _staged_version(index))
        before = _events(project)
        operations = _round(index)
        assert len(operations) == PROCESSES
        outcomes = _run_at_once(project, operations)
        kinds = [_classify(outcome) for outcome in outcomes]
        seen.update(kinds)
        assert "locked" not in kinds, [o.describe() for o in outcomes if _classify(o) == "locked"]

        # Nothing half done, before anything (such as `list`) gets a chance to recover it.
        with Store.open(project.database_url) as store:
            assert store.open_journals() == []
        assert _scratch_left(project) == []

        events = _events(project)
        new = events[len(before) :]
        assert [e.id for e in events[: len(before)]] == [e.id for e in before]
        succeeded = Counter(
            (o.operation.skill, o.operation.kind)
            for o, kind in zip(outcomes, kinds, strict=True)
            if kind == "ok"
        )
        assert _changes(new) == succeeded, "\n\n".join(o.describe() for o in outcomes)
        assert not [e for e in new if not e.success], "a refused attempt left an event"
        # The staged version of every skill went live exactly once: its first promoter won.
        for name in SKILLS:
            assert succeeded[(name, "promote")] == 1, name
            assert not (project.root / STAGING / name).exists()
        _assert_log_consistent(project, events)
        _assert_whole(project)
    # The races happened: some operations lost them and said why.
    assert seen["ok"] >= ROUNDS * len(SKILLS), seen
    assert seen["source moved"] + seen["source gone"] == ROUNDS, seen


def test_a_held_lock_fails_fast_with_the_lock_error(project: Project) -> None:
    for version in ARCHIVED[:2]:
        _stage(project, "alpha", version)
        (result,) = api.promote(project, ["alpha"], actor="setup", overwrite=True)
        assert result.success, result.error
    _stage(project, "alpha", ARCHIVED[2])
    _stage(project, "beta", "1.0.0")
    before = _events(project)
    blocked = [Operation("promote", "alpha"), Operation("rollback", "alpha", ARCHIVED[0])]
    with Store.open(project.database_url) as store, skill_lock(project, store, "alpha"):
        started = time.monotonic()
        outcomes = _run_at_once(project, [*blocked, Operation("promote", "beta")], lock_timeout=1)
        elapsed = time.monotonic() - started
    *refused, other = outcomes
    for outcome in refused:
        assert _classify(outcome) == "locked", outcome.describe()
        assert "alpha is being promoted or rolled back by another process; gave up after 1 s" in (
            outcome.stderr
        )
        assert "hint: wait for it to finish and try again" in outcome.stderr
    assert elapsed >= 1
    # The lock is per skill: beta was promoted while alpha's lock was held.
    assert _classify(other) == "ok", other.describe()
    # The refused operations changed nothing.
    after = _events(project)
    assert _changes(after[len(before) :]) == Counter({("beta", "promote"): 1})
    assert read_skill(project.root / STAGING / "alpha").version == ARCHIVED[2]
    assert read_skill(project.root / PRODUCTION / "alpha").version == ARCHIVED[1]
    _assert_whole(project)
    # Once the lock is free, both go through.
    (promoted,) = _run_at_once(project, [blocked[0]], lock_timeout=5)
    assert _classify(promoted) == "ok", promoted.describe()
    (rolled,) = _run_at_once(project, [blocked[1]], lock_timeout=5)
    assert _classify(rolled) == "ok", rolled.describe()
    assert read_skill(project.root / PRODUCTION / "alpha").version == ARCHIVED[0]
    _assert_log_consistent(project, _events(project))
    _assert_whole(project)


def test_a_lock_error_on_one_skill_still_reports_the_others(project: Project) -> None:
    _stage(project, "alpha", "1.0.0")
    _stage(project, "beta", "1.0.0")
    argv = ["promote", "alpha", "beta", "--yes", "--lock-timeout", "1"]
    with Store.open(project.database_url) as store, skill_lock(project, store, "beta"):
        done = subprocess.run(
            [sys.executable, "-m", "skillstage", *argv],
            cwd=project.root,
            env=_environment(),
            capture_output=True,
            text=True,
            timeout=PROCESS_TIMEOUT,
        )
    assert read_skill(project.root / PRODUCTION / "alpha").version == "1.0.0"  # it did move
    assert done.returncode == 1
    assert LOCK_ERROR in done.stdout + done.stderr
    assert "alpha 1.0.0" in done.stdout, done.stdout  # the promotion that happened is reported
