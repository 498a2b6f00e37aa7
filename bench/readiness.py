"""How fast `status` answers on a big store: 10 million executions over 1,000 skills.

The requirement: "a store with 10 million executions over 1,000 skills; `status` for one skill
answers in < 50 ms".

The store (SQLite) holds 1,000 skills, each with version 1.0.0 registered, 20 days in prototype,
then 10 days (until the build) in staged, and 10,000 executions of that version's digest spread
evenly over the 30 days: 6,667 during the prototype stay (the regression baseline), 3,333 since.
The skills' executions are interleaved in time, as an inbox ingested often leaves them, so one
skill's rows are spread over the whole table (the worst case for reading them back). Ids are
time-ordered (UUIDv7 layout), timestamps in the store's text form. The rows go in straight
through `sqlite3` (executemany, big transactions, the (skill_id, digest, timestamp) index
dropped during the load and created again after it with the store's own DDL): building takes
minutes, so the store is kept in `~/.cache/skillstage-bench/readiness/<key>/` and reused while
the key (the bench's layout, the schema revision, the sizes and the queried skill's digest) is
the same (the store ages: a week after the build, the 7d window is empty; `--rebuild`). The
queried skill (the middle one) is on disk in staging, with SKILL.md, execute.sh and test.sh; the
other skills exist in the store only.

Timed, in-process and warm (one call first, then interleaved rounds, a new `Store.open` per call
as the API does): `api.readiness(project, name)`, the function behind `skillstage status`, with
the staged → production gates ["metrics"] and with the default static gates plus "metrics" (their
`tests` gate runs test.sh in a subprocess); `api.skill_metrics(…, timeframe="7d")` and "all"; and,
to show how much of it is the database, the digest's rows fetched alone (`execution_rows`). For
information: `skillstage status NAME --json` as a new process, both gate settings.

Run: `.venv/bin/python bench/readiness.py [--executions N] [--skills M] [--rounds N]
[--process-rounds N] [--rebuild] [--json]`. The first full run builds the store (several
minutes, ~3.5 GB); later ones take about a minute. Targets are reported, not asserted: the exit
status is 0.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import queue
import random
import resource
import shutil
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

from skillstage import api
from skillstage.config import DEFAULT_CONFIG_TOML, STATIC_GATES, Project, load_config_file
from skillstage.process import child_environment, run
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import metrics as store_metrics
from skillstage.store.executions import EXECUTION_COLUMNS
from skillstage.store.schema import SCHEMA_REVISION

# Bump when the store the bench builds changes (layout, values, registrations): a new cache key.
LAYOUT = "2"
EXECUTIONS = 10_000_000
SKILLS = 1_000
VERSION = "1.0.0"
DAYS = 30  # executions are spread over the 30 days before the build
PROTOTYPE_DAYS = 20  # the first 20 of them in prototype, the rest in staged
TARGET_MS = 50.0  # `status` for one skill, in-process, warm: median
ROUNDS = 20
PROCESS_ROUNDS = 5
CHUNK = 100_000  # rows generated and inserted at a time
COMMIT_ROWS = 1_000_000
PAYLOADS = 4096  # distinct execution bodies drawn from
COMMAND_TIMEOUT = 120.0
GATE_SETTINGS = {
    "metrics": ["metrics"],
    "default+metrics": [*STATIC_GATES, "metrics"],
}
DEFAULT_GATES_LINE = f"gates = {json.dumps(STATIC_GATES)}"


def skill_name(index: int) -> str:
    return f"skill-{index:04d}"


# -- the skill on disk ---------------------------------------------------------------------------


def write_skill(directory: Path, name: str) -> None:
    """The queried skill, as in seed 002's demo: SKILL.md (with its own time limit), execute.sh
    and test.sh. Always the same bytes, so its digest (part of the cache key) stays put."""
    directory.mkdir(parents=True)
    (directory / "SKILL.md").write_text(
        f"---\nname: {name}\nversion: {VERSION}\ndescription: Flag chat messages that are spam."
        " Use when moderating a live chat.\nauthor: Bench Author\nmetadata:\n"
        '  max_execution_time_ms: "2000"\n---\n# Spam filter\n\n'
        "Check the blocklist, then the links, then decide `spam` or `allow`.\n"
    )
    for file, text in (
        ("execute.sh", '#!/bin/bash\necho \'{"decision": "allow"}\'\n'),
        ("test.sh", "#!/bin/bash\n./execute.sh | grep -q decision && echo 'tests passed'\n"),
    ):
        (directory / file).write_text(text)
        (directory / file).chmod(0o755)


# -- the store ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layout:
    """What the store holds, and when: everything the build and the figures depend on."""

    executions: int
    skills: int
    queried: str  # the name of the skill whose status is timed
    digest: str  # its digest (on disk and in the store)
    frontmatter: dict[str, Any]

    @property
    def key(self) -> str:
        return (
            f"v{LAYOUT}-schema{SCHEMA_REVISION}-{self.executions}x{self.skills}-{self.digest[:12]}"
        )

    def digest_of(self, index: int) -> str:
        name = skill_name(index)
        if name == self.queried:
            return self.digest
        return hashlib.sha256(f"{name} {VERSION}".encode()).hexdigest()


def _payloads(rng: random.Random) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """Execution bodies (the stored columns after `timestamp`), as seed 002's demo writes them:
    fidelity mostly 1.0, quality mostly 1.0, 0.8-1.8 s, a few flags. The same bodies before and
    after the move to staged (no real regression), but a rare critical failure only before it,
    so that the staged version can pass its gate."""
    bodies = []
    for _ in range(PAYLOADS):
        bodies.append(
            (
                rng.choice((1.0, 1.0, 1.0, 0.67)),
                rng.choice((1.0,) * 9 + (0.0,)),
                round(rng.uniform(800.0, 1800.0), 1),
                rng.randrange(4),
                rng.randrange(2),
                rng.random() < 0.01,
                rng.random() < 0.01,
                rng.random() < 0.01,
                rng.random() < 0.001,
                f"user-{rng.randrange(500)}",
                '["bench"]' if rng.random() < 0.2 else None,
                False,  # in use, not a benchmark run
            )
        )
    return bodies, [(*body[:8], False, *body[9:]) for body in bodies]


def _rows(
    layout: Layout, skill_ids: list[int], start: dt.datetime, switch: dt.datetime
) -> Iterator[list[tuple[Any, ...]]]:
    """The executions in time order, CHUNK at a time: row i belongs to skill i mod M."""
    n, m = layout.executions, layout.skills
    span_us = DAYS * 86_400 * 1_000_000
    naive_start = start.replace(tzinfo=None)
    start_ms = int(start.timestamp() * 1000)
    switch_us = int((switch - start).total_seconds() * 1_000_000)
    digests = [layout.digest_of(index) for index in range(m)]
    rng = random.Random(2)
    prototype, staged = _payloads(rng)
    minute_us = 60_000_000
    minute, prefix = -1, ""
    for low in range(0, n, CHUNK):
        chunk = []
        draw = random.Random(low).getrandbits
        for i in range(low, min(n, low + CHUNK)):
            us = i * span_us // n
            skill = i % m
            if us // minute_us != minute:
                # Formatting a datetime per row would be a third of the build's Python time.
                minute = us // minute_us
                at = naive_start + dt.timedelta(microseconds=minute * minute_us)
                prefix = at.isoformat(" ", "microseconds")[:17]  # "YYYY-MM-DD HH:MM:"
            seconds, micro = divmod(us - minute * minute_us, 1_000_000)
            stamp = f"{start_ms + us // 1000:012x}"
            chunk.append(
                (
                    # UUIDv7 layout: milliseconds first, then the row number (unique, ascending)
                    f"{stamp[:8]}-{stamp[8:]}-7000-8000-{i:012x}",
                    skill_ids[skill],
                    VERSION,
                    digests[skill],
                    f"{prefix}{seconds:02d}.{micro:06d}",
                    *(prototype if us < switch_us else staged)[draw(12)],
                )
            )
        yield chunk


def _register(store: Store, layout: Layout, start: dt.datetime, switch: dt.datetime) -> list[int]:
    """Every skill's version, its prototype stay and its staged stay; the skills' ids in order."""
    skill_ids = []
    with store.atomic() as tx:
        for index in range(layout.skills):
            name = skill_name(index)
            frontmatter = (
                layout.frontmatter
                if name == layout.queried
                else {"name": name, "version": VERSION, "description": f"Bench skill {index}."}
            )
            record = tx.ensure_version(
                name,
                VERSION,
                layout.digest_of(index),
                path=f".claude/skills/prototype/{name}",
                frontmatter=frontmatter,
                at=start,
            )
            tx.enter_stage(
                record.version_id, "prototype", f".claude/skills/prototype/{name}", at=start
            )
            tx.leave_stage(name, "prototype", at=switch)
            tx.enter_stage(record.version_id, "staged", f".claude/skills/staging/{name}", at=switch)
            skill_ids.append(record.skill_id)
    return skill_ids


def build_store(path: Path, layout: Layout, say: Callable[[str], None]) -> dict[str, Any]:
    """Create the store at `path` (schema from `Store.open`) and fill it; what the build took."""
    built_at = dt.datetime.now(dt.UTC)
    # On a whole minute: the rows' timestamps are formatted a minute at a time.
    start = (built_at - dt.timedelta(days=DAYS)).replace(second=0, microsecond=0)
    switch = start + dt.timedelta(days=PROTOTYPE_DAYS)
    seconds: dict[str, float] = {}
    began = time.perf_counter()
    with Store.open(f"sqlite:///{path}") as store:
        skill_ids = _register(store, layout, start, switch)
    seconds["register"] = time.perf_counter() - began

    db = sqlite3.connect(path, isolation_level=None)
    try:
        # A throw-away build: no journal, no flushes (an interrupted build is deleted whole).
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute("PRAGMA cache_size = -262144")  # 256 MiB
        db.execute("PRAGMA threads = 2")  # CREATE INDEX's sorter may use a helper thread
        indexes = db.execute(
            "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND tbl_name = 'execution'"
            " AND sql IS NOT NULL"
        ).fetchall()
        for name, _ in indexes:
            db.execute(f'DROP INDEX "{name}"')
        columns = ", ".join(f'"{c}"' for c in EXECUTION_COLUMNS)
        insert = (
            f"INSERT INTO execution ({columns}) VALUES ({', '.join('?' * len(EXECUTION_COLUMNS))})"
        )
        began = time.perf_counter()
        done = 0
        db.execute("BEGIN")
        for chunk in _prefetched(_rows(layout, skill_ids, start, switch)):
            db.executemany(insert, chunk)
            done += len(chunk)
            if done % COMMIT_ROWS == 0 or done == layout.executions:
                db.execute("COMMIT")
                say(
                    f"  {done:,} rows ({done / (time.perf_counter() - began):,.0f}/s)"
                    if done < layout.executions
                    else f"  {done:,} rows"
                )
                db.execute("BEGIN")
        db.execute("COMMIT")
        seconds["rows"] = time.perf_counter() - began
        began = time.perf_counter()
        for name, sql in indexes:
            say(f"  creating {name} …")
            db.execute(sql)
        seconds["index"] = time.perf_counter() - began
        db.execute("PRAGMA journal_mode = WAL")  # as the store keeps its file
        after = dict(
            db.execute(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                " AND tbl_name = 'execution' AND sql IS NOT NULL"
            ).fetchall()
        )
        if after != dict(indexes):
            raise SystemExit(f"bench build: the execution table's indexes changed: {after}")
        total = db.execute("SELECT count(*) FROM execution").fetchone()[0]
    finally:
        db.close()
    if total != layout.executions:
        raise SystemExit(f"bench build: {total:,} rows stored, {layout.executions:,} meant")
    seconds["total"] = sum(seconds.values())
    return {
        "built_at": built_at.isoformat(),
        "switch_at": switch.isoformat(),
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "bytes": path.stat().st_size,
    }


def _prefetched(chunks: Iterator[list[tuple[Any, ...]]]) -> Iterator[list[tuple[Any, ...]]]:
    """`chunks`, generated on a second thread: sqlite3 releases the GIL while it writes, so
    generating the next chunk overlaps inserting this one."""
    pipe: queue.Queue[list[tuple[Any, ...]] | BaseException | None] = queue.Queue(maxsize=2)
    stop = threading.Event()

    def produce() -> None:
        try:
            for chunk in chunks:
                while not stop.is_set():
                    try:
                        pipe.put(chunk, timeout=0.5)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            pipe.put(None)
        except BaseException as exc:
            pipe.put(exc)

    thread = threading.Thread(target=produce, name="bench-rows", daemon=True)
    thread.start()
    try:
        while (item := pipe.get()) is not None:
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()


def cached_store(
    cache: Path, layout: Layout, *, rebuild: bool, say: Callable[[str], None]
) -> tuple[Path, dict[str, Any], bool]:
    """The store for `layout`: from the cache, or built into it. (path, build facts, built now)."""
    entry = cache / layout.key
    facts_file = entry / "build.json"
    if rebuild:
        shutil.rmtree(entry, ignore_errors=True)
    if facts_file.is_file():
        return entry / "state.db", json.loads(facts_file.read_text()), False
    cache.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(cache).free
    needed = 400 * layout.executions  # ~350 bytes a row with both indexes, and some room
    if free < needed:
        raise SystemExit(
            f"bench build: {free / 1e9:.1f} GB free under {cache}, ~{needed / 1e9:.1f} GB needed;"
            " pass --cache-dir elsewhere or fewer --executions"
        )
    say(
        f"building the store ({layout.executions:,} executions over {layout.skills:,} skills) "
        f"in {entry} (once) …"
    )
    partial_dir = Path(tempfile.mkdtemp(prefix=f"{layout.key}.partial-", dir=cache))
    try:
        facts = build_store(partial_dir / "state.db", layout, say)
        facts.update(executions=layout.executions, skills=layout.skills, skill=layout.queried)
        facts["digest"] = layout.digest
        (partial_dir / "build.json").write_text(json.dumps(facts, indent=2) + "\n")
        partial_dir.rename(entry)
    except BaseException:
        shutil.rmtree(partial_dir, ignore_errors=True)
        raise
    return entry / "state.db", facts, True


# -- projects ----------------------------------------------------------------------------------


def new_project(root: Path, database: Path, gates: list[str], skill_template: Path) -> Project:
    """A project on the cached store whose staged → production transition has `gates`, with the
    queried skill in staging."""
    text = DEFAULT_CONFIG_TOML.replace(
        '# database = ".skillstage/state.db"', f"database = {json.dumps(str(database))}"
    )
    marker = 'to = "production"\n' + DEFAULT_GATES_LINE
    if marker not in text:
        raise SystemExit("bench set-up: the default config's staged → production gates moved")
    text = text.replace(marker, f'to = "production"\ngates = {json.dumps(gates)}')
    root.mkdir(parents=True)
    (root / "skillstage.toml").write_text(text)
    project = load_config_file(root / "skillstage.toml")
    for stage in project.config.stages:
        project.stage_root(stage).mkdir(parents=True, exist_ok=True)
    project.state_dir.mkdir(parents=True, exist_ok=True)
    name = skill_template.name
    shutil.copytree(skill_template, project.stage_path("staged", name))
    return project


# -- figures -----------------------------------------------------------------------------------


@dataclass
class Figures:
    """Seconds per call of one operation: wall clock, and CPU time (this process's threads and
    the children it waited for: a figure that waiting for a busy CPU does not inflate)."""

    samples: list[float]
    cpu: list[float]

    @property
    def median_ms(self) -> float:
        return 1000 * statistics.median(self.samples)

    @property
    def p95_ms(self) -> float:
        ordered = sorted(self.samples)
        return 1000 * ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": len(self.samples),
            "median_ms": round(self.median_ms, 2),
            "p95_ms": round(self.p95_ms, 2),
            "min_ms": round(1000 * min(self.samples), 2),
            "cpu_median_ms": round(1000 * statistics.median(self.cpu), 2),
        }


def _cpu() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def _timed(call: Callable[[], Any]) -> tuple[float, float, Any]:
    """(wall seconds, CPU seconds, what `call` returned)."""
    cpu, started = _cpu(), time.perf_counter()
    result = call()
    return time.perf_counter() - started, _cpu() - cpu, result


def _fetch_rows(project: Project, name: str, digest: str) -> int:
    """The digest's executions read the way the metrics gate reads them, and nothing else."""
    with Store.open(project.database_url) as store, store.reading() as tx:
        skill_id = tx.skill_id(name)
        assert skill_id is not None
        return store_metrics.execution_rows(tx, skill_id, digest=digest).count


