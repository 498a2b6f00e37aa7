"""Concurrent loaders: 8 threads sharing one `Loader` and 4 processes with a loader each resolve
while this process runs 100 changes to what serves (promote over the live version, roll back,
start a rollout, abort it; 25 times). Every resolution must name a version that was serving at
some instant of the call (allowing the loader its refresh lag), and a path that exists and holds
a readable SKILL.md; no worker may raise; each must see at least two versions. On SQLite and on
PostgreSQL.

How "serving at some instant of the call" is checked: after each change the driver reads from the
store which digests serve (the live one, and an active rollout's candidate) and keeps the
timeline of (when the change began, when it returned, what serves after it). A set of digests
served from somewhere inside its change's call until somewhere inside the next change's call, so
a resolution made during [t0, t1] is right if its digest is in a set whose window overlaps
[t0 - LAG, t1]. time.monotonic() is CLOCK_MONOTONIC on Linux, one clock for every process.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import queue
import random
import signal
import threading
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.runtime import Loader
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store.rollouts import routing_rows
from tests.skilltree import write_skill

SKILL = "auth-v2"
STAGING = Path(".claude/skills/staging")
CYCLES = 25  # x 4 changes (promote, rollback, rollout start, abort) = 100 changes
THREADS = 8
PROCESSES = 4
# A loader serves its last table until its next refresh: it polls every refresh interval
# (250 ms; PostgreSQL also wakes on NOTIFY) and rebuilds in a few ms. On a loaded machine (13
# busy threads on two CPUs here) the refresher thread waits for the GIL and the CPU too, so a
# resolution may lag the store by several intervals: 1.5 s is six of them.
LAG = 1.5
PAUSE = (0.0, 0.2)  # seconds between changes, drawn at random: some inside one refresh, some not
WORKER_DEADLINE = 120  # seconds: a worker stops by itself after this even if never told to
READY_TIMEOUT = 60  # seconds for a spawned process to import, build its loader and say so
TEST_TIME_LIMIT = 180  # seconds (SIGALRM): a hang fails the test instead of the suite


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@pytest.fixture(autouse=True)
def time_limit() -> Iterator[None]:
    """Fail a test that runs longer than TEST_TIME_LIMIT."""

    def expired(_signum: int, _frame: FrameType | None) -> None:
        pytest.fail(f"took longer than {TEST_TIME_LIMIT} s", pytrace=False)

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(TEST_TIME_LIMIT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# -- the workers --------------------------------------------------------------------------------


@dataclass
class WorkerReport:
    """What one worker saw: each resolution as (t0, t1, digest), and what went wrong."""

    worker: str
    observations: list[tuple[float, float, str]] = field(default_factory=list)
    bad_paths: list[str] = field(default_factory=list)
    bad_loads: list[str] = field(default_factory=list)
    error: str | None = None


def resolve_until(
    loader: Loader, worker: str, stop: Any, seed: int, deadline: float
) -> WorkerReport:
    """Resolve with random subjects until `stop` is set (or `deadline`): check each path on disk,
    and now and then load the copy and check it is the digest resolved."""
    rng = random.Random(seed)
    report = WorkerReport(worker)
    try:
        while not stop.is_set() and time.monotonic() < deadline:
            subject = f"user-{rng.randrange(10_000)}"
            t0 = time.monotonic()
            resolution = loader.resolve(SKILL, subject=subject)
            t1 = time.monotonic()
            report.observations.append((t0, t1, resolution.digest))
            path = Path(resolution.path)
            if not path.is_dir():
                report.bad_paths.append(f"{resolution.version} at {path}: no directory")
            else:
                try:
                    (path / "SKILL.md").read_bytes()
                except OSError as exc:
                    report.bad_paths.append(f"{resolution.version} at {path}: {exc}")
            if rng.random() < 0.05:
                loaded = loader.load(resolution)
                if loaded.digest != resolution.digest or not loaded.body:
                    report.bad_loads.append(f"{resolution} loaded as {loaded.digest}")
            # Yield the CPU (and the GIL) so the driver and the refreshers keep their pace.
            time.sleep(rng.uniform(0.0005, 0.003))
    except BaseException:
        report.error = traceback.format_exc()
    return report


def process_worker(
    root: str, url: str, index: int, ready: Any, go: Any, stop: Any, results: Any
) -> None:
    """One spawned process: its own loader, resolving until told to stop."""
    os.environ["SKILLSTAGE_DATABASE_URL"] = url
    name = f"process-{index}"
    try:
        loader = Loader(root)
    except BaseException:
        results.put(WorkerReport(name, error=traceback.format_exc()))
        return
    try:
        ready.put(name)
        if not go.wait(READY_TIMEOUT):
            results.put(WorkerReport(name, error="never told to start"))
            return
        deadline = time.monotonic() + WORKER_DEADLINE
        results.put(resolve_until(loader, name, stop, seed=1000 + index, deadline=deadline))
    finally:
        loader.close()


# -- the driver ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One change to what serves: when its call began and returned, and what served after."""

    what: str
    began: float
    returned: float
    serving: frozenset[str]


