"""`skillstage check-runtime`: does every production skill load, at once, fast, in little memory,
from the cache the second time, with its files intact and no dependency cycle? (The runtime
tests the production deployment recommendations ask for before going live: missing and
corrupted skill files, circular dependencies, load timeouts, concurrent loading, caching and
memory; the memory limits are the alert table's, 75 MB warning and 100 MB critical.)

`check_runtime(project, concurrency=5)` loads every version serving in the last stage (during a
rollout, its candidate too; a skill switched off is skipped and listed) through the real
`Loader`: from `concurrency` threads sharing one loader, then in a second pass on that loader
(the cache's hit rate), and from `concurrency` worker processes, each a fresh interpreter with a
loader of its own, whose peak RSS is the memory measured (runtime/check_loads.py). Each
criterion has a status (pass, warn, fail), the value measured, its threshold and the evidence;
the verdict is the worst status.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from skillstage.config import Project, RuntimeCheckConfig
from skillstage.errors import SkillReadError, UsageError
from skillstage.runtime.check_loads import (
    Evidence,
    LoadPass,
    load_in_processes,
    load_in_threads,
    warm_up,
)
from skillstage.runtime.routing import STABLE, Resolution, RoutingTable

PASS: Final = "pass"
WARN: Final = "warn"
FAIL: Final = "fail"
_RANK = {PASS: 0, WARN: 1, FAIL: 2}
MAX_CONCURRENCY: Final = 64  # processes started at once: more is a mistake, not a test

# What the memory figure is, said in the report.
MEMORY_MEASURE: Final = (
    "peak resident memory (RSS high-water mark) of a fresh process that loaded every skill: "
    "the interpreter, skillstage and the loaded skills; the highest of the worker processes"
)


@dataclass(frozen=True)
class Criterion:
    """One runtime criterion: its status, what was measured (`value`, in `unit`), the threshold
    it was held to, and the evidence (each problem, with the skill and path when it has one)."""

    name: str
    status: str
    value: float | int | None
    unit: str
    threshold: str
    summary: str
    evidence: list[Evidence] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status,
            "value": self.value,
            "unit": self.unit,
            "threshold": self.threshold,
            "summary": self.summary,
            "evidence": [e.to_dict() for e in self.evidence],
        }


@dataclass
class RuntimeCheck:
    """What `check_runtime` found. `verdict`: the worst criterion's status."""

    stage: str
    concurrency: int
    versions: list[Resolution]
    disabled: list[str]
    criteria: list[Criterion]
    threads: LoadPass
    processes: LoadPass
    cache: dict[str, Any]
    memory: dict[str, Any]
    seconds: float

    @property
    def verdict(self) -> str:
        return max((c.status for c in self.criteria), key=_RANK.__getitem__, default=PASS)

    def criterion(self, name: str) -> Criterion:
        return next(c for c in self.criteria if c.name == name)

    def to_dict(self) -> dict[str, Any]:
        return {
            "verdict": self.verdict,
            "stage": self.stage,
            "concurrency": self.concurrency,
            "skills": [
                {
                    "name": v.name,
                    "version": v.version,
                    "digest": v.digest,
                    "arm": v.arm,
                    "path": v.path,
                }
                for v in self.versions
            ],
            "disabled": self.disabled,
            "criteria": [c.to_dict() for c in self.criteria],
            "loads": {
                "threads": self.threads.to_dict(),
                "processes": self.processes.to_dict(),
            },
            "cache": self.cache,
            "memory": self.memory,
            "seconds": round(self.seconds, 3),
        }


# -- what serves --------------------------------------------------------------------------------