# -- in-process --------------------------------------------------------------------------------


def in_process(projects: dict[str, Project], name: str, digest: str, rounds: int) -> dict[str, Any]:
    """One call of each operation first (imports, page cache), then `rounds` interleaved rounds."""
    metrics_project = projects["metrics"]
    calls: dict[str, Callable[[], Any]] = {
        **{f"readiness {key}": partial(api.readiness, p, name) for key, p in projects.items()},
        "skill_metrics 7d": partial(api.skill_metrics, metrics_project, name, timeframe="7d"),
        "skill_metrics all": partial(api.skill_metrics, metrics_project, name, timeframe="all"),
        "execution_rows": partial(_fetch_rows, metrics_project, name, digest),
    }
    first: dict[str, float] = {}
    outcome: dict[str, Any] = {}
    for label, call in calls.items():
        first[label], _, outcome[label] = _timed(call)
    samples: dict[str, Figures] = {label: Figures([], []) for label in calls}
    for index in range(rounds):
        order = list(calls)
        if index % 2:
            order.reverse()
        for label in order:
            seconds, cpu, _ = _timed(calls[label])
            samples[label].samples.append(seconds)
            samples[label].cpu.append(cpu)
    results: dict[str, Any] = {}
    for label in calls:
        results[label] = {
            **samples[label].to_dict(),
            "first_call_ms": round(1000 * first[label], 2),
            **_describe(outcome[label]),
        }
    return results