def serving(store: Store) -> frozenset[str]:
    """The digests serving SKILL in production now: the live one and an active candidate."""
    with store.reading() as tx:
        rows = [r for r in routing_rows(tx) if r.name == SKILL and r.stage == "production"]
    digests = {row.digest for row in rows}
    for row in rows:
        if row.rollout is not None and row.rollout.state == "active":
            digests.add(row.rollout.candidate_digest)
    return frozenset(digests)


def stage_version(project: Project, version: str) -> str:
    directory = write_skill(project.root / STAGING, SKILL, extra={"version": version})
    return read_skill(directory).digest


def run_changes(project: Project, store: Store, rng: random.Random) -> list[Change]:
    """CYCLES x (promote over the live version, roll back, start a rollout, abort it)."""
    timeline = [Change("initial", -math.inf, time.monotonic(), serving(store))]

    def change(what: str, act: Any) -> None:
        began = time.monotonic()
        outcome = act()
        assert outcome.success, f"{what}: {outcome.error}"
        timeline.append(Change(what, began, time.monotonic(), serving(store)))
        time.sleep(rng.uniform(*PAUSE))

    for cycle in range(1, CYCLES + 1):
        stage_version(project, f"1.{cycle}.0")
        change(
            f"promote 1.{cycle}.0",
            lambda: api.promote(project, [SKILL], to="production", overwrite=True)[0],
        )
        change(f"rollback from 1.{cycle}.0", lambda: api.rollback(project, SKILL, reason="x"))
        stage_version(project, f"1.{cycle}.1")
        change(
            f"rollout 1.{cycle}.1",
            lambda: api.rollout_start(
                project, SKILL, steps=[50, 100], step_min_duration="0s", step_min_executions=5
            ),
        )
        change(
            f"abort 1.{cycle}.1",
            lambda: api.rollout_change(project, "abort", SKILL, reason="x"),
        )
    return timeline


def wrong_versions(report: WorkerReport, timeline: list[Change]) -> list[str]:
    """The resolutions of `report` whose digest served at no instant of [t0 - LAG, t1]."""
    windows = []
    for i, change in enumerate(timeline):
        until = timeline[i + 1].returned if i + 1 < len(timeline) else math.inf
        windows.append((change.began, until, change.serving, change.what))
    wrong = []
    for t0, t1, digest in report.observations:
        if not any(
            digest in digests and began <= t1 and until >= t0 - LAG
            for began, until, digests, _ in windows
        ):
            current = [what for began, until, _, what in windows if began <= t1 and until >= t0]
            wrong.append(f"{digest[:12]} resolved at [{t0:.3f}, {t1:.3f}] during {current}")
    return wrong