def serving_versions(
    table: RoutingTable, stage: str, skill: str | None
) -> tuple[list[Resolution], list[str]]:
    """Every version serving in `stage` (a rollout's candidate beside its stable version), and
    the skills switched off there. `skill` keeps that one; a `UsageError` if it serves nothing."""
    names = table.names(stage)
    if skill is not None:
        if skill not in names:
            raise UsageError(
                f"{skill!r} is not live in {stage}: there is nothing of it to load",
                hint=(
                    f"skills live in {stage}: {', '.join(names[:20])}"
                    if names
                    else f"no skill is live in {stage} yet"
                ),
            )
        names = [skill]
    versions, disabled = [], []
    for name in names:
        route = table.route(name, stage)
        if route.disabled:
            disabled.append(name)
            continue
        versions.append(route.stable)
        if route.candidate is not None:
            versions.append(route.candidate)
    return versions, disabled


# -- the criteria -------------------------------------------------------------------------------


def _read_served(project: Project, version: Resolution) -> tuple[Evidence | None, dict[str, Any]]:
    """What is wrong with the copy `version` serves from, if anything — missing, corrupted (its
    SKILL.md unreadable or invalid), or modified (not the digest the store recorded) — and its
    frontmatter when it could be read."""
    from skillstage.skill.read import read_skill

    path = Path(version.path)
    which = "live copy" if version.arm == STABLE else "archive copy"
    label = f"{version.name} {version.version}"
    if not path.is_dir():
        problem = f"{label}: missing: its {which} {path} does not exist"
        return Evidence(problem, version.name, str(path)), {}
    if not any((path / name).is_file() for name in ("SKILL.md", "skill.md")):
        problem = f"{label}: missing: its {which} has no SKILL.md"
        return Evidence(problem, version.name, str(path / "SKILL.md")), {}
    try:
        found = read_skill(path, project.config.validation)
    except SkillReadError as exc:
        where = str(exc.path) if exc.path is not None else str(path)
        problem = f"{label}: corrupted: its {which} cannot be read: {exc.message}"
        return Evidence(problem, version.name, where), {}
    frontmatter = found.frontmatter_dict()
    if found.digest != version.digest:
        problem = (
            f"{label}: modified: its {which} holds digest {found.digest[:12]}, not "
            f"{version.digest[:12]} recorded when it was promoted"
        )
        return Evidence(problem, version.name, str(path)), frontmatter
    return None, frontmatter


def check_files(
    project: Project, versions: Sequence[Resolution]
) -> tuple[Criterion, dict[str, list[str]]]:
    """Every served copy is there, readable, and holds the digest the store recorded; and the
    dependencies each rollout candidate's copy declares (by skill name)."""
    problems, candidates = [], {}
    for version in versions:
        problem, frontmatter = _read_served(project, version)
        if problem is not None:
            problems.append(problem)
        if version.arm != STABLE and frontmatter:
            candidates[version.name] = _declared(frontmatter)
    intact = len(versions) - len(problems)
    summary = f"{intact} of {len(versions)} copies intact"
    if problems:
        summary += " (`skillstage doctor --repair` restores a live copy from the archive)"
    criterion = Criterion(
        "skill_files",
        FAIL if problems else PASS,
        len(problems),
        "problems",
        "0 missing, corrupted or modified",
        summary,
        problems,
    )
    return criterion, candidates


def _declared(frontmatter: dict[str, Any]) -> list[str]:
    wanted = frontmatter.get("dependencies")
    return [d for d in wanted if isinstance(d, str)] if isinstance(wanted, list) else []