def _describe(outcome: Any) -> dict[str, Any]:
    """What a call answered, briefly: to show it read what it should have."""
    if isinstance(outcome, int):
        return {"rows": outcome}
    data = outcome.to_dict()
    if "gates" not in data:
        return {"rows": data["count"]}
    metrics = next((g for g in data["gates"] if g["gate"] == "metrics"), None)
    criteria = {c["name"]: c["actual"] for c in (metrics or {}).get("criteria") or []}
    return {
        "ready": data["ready"],
        "error": data["error"],
        "gates": {g["gate"]: g["status"] for g in data["gates"]},
        "rows": criteria.get("executions"),
        "regression": next((v for k, v in criteria.items() if k.startswith("no regression")), None),
    }


# -- whole process -----------------------------------------------------------------------------


def whole_process(projects: dict[str, Project], name: str, rounds: int) -> dict[str, Any]:
    """`skillstage status NAME --json` as a new process per call (exit 0 ready, 1 not), and
    `skillstage --version` (the start-up floor), interleaved; one round first, not counted."""
    python = [sys.executable, "-m", "skillstage"]
    env = child_environment({"NO_COLOR": "1"})
    _compile_bytecode()
    calls = {
        **{
            f"status {key}": (p, [*python, "status", name, "--json"]) for key, p in projects.items()
        },
        "startup": (projects["metrics"], [*python, "--version"]),
    }
    samples: dict[str, Figures] = {label: Figures([], []) for label in calls}
    for index in range(1 + rounds):
        order = list(calls)
        if index % 2:
            order.reverse()
        for label in order:
            project, args = calls[label]
            seconds, cpu, done = _timed(
                partial(run, args, cwd=project.root, timeout=COMMAND_TIMEOUT, env=env)
            )
            if done.timed_out or done.returncode not in (0, 1):
                raise SystemExit(
                    f"`{' '.join(args)}` failed ({done.returncode}):\n{done.output_tail(10)}"
                )
            if index > 0:
                samples[label].samples.append(seconds)
                samples[label].cpu.append(cpu)
    return {label: figures.to_dict() for label, figures in samples.items()}


