"""How fast the loader serves, each figure next to a peer measured in the same run.

1. Hot `Loader.resolve` of a skill with an active rollout (10%, sticky subjects: 100,000
   distinct subject strings built beforehand, timeit-style loops with the garbage collector off,
   the median of interleaved repeats, ns per call) against Unleash's Python SDK `is_enabled` on a
   gradual-rollout flag (flexibleRollout, rollout 10, stickiness userId, groupId = the skill
   name), bootstrapped from a dict and evaluated locally (no server is contacted). Both use
   Unleash's normalisation, so the bench also checks that they pick the same subjects.
2. Switch latency: 4 loader processes (spawned, each with its own Loader on one project) call
   `resolve` in a tight loop and report the monotonic time they first serve a new digest; the
   parent makes moves (promote a new version with overwrite, then roll back to the old one, in
   turn) and times each from the moment the api call returns (the commit is inside it) to when
   all 4 serve the new digest. No peer: the loader's refresh interval is the reference.
3. `catalog()` over 1,000 skills (all promoted to production by one `api.promote` call), cold (a
   new Loader: construction and the first catalog) and hot (the next call), against reading every
   SKILL.md's frontmatter from disk with PyYAML (what a loader without a registry does); and the
   peak RSS of a process holding a Loader after catalog() and after load() of every skill
   (`ru_maxrss` and VmHWM, in a process of its own started through a small launcher, so the
   figure is not this process's high-water mark inherited across fork and exec).
4. `api.sync` of those skills into an empty directory, again with nothing changed, and again
   after one skill got a new version: the time of each, and how many skill directories each
   touched (inode or mtime of DIR/<name> changed), against `rsync -a --delete` of the whole
   production folder (or, without rsync, `cp -a` into a fresh directory swapped in).

Run: `.venv/bin/python bench/loader.py [--quick] [--skills N] [--moves N] [--subjects N]
[--json]`; `--quick` is a smaller run (200 skills, 20 moves, 20,000 subjects) to iterate with.
Targets are reported, not asserted: the exit status is 0 (1 when a check of what was measured
fails: the two routers disagree, a catalog misses skills, a sync installs the wrong copy).
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import math
import multiprocessing
import os
import queue
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.runtime import Loader

FULL = {"skills": 1_000, "moves": 100, "subjects": 100_000, "repeats": 5}
QUICK = {"skills": 200, "moves": 20, "subjects": 20_000, "repeats": 3}
LOADERS = 4
ROLLOUT_WEIGHT = 10  # the first of the default steps [10, 50, 100]
TARGET_SPEEDUP = 10.0  # resolve at least this many times faster than Unleash's is_enabled
TARGET_RESOLVE_NS = 2_000.0
TARGET_SWITCH_P99_S = 1.0
TARGET_RSS_BYTES = 100_000_000  # seed 003's memory threshold: 100 MB
MOVES_DEADLINE_S = 90.0  # the switch section stops making moves after this long
MOVE_TIMEOUT_S = 10.0  # a move not served by every loader by then counts as lost
SYNC_SUBJECT = "bench-user"
FLAG = "bench-rollout"
CHILD_TIMEOUT = 600.0

# fmt: off
_WORDS = (
    "data", "report", "invoice", "chart", "deploy", "review", "sync", "cache", "index", "query",
    "schema", "table", "image", "video", "audio", "parse", "render", "export", "import", "backup",
    "metric", "alert", "ticket", "release", "branch", "commit", "issue", "document", "slide",
    "sheet", "form", "email", "calendar", "contact", "search", "vector", "model", "prompt",
)
# fmt: on

# The process whose peak RSS is measured: it imports what an agent host imports, and no more.
RSS_CHILD = """
import json, resource, sys
from pathlib import Path

def memory():
    status = dict(
        line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines()
        if line.startswith(("VmHWM", "VmRSS"))
    )
    return {
        "ru_maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "vmhwm_mib": int(status["VmHWM"].split()[0]) / 1024,
        "vmrss_mib": int(status["VmRSS"].split()[0]) / 1024,
    }

figures = {"bare": memory()}
if sys.argv[1] != "bare":
    from skillstage.runtime import Loader
    figures["after_imports"] = memory()
    loader = Loader(sys.argv[1])
    entries = loader.catalog()
    figures["after_catalog"] = memory()
    for entry in entries:
        loader.load(loader.resolve(entry.name))
    figures["after_load_all"] = memory()
    figures["skills"] = len(entries)
    figures["loaded"] = loader.stats()["cached_digests"]
    loader.close()