def check_dependencies(
    table: RoutingTable,
    stage: str,
    skill: str | None,
    candidates: dict[str, list[str]] | None = None,
) -> Criterion:
    """No chain of declared dependencies among the skills serving in `stage` comes back to where
    it started (fail); a dependency that does not serve there warns. A skill's dependencies are
    its live version's, with those of a rollout's candidate (`candidates`, by name) added."""
    from skillstage.skill.checks import find_cycles

    routes = {name: table.route(name, stage) for name in table.names(stage)}
    graph = {name: _declared(route.frontmatter) for name, route in routes.items()}
    for name, more in (candidates or {}).items():
        graph[name] = [*graph.get(name, []), *(d for d in more if d not in graph.get(name, []))]
    cycles = [c for c in find_cycles(graph) if skill is None or skill in c]
    evidence = [
        Evidence(
            f"dependency cycle: {' → '.join([*cycle, cycle[0]])}",
            cycle[0],
            str(Path(routes[cycle[0]].stable.path) / "SKILL.md"),
        )
        for cycle in cycles
    ]
    absent = [
        Evidence(
            f"{name} depends on {dependency}, which is not live in {stage}",
            name,
            str(Path(routes[name].stable.path) / "SKILL.md"),
        )
        for name in ([skill] if skill is not None else sorted(graph))
        for dependency in graph.get(name, [])
        if dependency not in graph
    ]
    status = FAIL if cycles else WARN if absent else PASS
    edges = sum(len(d) for d in graph.values())
    summary = f"{len(cycles)} cycle(s) in {edges} declared dependencies of {len(graph)} skills"
    if absent:
        summary += f"; {len(absent)} dependency(ies) not live in {stage}"
    return Criterion(
        "dependencies",
        status,
        len(cycles),
        "cycles",
        f"0 cycles; every dependency live in {stage}",
        summary,
        evidence + absent,
    )


def check_loads(name: str, loads: LoadPass, timeout: float) -> Criterion:
    """Every load of the pass was done, none raised, none took longer than `timeout`."""
    times = loads.summary()
    missing = loads.expected - loads.done
    evidence = list(loads.failures)
    if missing > 0 and not evidence:
        evidence.append(Evidence(f"{missing} of {loads.expected} loads were not done"))
    p99 = times["p99_ms"]
    summary = (
        f"{loads.done} of {loads.expected} loads from {loads.workers_started} of "
        f"{loads.workers} {loads.mode}, {len(loads.failures)} failed"
    )
    return Criterion(
        name,
        FAIL if evidence or missing > 0 else PASS,
        round(p99, 3) if p99 is not None else None,
        "ms (p99)",
        f"every load done, none failed, none over {timeout:g} s",
        summary,
        evidence,
    )


def check_memory(processes: LoadPass, settings: RuntimeCheckConfig) -> Criterion:
    """The peak memory of the worker processes against the warning and critical limits."""
    warning, critical = settings.memory_warning_mb, settings.memory_critical_mb
    threshold = f"warn at {warning:g} MB, fail at {critical:g} MB"
    if not processes.peak_rss_kb:
        return Criterion(
            "memory",
            WARN,
            None,
            "MB",
            threshold,
            "not measured: no worker process finished loading",
        )
    peak = max(processes.peak_rss_kb) / 1024
    status = FAIL if peak >= critical else WARN if peak >= warning else PASS
    evidence = []
    if status != PASS:
        evidence.append(
            Evidence(
                f"a process that loaded every skill reached {peak:.1f} MB, at or over the "
                f"{critical if status == FAIL else warning:g} MB "
                f"{'critical' if status == FAIL else 'warning'} limit"
            )
        )
    return Criterion(
        "memory",
        status,
        round(peak, 1),
        "MB",
        threshold,
        f"peak RSS {peak:.1f} MB, the highest of {len(processes.peak_rss_kb)} fresh processes "
        f"that each loaded every skill ({max(processes.baseline_rss_kb) / 1024:.1f} MB before "
        "they loaded any)",
        evidence,
    )


def memory_report(processes: LoadPass) -> dict[str, Any]:
    peaks, baselines = processes.peak_rss_kb, processes.baseline_rss_kb
    peak = max(peaks) / 1024 if peaks else None
    before = max(baselines) / 1024 if baselines else None
    return {
        "measure": MEMORY_MEASURE,
        "peak_mb": round(peak, 1) if peak is not None else None,
        "before_loading_mb": round(before, 1) if before is not None else None,
        "added_by_loading_mb": (
            round(peak - before, 1) if peak is not None and before is not None else None
        ),
        "per_process_peak_mb": [round(kb / 1024, 1) for kb in peaks],
    }


