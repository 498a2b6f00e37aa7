"""The loader's circuit breaker (seed 002 §3.3), on real projects and real stores (SQLite and
PostgreSQL): failures in a row open it and the previous good version serves at once; after the
reset timeout one trial goes through, and its record closes the breaker or opens it again; a
rollout's candidate falls back to the stable arm; events in the store, `stats()`, tags, the
catalog, threads and a forked child."""

from __future__ import annotations

import json
import logging
import os
import re
import select
import signal
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.metrics.record import inbox_file
from skillstage.runtime import Loader, Resolution
from skillstage.runtime.routing import archive_entry
from skillstage.skill.read import read_skill
from skillstage.store import Store
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
RESET = 0.5  # seconds: the breakers' reset timeout in these tests


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@pytest.fixture
def first(project: Project) -> str:
    """auth-v2 1.0.0 promoted to production; its digest."""
    return promote_version(project, "1.0.0")


@pytest.fixture
def live(project: Project, first: str) -> str:
    """auth-v2 1.1.0 promoted over 1.0.0 (which is archived: the fallback); its digest."""
    return promote_version(project, "1.1.0")


@pytest.fixture
def loader(project: Project, live: str) -> Iterator[Loader]:
    with Loader(project, breaker_reset_seconds=RESET) as opened:
        yield opened


def stage_version(project: Project, version: str, name: str = "auth-v2") -> str:
    """`name` at `version` in staging; its digest."""
    directory = write_skill(project.root / STAGING, name, extra={"version": version})
    return read_skill(directory).digest


def promote_version(project: Project, version: str, name: str = "auth-v2") -> str:
    """`name` at `version` staged and promoted to production over what is live; its digest."""
    digest = stage_version(project, version, name)
    (result,) = api.promote(project, [name], to="production", overwrite=True, actor="tester")
    assert result.success, result.error
    return digest


def start_rollout(project: Project, version: str, steps: list[int]) -> str:
    """A rollout of auth-v2 `version` (staged now) beside the live version; its digest."""
    digest = stage_version(project, version)
    outcome = api.rollout_start(
        project,
        "auth-v2",
        steps=steps,
        step_min_duration="0s",
        step_min_executions=5,
        actor="tester",
    )
    assert outcome.success, outcome.error
    return digest


def fail(loader: Loader, resolution: Resolution, times: int) -> None:
    for _ in range(times):
        loader.record(resolution, exception=True, execution_time_ms=10)


def breaker_of(loader: Loader, digest: str) -> dict[str, Any]:
    (found,) = [b for b in loader.stats()["breakers"] if b["digest"] == digest]
    return found


def recorded(project: Project) -> list[dict[str, Any]]:
    lines = inbox_file(project.metrics_inbox, "auth-v2").read_text().splitlines()
    # Blank lines are skipped, as ingestion skips them: appends racing from many threads can
    # leave one (append_records' check for a line cut short sees another append in progress).
    return [json.loads(line) for line in lines if line.strip()]


def events(project: Project, kind: str) -> list[Any]:
    with Store.open(project.database_url) as store:
        return list(reversed(store.events("auth-v2", kind=kind)))  # oldest first


# -- open, half-open, closed --------------------------------------------------------------------