def _compile_bytecode() -> None:
    """Write skillstage's .pyc files, as installing a package does (see bench/promote.py)."""
    package = Path(api.__file__).parent
    done = run(
        [sys.executable, "-m", "compileall", "-q", str(package)],
        cwd=package,
        timeout=COMMAND_TIMEOUT,
    )
    if not done.ok:
        raise SystemExit(f"compileall failed: {done.output_tail(5)}")


def query_plan(database: Path) -> list[str]:
    """SQLite's plan for the metrics gate's query (`execution_rows` with a digest)."""
    db = sqlite3.connect(f"file:{database}?mode=ro", uri=True)
    try:
        rows = db.execute(
            "EXPLAIN QUERY PLAN SELECT pattern_fidelity, outcome_quality, execution_time_ms,"
            ' exception, false_positive, false_negative, critical, "timestamp" FROM execution'
            " WHERE skill_id = 1 AND digest = 'x' ORDER BY \"timestamp\""
        ).fetchall()
    finally:
        db.close()
    return [row[-1] for row in rows]


# -- main --------------------------------------------------------------------------------------


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "skillstage-bench" / "readiness"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--executions", type=int, default=EXECUTIONS, help=f"executions ({EXECUTIONS:,})"
    )
    parser.add_argument("--skills", type=int, default=SKILLS, help=f"skills ({SKILLS:,})")
    parser.add_argument("--rounds", type=int, default=ROUNDS, help=f"in-process rounds ({ROUNDS})")
    parser.add_argument(
        "--process-rounds",
        type=int,
        default=PROCESS_ROUNDS,
        help=f"whole-process rounds ({PROCESS_ROUNDS}; 0 skips them)",
    )
    parser.add_argument(
        "--cache-dir",
        type=Path,
        default=_cache_dir(),
        help="where built stores are kept (default: ~/.cache/skillstage-bench/readiness)",
    )
    parser.add_argument("--rebuild", action="store_true", help="build the store again")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(argv)
    if options.skills < 1 or options.executions < options.skills:
        parser.error("--skills must be at least 1 and --executions at least --skills")
    if options.rounds < 1 or options.process_rounds < 0:
        parser.error("--rounds must be at least 1, --process-rounds at least 0")
    for key in [k for k in os.environ if k.startswith("SKILLSTAGE_")]:
        del os.environ[key]  # the bench's projects name their store in their config
    say: Callable[[str], None] = (lambda _: None) if options.json else partial(print, flush=True)
    name = skill_name(options.skills // 2)
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }

    with tempfile.TemporaryDirectory(prefix="skillstage-bench-readiness-") as scratch:
        root = Path(scratch)
        template = root / "template" / name
        write_skill(template, name)
        skill = read_skill(template)
        layout = Layout(
            options.executions, options.skills, name, skill.digest, skill.frontmatter_dict()
        )
        database, facts, built = cached_store(
            options.cache_dir, layout, rebuild=options.rebuild, say=say
        )
        built_at = dt.datetime.fromisoformat(facts["built_at"])
        results["store"] = {
            "path": str(database),
            "built_now": built,
            "age_hours": round((dt.datetime.now(dt.UTC) - built_at).total_seconds() / 3600, 1),
            "per_skill": options.executions // options.skills,
            "query_plan": query_plan(database),
            **facts,
        }
        projects = {
            key: new_project(root / f"project-{key}", database, gates, template)
            for key, gates in GATE_SETTINGS.items()
        }
        say(f"in-process: {options.rounds} interleaved rounds …")
        results["in_process"] = in_process(projects, name, skill.digest, options.rounds)
        if options.process_rounds:
            say(f"whole process: {options.process_rounds} interleaved rounds …")
            results["whole_process"] = whole_process(projects, name, options.process_rounds)

    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    results["target_ms"] = TARGET_MS
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    return 0