def cache_pass(loader: Any, versions: Sequence[Resolution], *, timeout: float) -> dict[str, Any]:
    """A second pass over the same versions on `loader`: how many it answered from its cache.
    (One thread, held to the load timeout like the others: a load stuck in the first pass
    would be stuck here too.)"""
    before = loader.stats()
    load_in_threads(loader, versions, workers=1, timeout=timeout)
    after = loader.stats()
    # (at most one per version: a thread left behind by the first pass may still add its own)
    hits = min(after["hits"] - before["hits"], len(versions))
    # Every load not answered from the cache is a miss: one read from disk, one that failed
    # (never cached; named by the load criteria), or one that did not finish.
    misses = len(versions) - hits
    return {
        "second_pass_loads": len(versions),
        "hits": hits,
        "misses": misses,
        "hit_rate": round(hits / len(versions), 4) if versions else None,
    }


def check_cache(cache: dict[str, Any], settings: RuntimeCheckConfig) -> Criterion:
    rate = cache["hit_rate"]
    least = settings.min_cache_hit_rate
    threshold = f"at least {least:.0%} hits on the second pass"
    if rate is None:
        return Criterion("cache", PASS, None, "hit rate", threshold, "nothing to load")
    status = PASS if rate >= least else WARN
    evidence = (
        []
        if status == PASS
        else [
            Evidence(
                f"the second pass found {cache['misses']} of {cache['second_pass_loads']} "
                "loads not in the cache"
            )
        ]
    )
    return Criterion(
        "cache",
        status,
        rate,
        "hit rate",
        threshold,
        f"{cache['hits']} of {cache['second_pass_loads']} second-pass loads from the cache "
        f"({rate:.0%})",
        evidence,
    )


def check_skills(versions: Sequence[Resolution], disabled: Sequence[str], stage: str) -> Criterion:
    """Something serves: a stage with nothing live passes every other criterion vacuously."""
    summary = f"{len(versions)} version(s) of {len({v.name for v in versions})} skill(s) live"
    if disabled:
        summary += f"; switched off, not loaded: {', '.join(disabled)}"
    evidence = [] if versions else [Evidence(f"no skill serves in {stage}: nothing was loaded")]
    return Criterion(
        "skills",
        PASS if versions else WARN,
        len(versions),
        "versions",
        "at least 1",
        summary,
        evidence,
    )


# -- the check ----------------------------------------------------------------------------------


def check_runtime(
    project: Project, *, concurrency: int = 5, skill: str | None = None
) -> RuntimeCheck:
    """Load every production skill (or `skill`) from `concurrency` threads and processes at
    once, and judge the loads, the memory, the cache, the files and the dependencies."""
    from skillstage.runtime.loader import Loader

    if isinstance(concurrency, bool) or not isinstance(concurrency, int):
        raise UsageError(f"concurrency must be a whole number, not {concurrency!r}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise UsageError(
            f"concurrency must be between 1 and {MAX_CONCURRENCY}, not {concurrency}",
            hint="5 loads each skill from 5 threads and 5 processes at once",
        )
    settings = project.config.runtime_check
    timeout = settings.load_timeout_seconds
    started = time.perf_counter()
    warm_up()
    with Loader(project) as loader:
        stage = loader.stage
        table = loader.table
        versions, disabled = serving_versions(table, stage, skill)
        files, candidates = check_files(project, versions)
        criteria = [
            check_skills(versions, disabled, stage),
            files,
            check_dependencies(table, stage, skill, candidates),
        ]
        threads = load_in_threads(loader, versions, workers=concurrency, timeout=timeout)
        cache = cache_pass(loader, versions, timeout=timeout)
    processes = load_in_processes(project, stage, versions, workers=concurrency, timeout=timeout)
    criteria += [
        check_loads("thread_loads", threads, timeout),
        check_loads("process_loads", processes, timeout),
        check_memory(processes, settings),
        check_cache(cache, settings),
    ]
    return RuntimeCheck(
        stage=stage,
        concurrency=concurrency,
        versions=versions,
        disabled=disabled,
        criteria=criteria,
        threads=threads,
        processes=processes,
        cache=cache,
        memory=memory_report(processes),
        seconds=time.perf_counter() - started,
    )