def test_failures_in_a_row_open_it_and_a_trial_success_closes_it(
    project: Project, first: str, live: str, loader: Loader
) -> None:
    early = loader.resolve("auth-v2", subject="user-early")  # in flight before the opening
    resolution = loader.resolve("auth-v2", subject="user-1")
    assert (resolution.digest, resolution.arm) == (live, "stable")
    fail(loader, resolution, 4)
    assert loader.resolve("auth-v2", subject="user-1").digest == live  # 4 < 5: still closed
    assert loader.stats()["breakers"] == []

    fail(loader, resolution, 1)
    fallback = loader.resolve("auth-v2", subject="user-1")
    assert (fallback.version, fallback.digest, fallback.arm) == ("1.0.0", first, "fallback")
    assert fallback.subject == "user-1"
    assert fallback.path == str(archive_entry(project, "auth-v2", "1.0.0", first))
    assert loader.load(fallback).digest == first  # the archive's copy serves
    assert {loader.resolve("auth-v2", subject=f"user-{i}").digest for i in range(50)} == {first}
    breaker = breaker_of(loader, live)
    assert (breaker["name"], breaker["version"], breaker["stage"]) == (
        "auth-v2",
        "1.1.0",
        "production",
    )
    assert (breaker["state"], breaker["consecutive_failures"], breaker["times_opened"]) == (
        "open",
        5,
        1,
    )
    assert breaker["opened_at"] is not None
    assert breaker["serving_instead"] == {"arm": "fallback", "version": "1.0.0", "digest": first}
    assert breaker["no_fallback"] is False

    (opened,) = events(project, "breaker_open")
    assert (opened.version, opened.digest, opened.from_stage) == ("1.1.0", live, "production")
    assert opened.trigger_metric == "consecutive_failures=5"
    assert re.fullmatch(rf"loader@.+:{os.getpid()}", opened.actor), opened.actor
    assert "5 failed executions in a row" in (opened.reason or "")
    assert opened.details["from_state"] == "closed"
    assert events(project, "breaker_closed") == []

    # The fallback's executions are recorded as its own version, tagged with the open breaker;
    # they count for its own breaker (a success: none is made for it).
    loader.record(fallback, pattern_fidelity=0.9)
    written = recorded(project)[-1]
    assert (written["version"], written["digest"]) == ("1.0.0", first)
    assert written["tags"] == {"arm": "fallback", "stage": "production", "breaker": "open"}
    assert [b["digest"] for b in loader.stats()["breakers"]] == [live]

    time.sleep(RESET + 0.1)
    served = [loader.resolve("auth-v2", subject=f"user-{i}") for i in range(20)]
    trials = [r for r in served if r.digest == live]
    assert len(trials) == 1, served  # exactly one trial; the others keep the fallback
    assert trials[0] is served[0]
    assert {r.digest for r in served[1:]} == {first}
    assert breaker_of(loader, live)["state"] == "half-open"
    # An execution resolved before the opening, recorded now, is not the trial: it decides
    # nothing.
    loader.record(early, pattern_fidelity=0.9)
    assert breaker_of(loader, live)["state"] == "half-open"
    assert loader.resolve("auth-v2", subject="user-1").digest == first

    loader.record(trials[0], pattern_fidelity=0.95)
    assert recorded(project)[-1]["tags"]["breaker"] == "half-open"
    assert {loader.resolve("auth-v2", subject=f"user-{i}").digest for i in range(20)} == {live}
    breaker = breaker_of(loader, live)  # still listed: it opened once
    assert (breaker["state"], breaker["consecutive_failures"], breaker["times_opened"]) == (
        "closed",
        0,
        1,
    )
    assert breaker["trials"] == 1
    (closed,) = events(project, "breaker_closed")
    assert (closed.version, closed.digest, closed.from_stage) == ("1.1.0", live, "production")
    assert closed.details["from_state"] == "half-open"
    assert loader.stats()["breaker_event_errors"] == 0


def test_a_failed_trial_opens_it_again_for_another_reset_timeout(
    project: Project, first: str, live: str, loader: Loader
) -> None:
    fail(loader, loader.resolve("auth-v2", subject="user-1"), 5)
    time.sleep(RESET + 0.1)
    trial = loader.resolve("auth-v2", subject="user-2")
    assert trial.digest == live
    loader.record(trial, exception=True)

    breaker = breaker_of(loader, live)
    assert (breaker["state"], breaker["times_opened"]) == ("open", 2)
    # Open again from now: no trial until another reset timeout has passed.
    assert {loader.resolve("auth-v2", subject=f"user-{i}").digest for i in range(20)} == {first}
    reopened = events(project, "breaker_open")
    assert len(reopened) == 2
    assert reopened[1].details["from_state"] == "half-open"
    assert "trial execution failed" in (reopened[1].reason or "")
    assert events(project, "breaker_closed") == []

    time.sleep(RESET + 0.1)
    again = loader.resolve("auth-v2", subject="user-3")
    assert again.digest == live
    loader.record(again)
    assert loader.resolve("auth-v2", subject="user-3").digest == live
    assert len(events(project, "breaker_closed")) == 1


def test_a_trial_never_recorded_lets_another_through_after_the_reset_timeout(
    first: str, live: str, loader: Loader
) -> None:
    fail(loader, loader.resolve("auth-v2"), 5)
    time.sleep(RESET + 0.1)
    lost = loader.resolve("auth-v2", subject="user-1")  # its host never records it
    assert lost.digest == live
    assert loader.resolve("auth-v2", subject="user-2").digest == first
    time.sleep(RESET + 0.1)
    second = loader.resolve("auth-v2", subject="user-3")
    assert second.digest == live
    assert loader.resolve("auth-v2", subject="user-4").digest == first
    loader.record(lost)  # the first trial, too late: the second one is the trial now
    assert breaker_of(loader, live)["state"] == "half-open"
    loader.record(Resolution(*second))  # a copy of the trial counts as the trial
    breaker = breaker_of(loader, live)
    assert (breaker["state"], breaker["trials"]) == ("closed", 2)


