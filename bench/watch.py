"""How fast `skillstage watch` rolls a failing version back, and what one watch pass costs.

1. Rollback latency: a SQLite project with one skill (auth-v2) whose bad version is live in
   production over the one before it; 4 loader processes (spawned, each with its own Loader,
   polling `resolve` in a tight loop and reporting the wall-clock time they first serve each new
   digest); `skillstage watch --interval 1s --json` running as a real background process. Each
   episode: 9 executions of the live version with pattern fidelity 0.60 are appended to the
   inbox (`api.record_execution`) and the bench waits until the watcher has ingested them; after
   a random pause within one interval (so the trip lands at a random point of the watcher's
   cycle, as a user's would, rather than just after a pass), the 10th is appended: the window of
   10 is full, its mean is below 0.85, and the next pass rolls back. The clock starts just
   before that 10th write and stops when all 4 loaders serve the previous version. Re-arm: clear
   the hold (`api.switch(kind="hold", on=False)`), promote 1.<n>.0 to production, wait until the
   loaders serve it. The pieces of each episode (waiting for a pass, the pass until the rollback
   is recorded, the loaders after it) come from the watcher's JSON lines and the rollback event.
   Peer: Argo Rollouts evaluates one measurement per analysis interval; its analysis docs'
   examples use `interval: 60s` and `5m` (a documented figure, not measured here).
2. One watch pass over N live skills on a store of M executions: the skills are registered
   through the store API (`ensure_version` and `enter_stage` in one `store.atomic()`; no skill
   tree on disk, which a pass that acts on nothing never reads), the executions inserted straight
   into the SQLite `execution` table (executemany, 1,000,000 rows a transaction, in time order as
   ingestion leaves them, ids time-ordered as `new_execution_id` makes them, every skill's rows
   interleaved; all healthy, so no trigger fires: fidelity 0.93-0.98, quality 0.85-0.95, 80-120
   ms, a few exceptions, false positives and misses but none critical and none among a skill's
   newest 100). Every execution belongs to the version live since 31 days ago, spread over the
   last 30 days: a version live for a month, the most a trigger that counts "since it entered"
   reads. Timed: `Watcher(project, store).run_pass()` in this process (the first pass of a new
   Watcher, then the median of the next passes on it, as `skillstage watch` runs them), and
   `skillstage watch --once` as a whole process (median). The goal is for 1,000 skills on 10
   million executions; each store is built afresh for each skill count (the same number of
   executions spread over more skills), timed, and removed after. A pass of 1 s or more is
   profiled once more (cProfile: the top 10 by cumulative time, and the pass's SQL time by the
   function that ran each query; the profiler's overhead inflates the Python parts).

Run: `.venv/bin/python bench/watch.py [--quick] [--episodes N] [--executions N] [--skills
100,1000,...] [--repeats N] [--build-budget S] [--json]`; `--quick` is a smaller run (10
episodes, 1,000,000 executions, 100 and 1,000 skills). A store's build stops at --build-budget
seconds (300) and the pass is measured on the rows inserted by then (the counts are printed).
Everything lives in one temporary directory, removed at the end. Targets are reported, not
asserted: the exit status is 0 (1 when a check of what was measured fails: an episode lost, a
pass that acted or failed on the healthy store, a watched count that is not the skill count).
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import hashlib
import itertools
import json
import math
import multiprocessing
import os
import pstats
import queue
import random
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.process import child_environment
from skillstage.process import run as run_process
from skillstage.runtime import Loader
from skillstage.store import Store
from skillstage.store import controls as store_controls
from skillstage.store.db import parse_url
from skillstage.watch.watcher import Watcher

FULL: dict[str, Any] = {
    "episodes": 50,
    "executions": 10_000_000,
    "skills": [100, 1_000, 10_000],
    "repeats": 5,
}
QUICK: dict[str, Any] = {
    "episodes": 10,
    "executions": 1_000_000,
    "skills": [100, 1_000],
    "repeats": 3,
}
NAME = "auth-v2"
LOADERS = 4
INTERVAL_S = 1.0  # `skillstage watch --interval 1s`
BAD_FIDELITY = 0.60  # under the default trigger's 0.85
WINDOW = 10  # the default trigger's window: the 10th bad execution trips it
TARGET_ROLLBACK_P99_S = 2.0
TARGET_PASS_S = 1.0
GOAL_SKILLS = 1_000
GOAL_EXECUTIONS = 10_000_000
ARGO_INTERVALS_S = (60.0, 300.0)  # Argo Rollouts' analysis docs: `interval: 60s`, `interval: 5m`
EPISODE_TIMEOUT_S = 20.0  # an episode not served by every loader by then counts as lost
STEP_TIMEOUT_S = 30.0  # set-up steps between episodes (a promotion served, an ingest)
BUILD_BUDGET_S = 300.0
ROWS_PER_TRANSACTION = 1_000_000
ROWS_PER_CALL = 50_000
CLEAN_TAIL = 100  # a skill's newest executions carry no flag (the alerts' window is 100)
LIVE_DAYS = 30
CHILD_TIMEOUT = 600.0

# fmt: off
_WORDS = (
    "data", "report", "invoice", "chart", "deploy", "review", "sync", "cache", "index", "query",
    "schema", "table", "image", "video", "audio", "parse", "render", "export", "import", "backup",
    "metric", "alert", "ticket", "release", "branch", "commit", "issue", "document", "slide",
)
# fmt: on
_EXECUTION_INSERT = (
    'INSERT INTO execution (execution_id, skill_id, version, digest, "timestamp",'
    " pattern_fidelity, outcome_quality, execution_time_ms, exception, false_positive,"
    " false_negative, critical, benchmark) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0)"
)


# -- skills and projects -----------------------------------------------------------------------


def write_skill(directory: Path, name: str, version: str) -> None:
    """A valid skill of 4 files (as bench/loader.py writes them); the version changes SKILL.md
    and the guide, so two versions have two digests."""
    rng = random.Random(name)
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "references").mkdir(parents=True)
    topic = " ".join(rng.sample(_WORDS, 3))
    (directory / "SKILL.md").write_text(
        f"---\nname: {name}\nversion: {version}\ndescription: Works on {topic} for {name}. "
        f"Use it when a task needs {rng.choice(_WORDS)} {rng.choice(_WORDS)}.\n---\n"
        f"# {name}\n\nRun `./execute.sh`; see references/guide.md.\n"
    )
    for script, text in (
        ("execute.sh", "#!/bin/bash\necho ok\n"),
        ("test.sh", "#!/bin/bash\n./execute.sh >/dev/null\n"),
    ):
        (directory / script).write_text(text)
        (directory / script).chmod(0o755)
    guide = " ".join(rng.choice(_WORDS) for _ in range(200))
    (directory / "references" / "guide.md").write_text(f"{name} {version}\n\n{guide}\n")


def new_project(root: Path) -> Project:
    """A fresh SQLite project at `root` with the default config (default triggers)."""
    api.init(root)
    return load_config_file(root / "skillstage.toml")


def promote_version(project: Project, version: str) -> str:
    """Stage `version` of auth-v2 and promote it to production; its digest."""
    write_skill(project.stage_path("staged", NAME), NAME, version)
    (result,) = api.promote(project, [NAME], to="production", overwrite=True, actor="bench")
    if not result.success or result.digest is None:
        raise SystemExit(f"bench set-up: promoting {NAME} {version} failed: {result.error}")
    return str(result.digest)


def skillstage_command() -> list[str]:
    """The `skillstage` a user runs: the console script beside this interpreter."""
    script = Path(sys.executable).with_name("skillstage")
    return [str(script)] if script.exists() else [sys.executable, "-m", "skillstage"]


def percentile(samples: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest sample with at least `share` of the samples at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


# -- 1. rollback latency -----------------------------------------------------------------------


def poll_loader(root: str, name: str, index: int, messages: Any, stop: Any) -> None:
    """One loader process: resolve in a tight loop, report each digest change with its time.
    Wall-clock time (`time.time`), so it compares with the watcher's own timestamps."""
    loader = Loader(root)
    resolve = loader.resolve
    last = resolve(name, "poller").digest
    messages.put(("ready", index, time.time(), last))
    calls = 0
    try:
        while not stop.is_set():  # checked every 2,000 calls: an Event costs more than a resolve
            for _ in range(2_000):
                digest = resolve(name, "poller").digest
                if digest != last:
                    messages.put(("seen", index, time.time(), digest))
                    last = digest
            calls += 2_000
    finally:
        loader.close()
        messages.put(("done", index, time.time(), calls))