def render(results: dict[str, Any]) -> str:
    def row(label: str, figures: dict[str, Any], target: bool) -> str:
        verdict = ""
        if target:
            verdict = f"< {TARGET_MS:g} ms  " + (
                "pass" if figures["median_ms"] < TARGET_MS else "FAIL"
            )
        return (
            f"  {label:<44} {figures['median_ms']:8.1f} {figures['p95_ms']:8.1f} "
            f"{figures['min_ms']:8.1f} {figures['cpu_median_ms']:8.1f}   {verdict}"
        )

    store = results["store"]
    seconds = store["seconds"]
    lines = [
        f"\nstore: {store['executions']:,} executions over {store['skills']:,} skills "
        f"({store['per_skill']:,} each), {store['bytes'] / 1e9:.2f} GB, built "
        f"{'now' if store['built_now'] else str(store['age_hours']) + ' h ago'} in "
        f"{seconds['total']:.0f} s (register {seconds['register']:.0f} s, rows "
        f"{seconds['rows']:.0f} s, index {seconds['index']:.0f} s)",
        f"  {store['path']}",
        f"  query plan: {'; '.join(store['query_plan'])}",
        *(
            [
                f"  note: built {store['age_hours'] / 24:.1f} days ago, so the 7d window holds "
                "fewer executions than it did (--rebuild renews the store)"
            ]
            if store["age_hours"] > 24
            else []
        ),
        f"\n{'':<46} {'median':>8} {'p95':>8} {'min':>8} {'CPU med':>8}   target (ms)",
        f"in-process, warm, skill {store['skill']}:",
    ]
    figures = results["in_process"]
    for key, gates in GATE_SETTINGS.items():
        found = figures[f"readiness {key}"]
        title = '["metrics"]' if gates == ["metrics"] else "default + metrics"
        lines.append(row(f"readiness, gates {title}", found, target=True))
    for key in ("skill_metrics 7d", "skill_metrics all"):
        lines.append(row(f"{key} ({figures[key]['rows']:,} rows)", figures[key], target=False))
    lines.append(
        row(
            f"of which: the digest's rows ({figures['execution_rows']['rows']:,})",
            figures["execution_rows"],
            target=False,
        )
    )
    if "whole_process" in results:
        process = results["whole_process"]
        lines.append("whole process (a new process per call), for information:")
        for key, gates in GATE_SETTINGS.items():
            title = '["metrics"]' if gates == ["metrics"] else "default + metrics"
            lines.append(row(f"skillstage status --json, {title}", process[f"status {key}"], False))
        lines.append(row("skillstage --version (start-up)", process["startup"], target=False))
    lines.append("answers (first call in-process, ms):")
    for key in GATE_SETTINGS:
        found = figures[f"readiness {key}"]
        lines.append(
            f"  {key}: ready={found['ready']} gates={found['gates']} rows read={found['rows']}"
            f" regression={found['regression']!r} first call {found['first_call_ms']:.0f} ms"
        )
    lines.append(
        f"{results['cpus']} CPUs; load average {results['load_average_at_start']} at the start, "
        f"{results['load_average_at_end']} at the end"
    )
    met = figures["readiness metrics"]["median_ms"] < TARGET_MS
    lines.append(
        f"target: status for one skill < {TARGET_MS:g} ms (in-process median, gates "
        f'["metrics"]): ' + ("met" if met else "NOT met")
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