print(json.dumps(figures))
"""
# Starts the measured process from a small one: a child's ru_maxrss starts at the high-water mark
# of the process it was forked from (kept across exec), and this bench's own is large.
LAUNCHER = "import subprocess, sys; sys.exit(subprocess.call(sys.argv[1:]))"


# -- skills and projects -----------------------------------------------------------------------


def write_skill(directory: Path, name: str, version: str) -> None:
    """A valid skill of 4 files (SKILL.md, execute.sh, test.sh, references/guide.md, about 3 KB
    in all); the version changes SKILL.md and the guide, so two versions have two digests."""
    rng = random.Random(name)
    shutil.rmtree(directory, ignore_errors=True)
    (directory / "references").mkdir(parents=True)
    topic = " ".join(rng.sample(_WORDS, 3))
    body = "\n".join(
        " ".join(rng.choice(_WORDS) for _ in range(rng.randint(6, 14))) for _ in range(16)
    )
    (directory / "SKILL.md").write_text(
        f"---\nname: {name}\nversion: {version}\ndescription: Works on {topic} for {name}. "
        f"Use it when a task needs {rng.choice(_WORDS)} {rng.choice(_WORDS)}.\n---\n"
        f"# {name}\n\nRun `./execute.sh`; see references/guide.md.\n\n{body}\n"
    )
    for script, text in (
        ("execute.sh", "#!/bin/bash\necho ok\n"),
        ("test.sh", "#!/bin/bash\n./execute.sh >/dev/null\n"),
    ):
        (directory / script).write_text(text)
        (directory / script).chmod(0o755)
    guide = " ".join(rng.choice(_WORDS) for _ in range(300))
    (directory / "references" / "guide.md").write_text(f"{name} {version}\n\n{guide}\n")


def new_project(root: Path) -> Project:
    """A fresh SQLite project at `root` with the default config (default gates)."""
    api.init(root)
    return load_config_file(root / "skillstage.toml")


def stage(project: Project, name: str, version: str) -> Path:
    """Put `version` of `name` in staging (the user's edit: never timed)."""
    target = project.stage_path("staged", name)
    write_skill(target, name, version)
    return target


def promoted(project: Project, names: Sequence[str], **options: Any) -> list[Any]:
    results = api.promote(project, list(names), to="production", **options)
    failed = [f"{r.skill_name}: {r.error}" for r in results if not r.success]
    if failed:
        raise SystemExit(f"bench set-up: promotion failed: {failed[:3]}")
    return results


# -- figures -----------------------------------------------------------------------------------


def percentile(samples: Sequence[float], share: float) -> float:
    """Nearest rank: the smallest sample with at least `share` of the samples at or below it."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


def _gc_off(call: Callable[[], Any]) -> float:
    """Seconds `call` takes with the garbage collector off (as timeit runs its loops)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        started = time.perf_counter()
        call()
        return time.perf_counter() - started
    finally:
        if enabled:
            gc.enable()


def _timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = call()
    return time.perf_counter() - started, result


# -- 1. resolve against Unleash ----------------------------------------------------------------


def unleash_client(cache_dir: Path, group: str) -> Any:
    """Unleash's SDK with one gradual-rollout flag, bootstrapped from a dict: offline, no
    registration and no metrics, so it never contacts the (unreachable) URL it is given."""
    from UnleashClient import UnleashClient
    from UnleashClient.cache import FileCache

    cache = FileCache("bench", directory=str(cache_dir))
    cache.bootstrap_from_dict(
        {
            "version": 1,
            "features": [
                {
                    "name": FLAG,
                    "enabled": True,
                    "strategies": [
                        {
                            "name": "flexibleRollout",
                            "parameters": {
                                "rollout": str(ROLLOUT_WEIGHT),
                                "stickiness": "userId",
                                "groupId": group,
                            },
                        }
                    ],
                }
            ],
        }
    )
    client = UnleashClient(
        url="http://127.0.0.1:9/never",
        app_name="bench",
        disable_metrics=True,
        disable_registration=True,
        cache=cache,
    )
    client.initialize_client(fetch_toggles=False)
    return client


def routing(root: Path, subjects: int, repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Resolve with an active rollout (and, for information, without one and without a subject)
    next to Unleash's is_enabled, interleaved repeats over the same prebuilt subjects."""
    project = new_project(root / "routing")
    hot, calm = "hot-skill", "calm-skill"
    for name in (hot, calm):
        stage(project, name, "1.0.0")
    promoted(project, [hot, calm])
    stage(project, hot, "1.1.0")
    started = api.rollout_start(project, hot, step_min_duration="0s", step_min_executions=5)
    if not started.success:
        raise SystemExit(f"bench set-up: rollout_start failed: {started.error}")
    weight = started.rollout.weight if started.rollout is not None else None
    names = [f"user-{index:06d}" for index in range(subjects)]
    contexts = [{"userId": subject} for subject in names]
    loader = Loader(project)
    client = unleash_client(root / "unleash-cache", group=hot)
    try:
        resolve, is_enabled = loader.resolve, client.is_enabled
        ours = [resolve(hot, subject).arm == "candidate" for subject in names]
        theirs = [bool(is_enabled(FLAG, context)) for context in contexts]
        disagree = sum(a != b for a, b in zip(ours, theirs, strict=True))

        def with_rollout() -> None:
            for subject in names:
                resolve(hot, subject)

        def without_rollout() -> None:
            for subject in names:
                resolve(calm, subject)

        def without_subject() -> None:
            for _ in names:
                resolve(hot)

        def unleash() -> None:
            for context in contexts:
                is_enabled(FLAG, context)

        calls = {
            "resolve_rollout": with_rollout,
            "unleash_is_enabled": unleash,
            "resolve_no_rollout": without_rollout,
            "resolve_rollout_no_subject": without_subject,
        }
        say(f"resolve: {repeats} interleaved repeats over {subjects:,} subjects …")
        samples: dict[str, list[float]] = {label: [] for label in calls}
        for index in range(repeats):
            order = list(calls) if index % 2 == 0 else list(reversed(calls))
            for label in order:
                samples[label].append(_gc_off(calls[label]) / subjects * 1e9)
    finally:
        client.destroy()
        loader.close()
    results: dict[str, Any] = {
        "subjects": subjects,
        "repeats": repeats,
        "rollout_weight": weight,
        "candidate_share": round(sum(ours) / subjects, 4),
        "unleash_enabled_share": round(sum(theirs) / subjects, 4),
        "disagreements": disagree,
    }
    for label, found in samples.items():
        results[label] = {
            "median_ns": round(statistics.median(found), 1),
            "min_ns": round(min(found), 1),
            "all_ns": [round(value, 1) for value in found],
        }
    results["speedup"] = round(
        results["unleash_is_enabled"]["median_ns"] / results["resolve_rollout"]["median_ns"], 1
    )
    results["met"] = (
        results["speedup"] >= TARGET_SPEEDUP
        and results["resolve_rollout"]["median_ns"] < TARGET_RESOLVE_NS
    )
    results["check_ok"] = disagree == 0 and abs(sum(theirs) / subjects - 0.10) < 0.02
    return results


# -- 2. switch latency -------------------------------------------------------------------------


def poll_loader(root: str, name: str, index: int, messages: Any, stop: Any) -> None:
    """One loader process: resolve in a tight loop, report each digest change with its time."""
    loader = Loader(root)
    resolve = loader.resolve
    last = resolve(name, "poller").digest
    messages.put(("ready", index, time.monotonic(), last))
    calls = 0
    try:
        while not stop.is_set():  # checked every 2,000 calls: an Event costs more than a resolve
            for _ in range(2_000):
                digest = resolve(name, "poller").digest
                if digest != last:
                    messages.put(("seen", index, time.monotonic(), digest))
                    last = digest
            calls += 2_000
    finally:
        loader.close()
        messages.put(("done", index, time.monotonic(), calls))


def switch(
    root: Path, moves: int, loaders: int, deadline: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """Moves (promote 1.1.0 with overwrite, roll back to 1.0.0, in turn) while `loaders`
    processes poll; per move, the time from the api call's return to the last loader serving
    the new digest."""
    project = new_project(root / "switch")
    name = "switch-skill"
    stage(project, name, "1.0.0")
    old = promoted(project, [name])[0].digest
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    stop = context.Event()
    processes = [
        context.Process(
            target=poll_loader, args=(str(project.root), name, index, messages, stop), daemon=True
        )
        for index in range(loaders)
    ]
    for process in processes:
        process.start()
    latest: dict[int, tuple[float, str]] = {}
    calls: dict[int, int] = {}
    samples: list[dict[str, float]] = []
    lost = 0
    stopped_early = None
    try:
        ready_by = time.monotonic() + 120
        while len(latest) < loaders:
            kind, index, at, digest = messages.get(timeout=max(0.1, ready_by - time.monotonic()))
            if kind == "ready":
                latest[index] = (at, digest)
        say(f"switch: {loaders} loaders polling; {moves} moves (at most {deadline:g} s) …")
        new: str | None = None
        began = time.monotonic()
        for move in range(moves):
            if time.monotonic() - began > deadline:
                stopped_early = f"stopped after {move} moves: the {deadline:g} s budget was spent"
                break
            forward = move % 2 == 0
            if forward:
                stage(project, name, "1.1.0")
                called = time.monotonic()
                result = api.promote(project, [name], to="production", overwrite=True)[0]
            else:
                called = time.monotonic()
                result = api.rollback(project, name, reason="bench", to_version="1.0.0")
            returned = time.monotonic()
            if not result.success:
                raise SystemExit(f"move {move}: {result.operation} failed: {result.error}")
            if forward:
                new = result.digest
            expected = new if forward else old
            wait_until = returned + MOVE_TIMEOUT_S
            while any(digest != expected for _, digest in latest.values()):
                try:
                    kind, index, at, digest = messages.get(
                        timeout=max(0.01, wait_until - time.monotonic())
                    )
                except queue.Empty:
                    break
                if kind == "seen":
                    latest[index] = (at, digest)
            if any(digest != expected for _, digest in latest.values()):
                lost += 1
                continue
            seen = [at for at, _ in latest.values()]
            samples.append(
                {
                    "from_return_s": max(seen) - returned,
                    "from_call_s": max(seen) - called,
                    "call_s": returned - called,
                    "first_loader_s": min(seen) - returned,
                    "before_return": sum(at < returned for at in seen),
                    "kind": 0 if forward else 1,
                }
            )
    finally:
        stop.set()
        finish_by = time.monotonic() + 15
        while len(calls) < loaders and time.monotonic() < finish_by:
            try:
                kind, index, _, count = messages.get(timeout=1)
            except queue.Empty:
                continue
            if kind == "done":
                calls[index] = int(count)
        for process in processes:
            process.join(timeout=5)
            if process.is_alive():
                process.terminate()
                process.join()
    latencies = [s["from_return_s"] for s in samples]
    results: dict[str, Any] = {
        "loaders": loaders,
        "moves_asked": moves,
        "moves_done": len(samples) + lost,
        "moves_lost": lost,
        "stopped_early": stopped_early,
        "refresh_ms": project.config.runtime.refresh_ms,
        "cpus": os.cpu_count(),
        "resolve_calls_per_loader": [calls.get(i) for i in range(loaders)],
    }
    if samples:
        results.update(
            {
                "p50_s": percentile(latencies, 0.50),
                "p99_s": percentile(latencies, 0.99),
                "max_s": max(latencies),
                "min_s": min(latencies),
                "p50_from_call_s": percentile([s["from_call_s"] for s in samples], 0.50),
                "p99_from_call_s": percentile([s["from_call_s"] for s in samples], 0.99),
                "call_p50_s": percentile([s["call_s"] for s in samples], 0.50),
                "first_loader_p50_s": percentile([s["first_loader_s"] for s in samples], 0.50),
                "loaders_before_return": int(sum(s["before_return"] for s in samples)),
                "promote_p99_s": percentile(
                    [s["from_return_s"] for s in samples if s["kind"] == 0] or [math.nan], 0.99
                ),
                "rollback_p99_s": percentile(
                    [s["from_return_s"] for s in samples if s["kind"] == 1] or [math.nan], 0.99
                ),
            }
        )
        results["met"] = lost == 0 and results["p99_s"] <= TARGET_SWITCH_P99_S
    else:
        results["met"] = False
    return results


# -- 3. catalog and memory ---------------------------------------------------------------------


def skill_names(count: int) -> list[str]:
    return [f"skill-{index:04d}" for index in range(count)]


def big_project(root: Path, count: int, say: Callable[[str], None]) -> tuple[Project, float]:
    """`count` skills written to staging and promoted to production by one api.promote call."""
    project = new_project(root / "catalog")
    names = skill_names(count)
    for name in names:
        stage(project, name, "1.0.0")
    say(f"catalog: promoting {count:,} skills to production in one api.promote call …")
    done = [0]
    started = time.perf_counter()
    step = max(1, count // 10)

    def progress(_result: Any) -> bool:  # asked once per skill, after its gates passed
        done[0] += 1
        if done[0] % step == 0:
            say(f"  {done[0]:>5,} / {count:,} gated, {time.perf_counter() - started:6.1f} s")
        return True

    promoted(project, names, confirm=progress)
    return project, time.perf_counter() - started


def frontmatter_scan(folder: Path, loader_class: Any) -> list[tuple[str, str, str]]:
    """The peer: every <folder>/<dir>/SKILL.md read and its frontmatter parsed with PyYAML."""
    found = []
    with os.scandir(folder) as entries:
        for entry in sorted(entries, key=lambda e: e.name):
            if entry.name.startswith(".") or not entry.is_dir():
                continue
            try:
                text = Path(entry.path, "SKILL.md").read_text(encoding="utf-8")
            except FileNotFoundError:
                continue  # another stage's folder (staging/ is inside the production folder)
            _, head, _ = text.split("---\n", 2)
            data = yaml.load(head, Loader=loader_class)  # a safe loader: SafeLoader or CSafeLoader
            found.append((data["name"], str(data["version"]), data["description"]))
    return found


def catalog(project: Project, repeats: int, say: Callable[[str], None]) -> dict[str, Any]:
    """Cold catalog (new Loader + first call), hot catalog, and the PyYAML scan, interleaved;
    load() of every skill, first and cached, for information."""
    folder = project.stage_root("production")
    safe_c = getattr(yaml, "CSafeLoader", None)
    peers: dict[str, Any] = {"yaml_safe_load": yaml.SafeLoader}
    if safe_c is not None:
        peers["yaml_csafe_load"] = safe_c
    samples: dict[str, list[float]] = {"cold": [], "hot": [], **{k: [] for k in peers}}
    say(f"catalog: {repeats} interleaved repeats …")
    entries: list[Any] = []
    scanned: list[tuple[str, str, str]] = []
    for index in range(repeats):
        order = ["loader", *peers] if index % 2 == 0 else [*peers, "loader"]
        for label in order:
            if label == "loader":
                started = time.perf_counter()
                loader = Loader(project)
                entries = loader.catalog()
                cold = time.perf_counter() - started
                hot, _ = _timed(loader.catalog)
                loader.close()
                samples["cold"].append(cold)
                samples["hot"].append(hot)
            else:
                seconds, scanned = _timed(lambda c=peers[label]: frontmatter_scan(folder, c))
                samples[label].append(seconds)
    with Loader(project) as loader:
        listed = loader.catalog()
        resolutions = [loader.resolve(entry.name) for entry in listed]
        first, _ = _timed(lambda: [loader.load(r) for r in resolutions])
        cached, _ = _timed(lambda: [loader.load(r) for r in resolutions])
    ours = sorted((e.name, e.version, e.description) for e in entries)
    results: dict[str, Any] = {
        "skills": len(entries),
        "peer_skills": len(scanned),
        "same_as_peer": ours == sorted(scanned),
        "load_all_first_ms": round(1000 * first, 1),
        "load_all_cached_ms": round(1000 * cached, 2),
    }
    for label, found in samples.items():
        results[label] = {
            "median_ms": round(1000 * statistics.median(found), 3),
            "min_ms": round(1000 * min(found), 3),
        }
    best_peer = min(results[k]["median_ms"] for k in peers)
    results["peer_ms"] = best_peer
    results["peer_label"] = min(peers, key=lambda k: results[k]["median_ms"])
    results["cold_speedup"] = round(best_peer / results["cold"]["median_ms"], 2)
    results["hot_speedup"] = round(best_peer / results["hot"]["median_ms"], 1)
    return results


def memory(project: Project) -> dict[str, Any]:
    """Peak RSS of a process holding a Loader on the project (after catalog, after load() of
    every skill), and of a bare interpreter, each started through the small launcher."""

    def measured(argument: str) -> dict[str, Any]:
        done = subprocess.run(
            [sys.executable, "-c", LAUNCHER, sys.executable, "-c", RSS_CHILD, argument],
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
        if done.returncode != 0:
            raise SystemExit(f"the RSS child failed ({done.returncode}):\n{done.stderr[-3000:]}")
        return dict(json.loads(done.stdout.strip().splitlines()[-1]))

    figures = measured(str(project.root))
    figures["bare"] = measured("bare")["bare"]
    peak = figures["after_load_all"]["ru_maxrss_mib"]
    figures["peak_mib"] = peak
    figures["over_imports_mib"] = round(peak - figures["after_imports"]["ru_maxrss_mib"], 1)
    figures["met"] = peak * 2**20 < TARGET_RSS_BYTES
    return figures


# -- 4. sync -----------------------------------------------------------------------------------


def snapshot(folder: Path, names: Sequence[str]) -> dict[str, tuple[int, int] | None]:
    found: dict[str, tuple[int, int] | None] = {}
    for name in names:
        try:
            info = (folder / name).lstat()
        except FileNotFoundError:
            found[name] = None
        else:
            found[name] = (info.st_ino, info.st_mtime_ns)
    return found


def touched(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    return sorted(
        name for name in before.keys() | after.keys() if before.get(name) != after.get(name)
    )


def peer_copy(source: Path, target: Path) -> tuple[str, float]:
    """The whole production folder copied to `target`: `rsync -a --delete` into it when rsync
    exists; else `cp -a` (or shutil.copytree) into a fresh directory that replaces it."""
    started = time.perf_counter()
    if shutil.which("rsync"):
        subprocess.run(["rsync", "-a", "--delete", f"{source}/", f"{target}/"], check=True)
        return "rsync -a --delete", time.perf_counter() - started
    fresh = target.with_name(target.name + ".new")
    if shutil.which("cp"):
        subprocess.run(["cp", "-a", str(source), str(fresh)], check=True)
        how = "cp -a into a fresh directory, swapped in"
    else:
        shutil.copytree(source, fresh, symlinks=True)
        how = "shutil.copytree into a fresh directory, swapped in"
    if target.exists():
        shutil.rmtree(target)
    fresh.rename(target)
    return how, time.perf_counter() - started


def sync(project: Project, root: Path, count: int, say: Callable[[str], None]) -> dict[str, Any]:
    """api.sync into an empty directory, again unchanged, again after one skill's promotion;
    the peer copy beside each pass."""
    if importlib.util.find_spec("skillstage.runtime.sync") is None:
        return {"built": False}
    names = skill_names(count)
    into = root / "sync-into"
    peer = root / "peer-copy"
    source = project.stage_root("production")
    changed = names[len(names) // 2]
    say(f"sync: {len(names):,} skills into {into} …")
    results: dict[str, Any] = {"built": True, "skills": len(names), "changed_skill": changed}
    try:
        passes: list[tuple[str, Callable[[], None] | None]] = [
            ("first", None),
            ("unchanged", None),
            ("after_one_change", lambda: promoted(project, [changed], overwrite=True)),
        ]
        for label, change in passes:
            if change is not None:
                stage(project, changed, "1.1.0")
                change()
            ours_before, peer_before = snapshot(into, names), snapshot(peer, names)
            seconds, result = _timed(lambda: api.sync(project, into, subject=SYNC_SUBJECT))
            ours_touched = touched(ours_before, snapshot(into, names))
            how, peer_seconds = peer_copy(source, peer)
            results[label] = {
                "seconds": round(seconds, 4),
                "touched": len(ours_touched),
                "touched_names": ours_touched[:5],
                "added": len(result.added),
                "updated": [s.name for s in result.updated],
                "unchanged": result.unchanged,
                "skipped": len(result.skipped),
                "peer_seconds": round(peer_seconds, 4),
                "peer_touched": len(touched(peer_before, snapshot(peer, names))),
            }
            results["peer"] = how
    except Exception as exc:  # being written: report what broke and go on
        results["error"] = f"{type(exc).__name__}: {exc}"
        return results
    text = (into / changed / "SKILL.md").read_text(encoding="utf-8")
    last = results["after_one_change"]
    results["check_ok"] = (
        "version: 1.1.0" in text
        and results["first"]["added"] == len(names)
        and last["updated"] == [changed]
    )
    results["met"] = last["touched"] == 1
    return results


# -- main --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="a smaller run, to iterate with")
    parser.add_argument("--skills", type=int, help="skills for catalog and sync (1,000)")
    parser.add_argument("--moves", type=int, help="switch moves (100)")
    parser.add_argument("--subjects", type=int, help="distinct subjects resolved (100,000)")
    parser.add_argument("--repeats", type=int, help="timing repeats; the median counts (5)")
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the bench's projects go (default: $TMPDIR)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    sizes = dict(QUICK if options.quick else FULL)
    for key in sizes:
        if getattr(options, key) is not None:
            sizes[key] = getattr(options, key)
    if min(sizes.values()) < 1:
        parser.error("--skills, --moves, --subjects and --repeats must be at least 1")
    for key in [k for k in os.environ if k.startswith("SKILLSTAGE_")]:
        del os.environ[key]  # the bench's projects use their own SQLite stores
    say: Callable[[str], None] = (lambda _: None) if options.json else _say
    results: dict[str, Any] = {
        "sizes": sizes,
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-loader-", dir=options.dir) as tmp:
        root = Path(tmp)
        results["resolve"] = routing(root, sizes["subjects"], sizes["repeats"], say)
        results["switch"] = switch(root, sizes["moves"], LOADERS, MOVES_DEADLINE_S, say)
        project, seconds = big_project(root, sizes["skills"], say)
        results["promote_all_s"] = round(seconds, 1)
        results["catalog"] = catalog(project, sizes["repeats"], say)
        say("memory: a Loader in a process of its own …")
        results["memory"] = memory(project)
        results["sync"] = sync(project, root, sizes["skills"], say)
    results["seconds"] = round(time.perf_counter() - started, 1)
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    checks = [
        results["resolve"]["check_ok"],
        results["catalog"]["same_as_peer"],
        results["sync"].get("check_ok", True),
    ]
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


def render(results: dict[str, Any]) -> str:
    sizes = results["sizes"]
    lines: list[str] = []
    rows: list[Row] = []

    found = results["resolve"]
    ours, theirs = found["resolve_rollout"]["median_ns"], found["unleash_is_enabled"]["median_ns"]
    lines += [
        f"\n1. resolve, active rollout at {found['rollout_weight']}%, {found['subjects']:,} "
        f"sticky subjects, median of {found['repeats']} (ns per call, gc off):",
        f"  Loader.resolve, rollout active            {ours:9.0f}"
        f"   (min {found['resolve_rollout']['min_ns']:.0f})",
        f"  UnleashClient.is_enabled, flexibleRollout {theirs:9.0f}"
        f"   (min {found['unleash_is_enabled']['min_ns']:.0f})",
        f"  for information: no rollout {found['resolve_no_rollout']['median_ns']:.0f},"
        f" rollout but no subject (random bucket)"
        f" {found['resolve_rollout_no_subject']['median_ns']:.0f}",
        f"  candidate share {found['candidate_share']:.2%}, Unleash enabled share "
        f"{found['unleash_enabled_share']:.2%}, subjects the two disagree on: "
        f"{found['disagreements']}" + ("" if found["check_ok"] else "   CHECK FAILED"),
        f"  resolve is {found['speedup']}x faster; goal >= {TARGET_SPEEDUP:g}x and < "
        f"{TARGET_RESOLVE_NS:g} ns: {_verdict(found['met'])}",
    ]
    rows.append(
        Row(
            "resolve, rollout (ns/call)",
            f"{ours:.0f}",
            f"Unleash {theirs:.0f}",
            f"{found['speedup']}x",
            f">= {TARGET_SPEEDUP:g}x, < {TARGET_RESOLVE_NS:g}",
            _verdict(found["met"]),
        )
    )

    found = results["switch"]
    lines.append(
        f"\n2. switch latency, {found['loaders']} loader processes polling resolve, "
        f"{found['moves_done']} of {found['moves_asked']} moves (promote --overwrite / rollback"
        f" in turn), {found['cpus']} CPUs:"
    )
    if found.get("stopped_early"):
        lines.append(f"  {found['stopped_early']}")
    if "p99_s" in found:
        lines += [
            "  from the api call's return (the commit is inside the call) to all loaders serving:",
            f"    p50 {1000 * found['p50_s']:.0f} ms, p99 {1000 * found['p99_s']:.0f} ms, "
            f"max {1000 * found['max_s']:.0f} ms, min {1000 * found['min_s']:.0f} ms "
            f"(promotes p99 {1000 * found['promote_p99_s']:.0f}, rollbacks p99 "
            f"{1000 * found['rollback_p99_s']:.0f})",
            f"  from the call's start: p50 {1000 * found['p50_from_call_s']:.0f} ms, p99 "
            f"{1000 * found['p99_from_call_s']:.0f} ms; the call itself p50 "
            f"{1000 * found['call_p50_s']:.0f} ms; first loader p50 "
            f"{1000 * found['first_loader_p50_s']:.0f} ms after the return",
            f"  loader sightings before the call returned: {found['loaders_before_return']}; "
            f"moves lost (> {MOVE_TIMEOUT_S:g} s): {found['moves_lost']}",
            f"  reference (no peer): runtime.refresh_ms = {found['refresh_ms']} ms; resolve calls "
            f"per loader: {found['resolve_calls_per_loader']}",
        ]
    lines.append(f"  goal p99 <= {1000 * TARGET_SWITCH_P99_S:g} ms: {_verdict(found['met'])}")
    p99 = f"{1000 * found['p99_s']:.0f}" if "p99_s" in found else "-"
    rows.append(
        Row(
            "switch p99, all loaders (ms)",
            f"{p99} (p50 {1000 * found.get('p50_s', math.nan):.0f})",
            f"refresh {found['refresh_ms']} ms",
            f"{found.get('p99_s', math.nan) * 1000 / found['refresh_ms']:.1f}x refresh",
            f"<= {1000 * TARGET_SWITCH_P99_S:g}",
            _verdict(found["met"]),
        )
    )

    found = results["catalog"]
    lines += [
        f"\n3. catalog() over {found['skills']:,} skills (all promoted by one api.promote call in"
        f" {results['promote_all_s']} s), median of {sizes['repeats']} (ms):",
        f"  cold: new Loader + first catalog()        {found['cold']['median_ms']:9.1f}",
        f"  hot: the next catalog()                   {found['hot']['median_ms']:9.2f}",
        f"  peer: every SKILL.md, yaml SafeLoader     {found['yaml_safe_load']['median_ms']:9.1f}",
    ]
    if "yaml_csafe_load" in found:
        lines.append(
            "  peer: every SKILL.md, yaml CSafeLoader    "
            f"{found['yaml_csafe_load']['median_ms']:9.1f}"
        )
    lines += [
        f"  vs the faster peer ({found['peer_label']}): cold {found['cold_speedup']}x, hot "
        f"{found['hot_speedup']}x faster; same entries as the peer: {found['same_as_peer']}",
        f"  for information: load() of every skill {found['load_all_first_ms']:.0f} ms the first "
        f"time, {found['load_all_cached_ms']:.2f} ms cached",
    ]
    rows += [
        Row(
            "catalog cold (ms)",
            f"{found['cold']['median_ms']:.1f}",
            f"PyYAML {found['peer_ms']:.1f}",
            f"{found['cold_speedup']}x",
            "none set",
            "-",
        ),
        Row(
            "catalog hot (ms)",
            f"{found['hot']['median_ms']:.2f}",
            f"PyYAML {found['peer_ms']:.1f}",
            f"{found['hot_speedup']}x",
            "none set",
            "-",
        ),
    ]

    found = results["memory"]
    lines += [
        "  peak RSS (MiB) of a process holding a Loader, ru_maxrss / VmHWM:",
        *(
            f"    {label:<26} {found[key]['ru_maxrss_mib']:7.1f} / {found[key]['vmhwm_mib']:.1f}"
            for key, label in (
                ("bare", "bare interpreter"),
                ("after_imports", "skillstage.runtime imported"),
                ("after_catalog", "Loader + catalog()"),
                ("after_load_all", f"+ load() of {found['loaded']:,}"),
            )
        ),
        f"  peak {found['peak_mib']:.1f} MiB ({found['over_imports_mib']:.1f} over the imports); "
        f"goal < {TARGET_RSS_BYTES / 1e6:g} MB ({TARGET_RSS_BYTES / 2**20:.1f} MiB): "
        f"{_verdict(found['met'])}",
    ]
    rows.append(
        Row(
            "peak RSS, load all (MiB)",
            f"{found['peak_mib']:.1f}",
            f"imports {found['after_imports']['ru_maxrss_mib']:.1f}",
            f"+{found['over_imports_mib']:.1f}",
            f"< {TARGET_RSS_BYTES / 1e6:g} MB",
            _verdict(found["met"]),
        )
    )

    found = results["sync"]
    if not found["built"]:
        lines.append("\n4. sync: not built yet")
        rows.append(Row("sync", "not built yet", "-", "-", "touches 1", "-"))
    elif "error" in found:
        lines.append(f"\n4. sync: failed: {found['error']}")
        rows.append(Row("sync", "failed", "-", "-", "touches 1", "-"))
    else:
        lines.append(
            f"\n4. api.sync of {found['skills']:,} skills (subject {SYNC_SUBJECT}); peer: the "
            f"production folder copied by {found['peer']}:"
        )
        for key, label in (
            ("first", "into an empty directory"),
            ("unchanged", "again, nothing changed"),
            ("after_one_change", f"after {found['changed_skill']} got 1.1.0"),
        ):
            step = found[key]
            lines.append(
                f"  {label:<34} {1000 * step['seconds']:9.1f} ms, touched {step['touched']:>5}"
                f" | peer {1000 * step['peer_seconds']:9.1f} ms, touched {step['peer_touched']:>5}"
            )
        last = found["after_one_change"]
        lines.append(
            f"  after the change: updated {last['updated']}, unchanged {last['unchanged']}; "
            f"goal touches 1: {_verdict(found['met'])}"
            + ("" if found["check_ok"] else "   CHECK FAILED")
        )
        rows += [
            Row(
                "sync after 1 change (ms)",
                f"{1000 * last['seconds']:.1f}",
                f"peer {1000 * last['peer_seconds']:.1f}",
                f"{last['peer_seconds'] / last['seconds']:.1f}x",
                "none set",
                "-",
            ),
            Row(
                "sync after 1 change, dirs",
                str(last["touched"]),
                f"peer {last['peer_touched']}",
                "-",
                "touches 1",
                _verdict(found["met"]),
            ),
            Row(
                "sync first (ms)",
                f"{1000 * found['first']['seconds']:.0f}",
                f"peer {1000 * found['first']['peer_seconds']:.0f}",
                f"{found['first']['peer_seconds'] / found['first']['seconds']:.2f}x",
                "none set",
                "-",
            ),
        ]

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