class Loaders:
    """The loader processes and the latest digest each one reported."""

    def __init__(self, root: Path, count: int) -> None:
        context = multiprocessing.get_context("spawn")
        self.messages = context.Queue()
        self.stop = context.Event()
        self.latest: dict[int, tuple[float, str]] = {}
        self.calls: dict[int, int] = {}
        self.processes = [
            context.Process(
                target=poll_loader,
                args=(str(root), NAME, index, self.messages, self.stop),
                daemon=True,
            )
            for index in range(count)
        ]
        for process in self.processes:
            process.start()
        ready_by = time.monotonic() + 120
        while len(self.latest) < count:
            kind, index, at, digest = self.messages.get(
                timeout=max(0.1, ready_by - time.monotonic())
            )
            if kind == "ready":
                self.latest[index] = (at, digest)

    def wait_for(self, digest: str, timeout: float) -> list[float] | None:
        """The times at which each loader first served `digest`, or None after `timeout`."""
        until = time.monotonic() + timeout
        while any(seen != digest for _, seen in self.latest.values()):
            try:
                kind, index, at, seen = self.messages.get(
                    timeout=max(0.01, until - time.monotonic())
                )
            except queue.Empty:
                return None
            if kind == "seen":
                self.latest[index] = (at, seen)
        return [at for at, _ in self.latest.values()]

    def close(self) -> None:
        self.stop.set()
        finish_by = time.monotonic() + 15
        while len(self.calls) < len(self.processes) and time.monotonic() < finish_by:
            try:
                kind, index, _, count = self.messages.get(timeout=1)
            except queue.Empty:
                continue
            if kind == "done":
                self.calls[index] = int(count)
        for process in self.processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()