def test_only_failures_in_a_row_count(project: Project, live: str, loader: Loader) -> None:
    resolution = loader.resolve("auth-v2", subject="user-1")
    for _ in range(3):
        fail(loader, resolution, 4)
        loader.record(resolution, pattern_fidelity=0.9)  # a success resets the count
    # A false negative that is not critical is not a failure; a critical one is.
    for _ in range(5):
        loader.record(resolution, false_negative=True)
    fail(loader, resolution, 4)
    assert loader.resolve("auth-v2").digest == live
    assert loader.stats()["breakers"] == []
    assert events(project, "breaker_open") == []
    loader.record(resolution, false_negative=True, critical=True)
    assert loader.resolve("auth-v2").arm == "fallback"


def test_fail_max_comes_from_the_config(project: Project, live: str) -> None:
    config = project.root / "skillstage.toml"
    text = config.read_text()
    assert "breaker_fail_max = 5" in text
    config.write_text(text.replace("breaker_fail_max = 5", "breaker_fail_max = 2"))
    with Loader(load_config_file(config)) as loader:
        fail(loader, loader.resolve("auth-v2"), 2)
        assert loader.resolve("auth-v2").arm == "fallback"
        # The default reset timeout (60 s): still open now.
        assert breaker_of(loader, live)["state"] == "open"
    with pytest.raises(UsageError, match="breaker_fail_max >= 1"):
        Loader(project, breaker_fail_max=0)


# -- where it falls back to ---------------------------------------------------------------------


def test_an_open_candidate_sends_its_buckets_to_the_stable_arm(
    project: Project, first: str
) -> None:
    candidate = start_rollout(project, "1.1.0", steps=[50, 100])
    subjects = [f"user-{i}" for i in range(100)]
    with Loader(project, breaker_reset_seconds=60) as loader:
        before = {s: loader.resolve("auth-v2", subject=s) for s in subjects}
        on_candidate = [s for s, r in before.items() if r.arm == "candidate"]
        assert 0 < len(on_candidate) < len(subjects)
        assert {before[s].digest for s in on_candidate} == {candidate}
        fail(loader, before[on_candidate[0]], 5)

        after = {s: loader.resolve("auth-v2", subject=s) for s in subjects}
        assert {r.digest for r in after.values()} == {first}
        for subject in on_candidate:
            # The stable arm, with the rollout, bucket and subject routing gave the request.
            assert after[subject] == before[subject]._replace(
                version="1.0.0",
                digest=first,
                path=str(project.root / PRODUCTION / "auth-v2"),
                arm="stable",
            )
        for subject in set(subjects) - set(on_candidate):
            assert after[subject] == before[subject]
        breaker = breaker_of(loader, candidate)
        assert breaker["serving_instead"] == {"arm": "stable", "version": "1.0.0", "digest": first}
        assert breaker["diverted"] == len(on_candidate)
        (opened,) = events(project, "breaker_open")
        assert (opened.version, opened.digest) == ("1.1.0", candidate)

        loader.record(after[on_candidate[0]], pattern_fidelity=0.9)
        tags = recorded(project)[-1]["tags"]
        assert tags["arm"] == "stable"
        assert tags["rollout_id"] == before[on_candidate[0]].rollout_id


def test_with_no_previous_version_the_version_keeps_serving(project: Project, first: str) -> None:
    with Loader(project, breaker_reset_seconds=60) as loader:
        resolution = loader.resolve("auth-v2", subject="user-1")
        fail(loader, resolution, 5)
        again = loader.resolve("auth-v2", subject="user-1")
        assert again == resolution  # nothing better exists
        breaker = breaker_of(loader, first)
        assert breaker["state"] == "open"
        assert breaker["no_fallback"] is True
        assert breaker["serving_instead"] is None
        assert breaker["served_open"] == 1
        assert len(events(project, "breaker_open")) == 1


def test_the_catalog_names_the_fallback_and_lets_no_trial_through(
    first: str, live: str, loader: Loader
) -> None:
    fail(loader, loader.resolve("auth-v2"), 5)
    (entry,) = loader.catalog()
    assert (entry.version, entry.digest, entry.arm) == ("1.0.0", first, "fallback")
    time.sleep(RESET + 0.1)
    for _ in range(3):
        assert loader.catalog()[0].digest == first
    assert breaker_of(loader, live)["state"] == "open"
    assert loader.resolve("auth-v2").digest == live  # the trial is still the first resolve's


# -- the store ----------------------------------------------------------------------------------