def test_concurrent_loaders_see_only_versions_that_served(project: Project) -> None:
    stage_version(project, "1.0.0")
    (first,) = api.promote(project, [SKILL], to="production")
    assert first.success, first.error

    context = multiprocessing.get_context("spawn")
    ready, results = context.Queue(), context.Queue()
    go, stop = context.Event(), context.Event()
    processes = [
        context.Process(
            target=process_worker,
            args=(str(project.root), project.database_url, i, ready, go, stop, results),
            name=f"loader-process-{i}",
            daemon=True,
        )
        for i in range(PROCESSES)
    ]
    thread_stop = threading.Event()
    thread_reports: list[WorkerReport] = []
    threads: list[threading.Thread] = []
    reports: list[WorkerReport] = []
    started = time.monotonic()
    try:
        for process in processes:
            process.start()
        for _ in processes:
            try:
                ready.get(timeout=READY_TIMEOUT)
            except queue.Empty:
                failed = [] if results.empty() else [results.get(timeout=1)]
                pytest.fail(f"a loader process did not start: {failed}", pytrace=False)
        with Loader(project) as shared, Store.open(project.database_url) as store:
            deadline = time.monotonic() + WORKER_DEADLINE
            for i in range(THREADS):

                def work(i: int = i) -> None:
                    report = resolve_until(shared, f"thread-{i}", thread_stop, i, deadline)
                    thread_reports.append(report)

                threads.append(threading.Thread(target=work, name=f"loader-thread-{i}"))
            for thread in threads:
                thread.start()
            go.set()
            try:
                timeline = run_changes(project, store, random.Random(7))
                time.sleep(LAG)  # every loader catches up with the last change
            finally:
                stop.set()
                thread_stop.set()
                for thread in threads:
                    thread.join(timeout=30)
            assert not [t.name for t in threads if t.is_alive()], "a thread did not stop"
            drift = shared.stats()["drift"]
        for _ in processes:
            reports.append(results.get(timeout=60))
        for process in processes:
            process.join(timeout=30)
    finally:
        stop.set()
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(timeout=10)
    elapsed = time.monotonic() - started
    reports += thread_reports

    assert len(timeline) == 1 + 4 * CYCLES
    assert len({d for change in timeline for d in change.serving}) == 1 + 2 * CYCLES
    assert sorted(r.worker for r in reports) == sorted(
        [f"process-{i}" for i in range(PROCESSES)] + [f"thread-{i}" for i in range(THREADS)]
    )
    for report in reports:
        assert report.error is None, f"{report.worker} raised:\n{report.error}"
    for report in reports:
        assert not report.bad_paths, f"{report.worker}: {report.bad_paths[:5]}"
        assert not report.bad_loads, f"{report.worker}: {report.bad_loads[:5]}"
    for report in reports:
        wrong = wrong_versions(report, timeline)
        assert not wrong, f"{report.worker}: {len(wrong)} wrong, e.g. {wrong[:5]}"
    for report in reports:
        seen = {digest for _, _, digest in report.observations}
        assert len(seen) >= 2, f"{report.worker} saw {len(seen)} version(s)"
    print(
        f"\n{len(timeline) - 1} changes in {timeline[-1].returned - timeline[1].began:.1f} s; "
        f"{sum(len(r.observations) for r in reports)} resolutions; "
        f"versions seen per worker: "
        f"{sorted(len({d for _, _, d in r.observations}) for r in reports)}; "
        f"drift reported by the shared loader: {len(drift)}; total {elapsed:.1f} s"
    )
    for process in processes:
        assert process.exitcode == 0, f"{process.name} exited {process.exitcode}"


def test_the_checker_catches_a_version_that_never_served() -> None:
    """The check above could pass vacuously if it accepted anything: it must not."""
    timeline = [
        Change("initial", -math.inf, 10.0, frozenset({"a" * 64})),
        Change("promote", 20.0, 20.5, frozenset({"b" * 64})),
        Change("rollout", 30.0, 30.5, frozenset({"b" * 64, "c" * 64})),
    ]
    report = WorkerReport(
        "checker",
        observations=[
            (15.0, 15.1, "a" * 64),  # served
            (21.0, 21.1, "a" * 64),  # lagging the promotion by under LAG: allowed
            (25.0, 25.1, "a" * 64),  # lagging it by 4.5 s: wrong
            (25.0, 25.1, "c" * 64),  # the candidate before its rollout began: wrong
            (31.0, 31.1, "c" * 64),  # served
            (31.0, 31.1, "d" * 64),  # never served: wrong
        ],
    )
    wrong = wrong_versions(report, timeline)
    assert [w[:12] for w in wrong] == ["a" * 12, "c" * 12, "d" * 12]