class Watching:
    """`skillstage watch --interval 1s --json` in the background, its JSON lines in a file."""

    def __init__(self, project: Project, log: Path) -> None:
        self.log = log
        self._out = log.open("w")
        self._err = log.with_suffix(".err").open("w")
        self.process = subprocess.Popen(
            [*skillstage_command(), "watch", "--interval", f"{INTERVAL_S:g}s", "--json"],
            cwd=project.root,
            env=child_environment({"PYTHONUNBUFFERED": "1"}),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=self._err,
            start_new_session=True,  # its own process group, stopped as one below
        )
        until = time.monotonic() + 60
        while not self.passes():
            self.check_alive()
            if time.monotonic() > until:
                raise SystemExit(f"bench set-up: no watch pass in 60 s:\n{self.stderr()}")
            time.sleep(0.05)

    def passes(self) -> list[dict[str, Any]]:
        found = []
        for line in self.log.read_text().splitlines():
            if line.startswith("{"):
                try:
                    found.append(json.loads(line))
                except json.JSONDecodeError:
                    continue  # the line being written
        return found

    def stderr(self) -> str:
        return self.log.with_suffix(".err").read_text()[-3000:]

    def check_alive(self) -> None:
        if self.process.poll() is not None:
            raise SystemExit(
                f"`skillstage watch` exited with {self.process.returncode}:\n{self.stderr()}"
            )

    def close(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)  # the pass in progress finishes first
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        self._out.close()
        self._err.close()


def _stamp(text: str | None) -> float | None:
    return dt.datetime.fromisoformat(text).timestamp() if text else None


def record_bad(project: Project, version: str, digest: str) -> None:
    api.record_execution(
        project,
        NAME,
        version=version,
        digest=digest,
        pattern_fidelity=BAD_FIDELITY,
        outcome_quality=0.9,
        execution_time_ms=10.0,
    )


def stored_executions(store: Store, digest: str) -> int:
    with store.reading() as tx:
        return int(
            tx.scalar(
                "SELECT COUNT(*) FROM execution e JOIN skill s ON s.id = e.skill_id"
                " WHERE s.name = :name AND e.digest = :digest",
                {"name": NAME, "digest": digest},
            )
            or 0
        )