def test_an_event_the_store_refuses_is_logged_and_counted(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    sqlite_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # SQLite only: the event table is renamed away under the loader, for real.
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", sqlite_url)
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    first = promote_version(project, "1.0.0")
    promote_version(project, "1.1.0")
    database = sqlite_url.removeprefix("sqlite:///")
    with Loader(project, breaker_reset_seconds=60) as loader:
        with sqlite3.connect(database, isolation_level=None) as connection:
            connection.execute("ALTER TABLE event RENAME TO event_away")
        connection.close()
        with caplog.at_level(logging.WARNING, logger="skillstage.runtime"):
            fail(loader, loader.resolve("auth-v2"), 5)  # does not raise
        assert loader.resolve("auth-v2").digest == first  # and the breaker opened
        assert loader.stats()["breaker_event_errors"] == 1
        messages = [r.message for r in caplog.records]
        assert any(
            "breaker_open event of auth-v2 1.1.0 could not be written" in m for m in messages
        )
        assert len(recorded(project)) == 5  # the executions were recorded all the same


# -- threads and fork ---------------------------------------------------------------------------


def test_threads_recording_at_once_open_it_once_and_let_one_trial_through(
    project: Project, first: str, live: str
) -> None:
    threads = 8
    with Loader(project, breaker_reset_seconds=1.0) as loader:
        failing = loader.resolve("auth-v2", subject="user-1")
        # The fallback version's executions all succeed, from the same threads, at once.
        errors: list[BaseException] = []
        start = threading.Barrier(threads)

        def work(index: int) -> None:
            try:
                start.wait()
                for _ in range(25):
                    loader.record(failing, exception=True)
                    served = loader.resolve("auth-v2", subject=f"user-{index}")
                    if served.digest == first:
                        loader.record(served, pattern_fidelity=1.0)
            except BaseException as exc:
                errors.append(exc)

        workers = [threading.Thread(target=work, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert errors == []
        assert len(events(project, "breaker_open")) == 1
        (breaker,) = loader.stats()["breakers"]  # none for the fallback: it never failed
        assert (breaker["digest"], breaker["state"]) == (live, "open")
        assert (breaker["consecutive_failures"], breaker["times_opened"]) == (5, 1)
        assert len(recorded(project)) >= threads * 25

        time.sleep(1.1)
        trials: list[Resolution] = []
        resolving = threading.Barrier(threads)

        def resolve_many() -> None:
            resolving.wait()
            for i in range(50):
                served = loader.resolve("auth-v2", subject=f"user-{i}")
                if served.digest == live:
                    trials.append(served)

        workers = [threading.Thread(target=resolve_many) for _ in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        assert len(trials) == 1, trials
        loader.record(trials[0])
        assert breaker_of(loader, live)["state"] == "closed"
        assert len(events(project, "breaker_closed")) == 1


_reaped: dict[int, int] = {}


def _wait(pid: int, timeout: float) -> int | None:
    """The exit code of child `pid` once it ended (waiting up to `timeout` s), else None."""
    deadline = time.monotonic() + timeout
    while pid not in _reaped:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            _reaped[pid] = os.waitstatus_to_exitcode(status)
        elif time.monotonic() >= deadline:
            return None
        else:
            time.sleep(0.01)
    return _reaped[pid]


def test_a_forked_child_starts_with_every_breaker_closed(
    project: Project, first: str, live: str, loader: Loader
) -> None:
    fail(loader, loader.resolve("auth-v2"), 5)
    assert loader.resolve("auth-v2").digest == first
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it serves, then leave without pytest's teardown
        code = 1
        try:
            os.close(reader)
            served = loader.resolve("auth-v2").digest
            resolution = loader.resolve("auth-v2")
            for _ in range(5):
                loader.record(resolution, exception=True)
            report = {
                "before": served,
                "after": loader.resolve("auth-v2").digest,
                "breakers": loader.stats()["breakers"],
            }
            os.write(writer, json.dumps(report).encode())
            code = 0
        except BaseException as exc:
            os.write(writer, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(writer)
    try:
        chunks = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([reader], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(reader, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        report = json.loads(b"".join(chunks) or b'{"error": "no answer from the child"}')
        status = _wait(pid, deadline - time.monotonic())
    finally:
        os.close(reader)
        if _wait(pid, 0) is None:  # still running (or hung): it must not outlive the test
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert "error" not in report, report["error"]
    assert status == 0
    assert report["before"] == live  # closed in the child
    assert report["after"] == first  # its own five failures opened its own breaker
    assert [b["times_opened"] for b in report["breakers"]] == [1]
    opened = events(project, "breaker_open")
    assert sorted(e.actor.rsplit(":", 1)[1] for e in opened) == sorted([str(os.getpid()), str(pid)])
    # The parent's breaker is untouched.
    assert breaker_of(loader, live)["times_opened"] == 1
    assert loader.resolve("auth-v2").digest == first