def rollback_latency(root: Path, episodes: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Episodes of trip → rollback → every loader serving the version before, with the watcher
    and the loaders as separate processes."""
    project = new_project(root / "rollback")
    previous = promote_version(project, "1.0.0")
    bad = promote_version(project, "1.1.0")
    rng = random.Random(20_260_101)
    say(f"rollback: {LOADERS} loaders, `skillstage watch --interval {INTERVAL_S:g}s` …")
    loaders = Loaders(project.root, LOADERS)
    watching: Watching | None = None
    samples: list[dict[str, Any]] = []
    lost: list[str] = []
    try:
        watching = Watching(project, root / "watch.jsonl")
        if loaders.wait_for(bad, STEP_TIMEOUT_S) is None:
            raise SystemExit("bench set-up: the loaders never served 1.1.0")
        with Store.open(project.database_url) as store:
            for episode in range(1, episodes + 1):
                version = f"1.{episode}.0"
                if episode > 1:
                    api.switch(project, NAME, kind="hold", on=False, actor="bench", reason="rearm")
                    bad = promote_version(project, version)
                    if loaders.wait_for(bad, STEP_TIMEOUT_S) is None:
                        raise SystemExit(f"bench set-up: the loaders never served {version}")
                for _ in range(WINDOW - 1):
                    record_bad(project, version, bad)
                until = time.monotonic() + STEP_TIMEOUT_S
                while stored_executions(store, bad) < WINDOW - 1:
                    watching.check_alive()
                    if time.monotonic() > until:
                        raise SystemExit(f"bench set-up: {version}'s executions not ingested")
                    time.sleep(0.02)
                time.sleep(rng.uniform(0, INTERVAL_S))
                tripped = time.time()
                record_bad(project, version, bad)
                seen = loaders.wait_for(previous, EPISODE_TIMEOUT_S)
                if seen is None:
                    watching.check_alive()
                    lost.append(version)
                    say(f"  episode {episode}: not served within {EPISODE_TIMEOUT_S:g} s")
                    continue
                samples.append(
                    {
                        "version": version,
                        "tripped": tripped,
                        "latency_s": max(seen) - tripped,
                        "first_loader_s": min(seen) - tripped,
                    }
                )
                if episode % 10 == 0 or episode == episodes:
                    done = [s["latency_s"] for s in samples]
                    say(
                        f"  {episode:>3} / {episodes} episodes, p50 so far "
                        f"{statistics.median(done):.2f} s"
                    )
            switched = switch_times(store, episodes)
        passes = watching.passes()
    finally:
        loaders.close()
        if watching is not None:
            watching.close()
    for sample in samples:
        _explain(sample, switched.get(sample["version"]), passes)
    return _rollback_figures(project, samples, lost, passes, loaders.calls, episodes)


def switch_times(store: Store, episodes: int) -> dict[str, float]:
    """{failed version: when its automated rollback committed (its timeline's "switched" step,
    written in the commit that moved the stage pointer)}."""
    events = [
        e
        for e in store.events(NAME, limit=10 * episodes + 50, kind="rollback")
        if e.success and e.details and e.details.get("failed_version")
    ]
    with store.reading() as tx:
        timeline = store_controls.steps(tx, [e.id for e in events])
    found = {}
    for event in events:
        at = next((s.at for s in timeline.get(event.id, []) if s.step == "switched"), event.at)
        found[str(event.details["failed_version"])] = at.timestamp()  # type: ignore[index]
    return found


def _explain(sample: dict[str, Any], recorded: float | None, passes: list[dict[str, Any]]) -> None:
    """Split one episode: waiting for the pass that acted, that pass until the rollback's commit,
    the loaders after it."""
    acted = next(
        (
            p
            for p in passes
            if any(
                a["kind"] == "rollback" and a["acted"] and a["version"] == sample["version"]
                for a in p["actions"]
            )
        ),
        None,
    )
    tripped = sample["tripped"]
    started = _stamp(acted["started_at"]) if acted else None
    if started is not None:
        sample["wait_for_pass_s"] = started - tripped
    if recorded is not None:
        sample["rollback_committed_s"] = recorded - tripped
        if started is not None:
            sample["pass_to_rollback_s"] = recorded - started
        sample["loaders_after_rollback_s"] = sample["latency_s"] - (recorded - tripped)


def _rollback_figures(
    project: Project,
    samples: list[dict[str, Any]],
    lost: list[str],
    passes: list[dict[str, Any]],
    calls: dict[int, int],
    episodes: int,
) -> dict[str, Any]:
    latencies = [s["latency_s"] for s in samples]
    durations = [
        end - start
        for p in passes
        if (start := _stamp(p["started_at"])) is not None
        and (end := _stamp(p["finished_at"])) is not None
    ]
    results: dict[str, Any] = {
        "episodes_asked": episodes,
        "episodes_done": len(samples),
        "episodes_lost": lost,
        "loaders": LOADERS,
        "interval_s": INTERVAL_S,
        "refresh_ms": project.config.runtime.refresh_ms,
        "watch_passes": len(passes),
        "watch_pass_p50_s": percentile(durations, 0.5) if durations else None,
        "watch_pass_max_s": max(durations) if durations else None,
        "watch_errors": sorted({e for p in passes for e in p["errors"]})[:5],
        "resolve_calls_per_loader": [calls.get(i) for i in range(LOADERS)],
        "argo_intervals_s": list(ARGO_INTERVALS_S),
    }
    if samples:
        results.update(
            {
                "p50_s": percentile(latencies, 0.50),
                "p99_s": percentile(latencies, 0.99),
                "max_s": max(latencies),
                "min_s": min(latencies),
                "first_loader_p50_s": percentile([s["first_loader_s"] for s in samples], 0.5),
            }
        )
        for part in ("wait_for_pass_s", "pass_to_rollback_s", "loaders_after_rollback_s"):
            found = [s[part] for s in samples if part in s]
            if found:
                results[f"{part[:-2]}_p50_s"] = percentile(found, 0.5)
                results[f"{part[:-2]}_max_s"] = max(found)
        results["met"] = not lost and results["p99_s"] <= TARGET_ROLLBACK_P99_S
    else:
        results["met"] = False
    results["check_ok"] = not lost
    return results


# -- 2. one watch pass over many skills --------------------------------------------------------


def skill_names(count: int) -> list[str]:
    return [f"skill-{index:05d}" for index in range(count)]


def register_skills(
    project: Project, store: Store, count: int, entered: dt.datetime
) -> list[tuple[int, str]]:
    """`count` skills with version 1.0.0 live in production since `entered`, through the store
    API in one transaction; (skill id, digest) of each."""
    found = []
    with store.atomic() as tx:
        for name in skill_names(count):
            digest = hashlib.sha256(f"{name} 1.0.0".encode()).hexdigest()
            path = str(project.stage_path("production", name))
            version = tx.ensure_version(
                name,
                "1.0.0",
                digest,
                path=path,
                frontmatter={
                    "name": name,
                    "version": "1.0.0",
                    "description": f"Works on {name}. Use it when a task needs {name}.",
                },
                at=entered,
            )
            tx.enter_stage(version.version_id, "production", path, at=entered)
            found.append((version.skill_id, digest))
    return found


def execution_rows(
    skills: Sequence[tuple[int, str]], total: int, start: dt.datetime, end: dt.datetime
) -> Iterator[tuple[Any, ...]]:
    """`total` healthy executions of `skills` in time order, the skills interleaved, as the
    execution table holds them (timestamps in the store's text form, naive UTC)."""
    rng = random.Random(7)
    fidelity = [round(0.93 + 0.05 * rng.random(), 4) for _ in range(4096)]
    quality = [round(0.85 + 0.10 * rng.random(), 4) for _ in range(4096)]
    millis = [round(80 + 40 * rng.random(), 1) for _ in range(4096)]
    count = len(skills)
    start_us = int(start.timestamp() * 1_000_000)
    step_us = (end.timestamp() - start.timestamp()) * 1_000_000 / max(1, total)
    flagged_before = total - CLEAN_TAIL * count  # each skill's newest CLEAN_TAIL carry no flag
    last_second = -1
    prefix = ""
    for i in range(total):
        skill_id, digest = skills[i % count]
        at = start_us + int(i * step_us)
        second, micro = divmod(at, 1_000_000)
        if second != last_second:
            prefix = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(second))
            last_second = second
        ms = at // 1000
        old = i < flagged_before
        yield (
            # UUIDv7's layout, time first, so ids sort in time as new_execution_id's do
            f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7{(i >> 48) & 0xFFF:03x}-8{(i >> 36) & 0xFFF:03x}"
            f"-{i & 0xFFFFFFFFFFFF:012x}",
            skill_id,
            "1.0.0",
            digest,
            f"{prefix}.{micro:06d}",
            fidelity[i & 4095],
            quality[(i * 7) & 4095],
            millis[(i * 13) & 4095],
            old and i % 397 == 0,
            old and i % 509 == 0,
            old and i % 997 == 0,
            False,
        )


def build_store(
    root: Path, skills: int, executions: int, budget: float, say: Callable[[str], None]
) -> tuple[Project, dict[str, Any]]:
    """A project with `skills` live skills and up to `executions` executions (fewer when the
    build reaches `budget` seconds)."""
    started = time.perf_counter()
    project = new_project(root)
    now = dt.datetime.now(dt.UTC)
    entered = now - dt.timedelta(days=LIVE_DAYS + 1)
    with Store.open(project.database_url) as store:
        registered = register_skills(project, store, skills, entered)
    registered_s = time.perf_counter() - started
    database = parse_url(project.database_url).database
    assert database is not None
    connection = sqlite3.connect(database, isolation_level=None)
    inserted = 0
    stopped = None
    try:
        # A build, not the product: no flush per commit, a large page cache, and the foreign key
        # left unchecked (every skill id was registered above).
        connection.execute("PRAGMA synchronous = OFF")
        connection.execute("PRAGMA cache_size = -1048576")  # 1 GiB
        connection.execute("PRAGMA foreign_keys = OFF")
        rows = execution_rows(
            registered, executions, now - dt.timedelta(days=LIVE_DAYS), now - dt.timedelta(1 / 24)
        )
        step = max(ROWS_PER_TRANSACTION, executions // 10)
        while inserted < executions:
            connection.execute("BEGIN")
            for _ in range(ROWS_PER_TRANSACTION // ROWS_PER_CALL):
                batch = list(itertools.islice(rows, ROWS_PER_CALL))
                if not batch:
                    break
                connection.executemany(_EXECUTION_INSERT, batch)
                inserted += len(batch)
            connection.execute("COMMIT")
            spent = time.perf_counter() - started
            if inserted % step == 0 or inserted >= executions:
                say(f"  {inserted:>12,} / {executions:,} executions, {spent:6.1f} s")
            if inserted < executions and spent > budget:
                stopped = (
                    f"stopped at {inserted:,} of {executions:,} executions: the build passed "
                    f"its budget of {budget:g} s"
                )
                say(f"  {stopped}")
                break
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = {
            table: connection.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
            for table in ("skill", "skill_version", "stage_assignment", "execution")
        }
    finally:
        connection.close()
    built = {
        "skills": skills,
        "executions_asked": executions,
        "rows": counts,
        "register_s": round(registered_s, 2),
        "build_s": round(time.perf_counter() - started, 1),
        "stopped_early": stopped,
        "database_mib": round(
            sum(p.stat().st_size for p in Path(database).parent.glob(Path(database).name + "*"))
            / 2**20
        ),
    }
    return project, built


def _profile(watcher: Watcher) -> dict[str, Any]:
    """The top 10 functions of one pass by cumulative time, and its SQL time by caller."""
    profiler = cProfile.Profile()
    profiler.enable()
    watcher.run_pass()
    profiler.disable()
    stats = pstats.Stats(profiler)
    entries = []
    for (path, line, function), (_, calls, own, cumulative, _) in stats.stats.items():  # type: ignore[attr-defined]
        entries.append(
            {
                "function": f"{_short(path)}:{line}({function})",
                "calls": calls,
                "own_s": own,
                "cumulative_s": cumulative,
            }
        )
    entries.sort(key=lambda e: -e["cumulative_s"])
    return {"top": entries[:10], "sql_by_caller": _sql_by_caller(stats)}


def _sql_by_caller(stats: pstats.Stats) -> list[dict[str, Any]]:
    """The pass's time in SQL, by the function that asked for it (the first caller outside the
    store's Transaction.query/one/scalar/execute): which query the time goes to."""
    table: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    inner = {
        key
        for key in table
        if key[0].endswith("skillstage/store/store.py")
        and key[2] in ("query", "one", "scalar", "execute")
    }
    driver = {key for key in table if "of 'sqlite3." in key[2] and "execute" in key[2]}
    totals: dict[Any, list[float]] = {}
    for key in inner | driver:
        for caller, (calls, _, _, cumulative) in table[key][4].items():
            if caller in inner:
                continue
            found = totals.setdefault(caller, [0, 0.0])
            found[0] += calls
            found[1] += cumulative
    ranked = sorted(totals.items(), key=lambda item: -item[1][1])
    return [
        {
            "function": f"{_short(path)}:{line}({function})",
            "calls": int(calls),
            "cumulative_s": cumulative,
        }
        for (path, line, function), (calls, cumulative) in ranked[:8]
    ]


def _short(path: str) -> str:
    for marker in ("/src/", "/site-packages/", "/lib/python"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path


def pass_cost(
    project: Project, built: dict[str, Any], repeats: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """The watch pass over the built store, in this process and as `skillstage watch --once`."""
    skills = built["skills"]
    figures: dict[str, Any] = {"skills": skills, **built}
    problems: list[str] = []
    with Store.open(project.database_url) as store:
        watcher = Watcher(project, store)
        started = time.perf_counter()
        first = watcher.run_pass()
        figures["first_pass_s"] = time.perf_counter() - started
        steady = []
        for _ in range(repeats):
            started = time.perf_counter()
            result = watcher.run_pass()
            steady.append(time.perf_counter() - started)
        for found in (first, result):
            if found.watched != skills:
                problems.append(f"watched {found.watched}, not {skills}")
            if found.acted or found.actions:
                problems.append(f"the pass acted: {[a.to_dict() for a in found.actions][:2]}")
            if found.errors:
                problems.append(f"the pass failed: {found.errors[:2]}")
        figures["pass_s"] = statistics.median(steady)
        figures["pass_min_s"] = min(steady)
        figures["waiting"] = len(result.waiting)
        if figures["pass_s"] >= TARGET_PASS_S:
            say(f"  over {TARGET_PASS_S:g} s: profiling one pass …")
            figures["profile"] = _profile(watcher)
    say(f"  `skillstage watch --once`, {repeats} runs …")
    whole = []
    for _ in range(repeats):
        done = run_process(
            [*skillstage_command(), "watch", "--once"],
            cwd=project.root,
            timeout=CHILD_TIMEOUT,
            env=child_environment(),
        )
        if done.returncode != 0:
            problems.append(f"watch --once exited {done.returncode}: {done.output_tail(5)}")
        whole.append(done.seconds)
    figures["once_s"] = statistics.median(whole)
    figures["problems"] = problems
    figures["check_ok"] = not problems
    figures["goal_applies"] = (
        skills == GOAL_SKILLS and built["rows"]["execution"] >= GOAL_EXECUTIONS
    )
    figures["met"] = figures["pass_s"] < TARGET_PASS_S
    return figures


def watch_passes(
    root: Path,
    counts: Sequence[int],
    executions: int,
    repeats: int,
    budget: float,
    say: Callable[[str], None],
) -> list[dict[str, Any]]:
    found = []
    for skills in counts:
        where = root / f"pass-{skills}"
        say(f"pass: building {skills:,} live skills, {executions:,} executions …")
        project, built = build_store(where, skills, executions, budget, say)
        say(f"  built in {built['build_s']:.0f} s ({built['database_mib']:,} MiB); timing …")
        found.append(pass_cost(project, built, repeats, say))
        shutil.rmtree(where, ignore_errors=True)  # a 10M store is gigabytes
    return found


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smaller run, to iterate with")
    parser.add_argument("--episodes", type=int, help="rollback episodes (50)")
    parser.add_argument("--executions", type=int, help="executions in each pass's store (10M)")
    parser.add_argument(
        "--skills",
        type=lambda text: [int(n) for n in text.split(",")],
        help="live skill counts, comma-separated (100,1000,10000)",
    )
    parser.add_argument("--repeats", type=int, help="timed passes; the median counts (5)")
    parser.add_argument(
        "--build-budget",
        type=float,
        default=BUILD_BUDGET_S,
        help=f"seconds a store's build may take before it stops inserting ({BUILD_BUDGET_S:g})",
    )
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the bench's projects go (default: $TMPDIR)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    sizes = dict(QUICK if options.quick else FULL)
    for key in sizes:
        if getattr(options, key) is not None:
            sizes[key] = getattr(options, key)
    if min(sizes["episodes"], sizes["executions"], sizes["repeats"], *sizes["skills"]) < 1:
        parser.error("--episodes, --executions, --skills and --repeats must be at least 1")
    for key in [k for k in os.environ if k.startswith("SKILLSTAGE_")]:
        del os.environ[key]  # the bench's projects use their own SQLite stores
    say: Callable[[str], None] = (lambda _: None) if options.json else _say
    results: dict[str, Any] = {
        "sizes": sizes,
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-watch-", dir=options.dir) as tmp:
        root = Path(tmp)
        results["rollback"] = rollback_latency(root, sizes["episodes"], say)
        results["passes"] = watch_passes(
            root, sizes["skills"], sizes["executions"], sizes["repeats"], options.build_budget, say
        )
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    checks = [results["rollback"]["check_ok"], *(p["check_ok"] for p in results["passes"])]
    return 0 if all(checks) else 1


def _say(text: str) -> None:
    print(text, flush=True)


@dataclass
class Row:
    what: str
    ours: str
    peer: str
    ratio: str
    goal: str
    verdict: str


def _verdict(met: bool | None) -> str:
    return "-" if met is None else "met" if met else "MISSED"


def _s(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def render(results: dict[str, Any]) -> str:
    lines: list[str] = []
    rows: list[Row] = []

    found = results["rollback"]
    argo = " and ".join(f"{s:g} s" for s in found["argo_intervals_s"])
    lines.append(
        f"\n1. rollback latency, {found['episodes_done']} of {found['episodes_asked']} episodes: "
        f"the 10th bad execution's write to all {found['loaders']} loaders serving the version "
        f"before (`skillstage watch --interval {found['interval_s']:g}s`, runtime.refresh_ms "
        f"{found['refresh_ms']}, {results['cpus']} CPUs):"
    )
    if "p99_s" in found:
        lines += [
            f"  p50 {_s(found['p50_s'])} s, p99 {_s(found['p99_s'])} s, max "
            f"{_s(found['max_s'])} s, min {_s(found['min_s'])} s; first loader p50 "
            f"{_s(found['first_loader_p50_s'])} s",
            "  where it goes (p50 / max): waiting for the next pass "
            f"{_s(found.get('wait_for_pass_p50_s'))} / {_s(found.get('wait_for_pass_max_s'))} s,"
            f" that pass until the rollback commits {_s(found.get('pass_to_rollback_p50_s'))}"
            f" / {_s(found.get('pass_to_rollback_max_s'))} s, the loaders after it "
            f"{_s(found.get('loaders_after_rollback_p50_s'))} / "
            f"{_s(found.get('loaders_after_rollback_max_s'))} s",
        ]
    lines += [
        f"  the watcher: {found['watch_passes']} passes, each p50 "
        f"{_s(found['watch_pass_p50_s'], 3)} s, max {_s(found['watch_pass_max_s'], 3)} s"
        + (f"; errors: {found['watch_errors']}" if found["watch_errors"] else ""),
        f"  episodes lost (> {EPISODE_TIMEOUT_S:g} s): {len(found['episodes_lost'])}"
        + (f" {found['episodes_lost']}" if found["episodes_lost"] else "")
        + f"; resolve calls per loader: {found['resolve_calls_per_loader']}",
        f"  peer (documented, not measured): Argo Rollouts takes one measurement per analysis "
        f"interval; its analysis docs' examples use {argo} (`interval: 60s`, `interval: 5m`)",
        f"  goal p99 <= {TARGET_ROLLBACK_P99_S:g} s: {_verdict(found['met'])}",
    ]
    p99 = found.get("p99_s")
    rows.append(
        Row(
            "rollback latency p99 (s)",
            f"{_s(p99)} (p50 {_s(found.get('p50_s'))})",
            f"Argo: 1 measurement / {found['argo_intervals_s'][0]:g} s interval",
            f"{found['argo_intervals_s'][0]:g} s = {found['argo_intervals_s'][0] / p99:.0f}x p99"
            if p99
            else "-",
            f"<= {TARGET_ROLLBACK_P99_S:g}",
            _verdict(found["met"]),
        )
    )

    lines.append(
        f"\n2. one watch pass (in process: the first pass of a new Watcher, then the median of "
        f"{results['sizes']['repeats']} more; and `skillstage watch --once` as a process):"
    )
    for found in results["passes"]:
        counts = found["rows"]
        goal = (
            f"goal < {TARGET_PASS_S:g} s: {_verdict(found['met'])}"
            if found["goal_applies"]
            else f"goal < {TARGET_PASS_S:g} s is for {GOAL_SKILLS:,} skills on "
            f"{GOAL_EXECUTIONS:,} executions: " + ("under it" if found["met"] else "over it")
        )
        lines += [
            f"  {found['skills']:>6,} live skills, {counts['execution']:>10,} executions "
            f"(rows: {counts['skill']:,} skill, {counts['skill_version']:,} skill_version, "
            f"{counts['stage_assignment']:,} stage_assignment; built in {found['build_s']:.0f} s,"
            f" {found['database_mib']:,} MiB):",
            f"    pass {1000 * found['pass_s']:8.1f} ms (min {1000 * found['pass_min_s']:.1f}), "
            f"first pass {1000 * found['first_pass_s']:.1f} ms; watch --once "
            f"{1000 * found['once_s']:.0f} ms; {goal}",
        ]
        if found["stopped_early"]:
            lines.append(f"    {found['stopped_early']}")
        for problem in found["problems"]:
            lines.append(f"    CHECK FAILED: {problem}")
        if "profile" in found:
            lines.append("    where one pass spends its time (cProfile, top 10 by cumulative):")
            lines.append(f"      {'cumulative s':>12} {'own s':>8} {'calls':>9}  function")
            for entry in found["profile"]["top"]:
                lines.append(
                    f"      {entry['cumulative_s']:12.3f} {entry['own_s']:8.3f} "
                    f"{entry['calls']:9,}  {entry['function']}"
                )
            lines.append("    its SQL time by the function that ran the query (same profile):")
            for entry in found["profile"]["sql_by_caller"]:
                lines.append(
                    f"      {entry['cumulative_s']:12.3f} {'':8} {entry['calls']:9,}  "
                    f"{entry['function']}"
                )
        rows.append(
            Row(
                f"pass, {found['skills']:,} skills, {counts['execution'] / 1e6:g}M exec (ms)",
                f"{1000 * found['pass_s']:.1f} (--once {1000 * found['once_s']:.0f})",
                "-",
                "-",
                f"< {1000 * TARGET_PASS_S:g}" if found["goal_applies"] else "-",
                _verdict(found["met"]) if found["goal_applies"] else "-",
            )
        )

    header = Row("", "skillstage", "peer / reference", "ratio", "goal", "")
    widths = [max(len(getattr(r, f)) for r in [header, *rows]) for f in Row.__dataclass_fields__]
    lines.append("\nsummary:")
    for row in [header, *rows]:
        cells = [getattr(row, f) for f in Row.__dataclass_fields__]
        text = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
        lines.append(("  " + text).rstrip())
    lines.append(
        f"{results['cpus']} CPUs; load average {results['load_average_at_start']} at the start, "
        f"{results['load_average_at_end']} at the end; {results['seconds']:.0f} s in all"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
