"""How fast ingestion is: a million execution records from the inbox into a fresh SQLite store,
next to the sqlite3 shell's `.import` of the same rows.

Two inboxes of the same size. "time-ordered": 100 per-skill files `<skill>_executions.jsonl` as
the product writes them, ids from `new_execution_id()` (time-ordered UUIDs), the skills' records
interleaved in time as concurrent writers leave them (so each file's ids, sorted, span the whole
run). "random": one file of all skills' records interleaved, with random uuid4 ids: the worst
case for the primary key's index.

Each ingestion is `skillstage metrics ingest --path <inbox> --json` run as a user runs it, in a
project whose store is a fresh copy of an empty one; its time is the whole process's, from its
start to its exit (the ingestion call's own time, which the command prints, is shown beside it),
its CPU time that of the process and the reading process it starts (`os.wait4`'s rusage), and
its peak RSS that of the two together (their resident sets summed every 10 ms). The same rows,
as the store keeps them, are written as CSV and loaded with `/usr/bin/sqlite3`'s `.import` (one
transaction, the process's time from start to exit too), into a copy of the same empty store
(the store's own `execution` table: its primary key on execution_id, its indexes and its
foreign key, checked row by row) with the settings ingestion writes with (WAL, synchronous
NORMAL, a 64 MiB page cache, the log checkpointed at 256 MiB), and, for information, into a
bare table with the same columns and no key or index. Contenders take turns within each round
(the order rotates) and the best of the rounds counts: a slow spell on a shared machine hits
every contender alike.

Run: `.venv/bin/python bench/ingest.py [--records N] [--rounds N] [--json]`.
Targets are reported, not asserted: the exit status is 0 (1 when a run ingests wrong counts).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import datetime as dt
import hashlib
import io
import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import msgspec

from skillstage.metrics.record import new_execution_id
from skillstage.process import child_environment
from skillstage.store import Store
from skillstage.store.executions import BULK_CHECKPOINT_BYTES, EXECUTION_COLUMNS

SKILLS = 100
VERSIONS_PER_SKILL = 3
SQLITE_SHELL = "/usr/bin/sqlite3"
TARGET_RECORDS_PER_SECOND = 300_000
TARGET_RATIO = 1.25  # skillstage's time at most this many times .import's (indexed table)
RSS_LIMIT_MIB = 300
CHILD_TIMEOUT = 600.0
PAYLOADS = 4096  # distinct record bodies
SAMPLE_ROWS = 2000  # rows compared between the store and the .import table
# What `Store.bulk_writes` and `bulk_inserts` set (and the store file keeps: WAL), so .import runs
# as ingestion does. (Its one transaction's log is checkpointed when it closes, either way.)
SHELL_SETTINGS = (
    "PRAGMA synchronous = NORMAL",
    "PRAGMA cache_size = -65536",
    f"PRAGMA wal_autocheckpoint = {BULK_CHECKPOINT_BYTES // 4096}",
)

_ENCODER = msgspec.json.Encoder()
_START = dt.datetime(2026, 11, 1)  # naive UTC: the records are written with a Z


# -- the inboxes -------------------------------------------------------------------------------


@dataclass
class Scenario:
    """One inbox, and the same rows as CSV in the order ingestion reads them."""

    name: str
    title: str
    inbox: Path
    csv: Path
    records: int
    skill_ids: dict[str, int]  # as ingestion registers them: in the order it meets them
    sample: list[str] = field(default_factory=list)  # execution ids to compare


def _skill_names() -> list[str]:
    return [f"skill-{index:03d}" for index in range(SKILLS)]


_VERSIONS = {
    skill: [
        (f"1.{minor}.0", hashlib.sha256(f"{skill} 1.{minor}.0".encode()).hexdigest())
        for minor in range(VERSIONS_PER_SKILL)
    ]
    for skill in _skill_names()
}


def _payloads(rng: random.Random) -> list[tuple[bytes, str]]:
    """Record bodies after `digest`, as JSON (`,"pattern_fidelity":…` up to the closing brace)
    and as CSV (the stored columns after `timestamp`). A pool of them is drawn from: the values
    repeat, which costs ingestion nothing, and generating a million records stays quick."""
    bodies = []
    for _ in range(PAYLOADS):
        followed: int | list[str] = (
            [f"p{n}" for n in range(rng.randrange(6))] if rng.random() < 0.2 else rng.randrange(12)
        )
        body: dict[str, Any] = {
            "pattern_fidelity": round(rng.random(), 3),
            "outcome_quality": round(rng.random(), 3),
            "execution_time_ms": round(rng.uniform(20, 20_000), 1),
            # seed 002's scorer writes lists of pattern ids, other writers counts
            "patterns_followed": followed,
            "patterns_missed": rng.randrange(4),
            "exception": rng.random() < 0.02,
            "false_positive": rng.random() < 0.01,
            "false_negative": rng.random() < 0.01,
            "critical": rng.random() < 0.005,
            "subject": f"user-{rng.randrange(5000)}",
        }
        if rng.random() < 0.1:
            body["tags"] = {"model": rng.choice(("opus", "sonnet", "haiku")), "channel": "cli"}
        stored = [
            *(body[key] for key in ("pattern_fidelity", "outcome_quality", "execution_time_ms")),
            len(followed) if isinstance(followed, list) else followed,
            body["patterns_missed"],
            *(int(body[key]) for key in ("exception", "false_positive", "false_negative")),
            int(body["critical"]),
            body["subject"],
            _ENCODER.encode(body["tags"]).decode() if "tags" in body else "",
            0,  # benchmark: no record here is tagged source=eval
        ]
        text = io.StringIO()
        csv.writer(text, lineterminator="\n").writerow(stored)
        bodies.append((b"," + _ENCODER.encode(body)[1:], text.getvalue()))
    return bodies


class _Writer:
    """Writes records as JSON lines to inbox files and, as the store keeps them, to one CSV file
    in the order ingestion reads the records."""

    def __init__(self, path: Path, count: int, rng: random.Random) -> None:
        self.csv = path
        self.skill_ids: dict[str, int] = {}
        self.sample: list[str] = []
        self._count = count
        self._step = 30 * 24 * 3600 * 1_000_000 // count  # a month of records, microseconds
        self._every = max(1, count // SAMPLE_ROWS)
        self._rng = rng
        self._payloads = _payloads(rng)
        self._rows: list[str] = []
        self._handle = path.open("w")

    def lines(self, records: Sequence[tuple[int, str, str]]) -> bytes:
        """The JSON lines of (index in time, execution id, skill) records; their CSV rows are
        written."""
        random_ = self._rng.random
        payloads, step, every = self._payloads, self._step, self._every
        out = []
        rows = self._rows
        for index, execution_id, skill in records:
            skill_id = self.skill_ids.setdefault(skill, len(self.skill_ids) + 1)
            version, digest = _VERSIONS[skill][min(int(random_() * 4), VERSIONS_PER_SKILL - 1)]
            body, row = payloads[int(random_() * PAYLOADS)]
            stamp = (
                _START + dt.timedelta(microseconds=index * step + int(random_() * step))
            ).isoformat(" ", "microseconds")
            out.append(
                f'{{"execution_id":"{execution_id}","timestamp":"{stamp[:10]}T{stamp[11:]}Z",'
                f'"skill":"{skill}","version":"{version}","digest":"{digest}"'.encode()
                + body
            )
            rows.append(f"{execution_id},{skill_id},{version},{digest},{stamp},{row}")
            if index % every == 0:
                self.sample.append(execution_id)
        if len(rows) >= 10_000:
            self._handle.write("".join(rows))
            rows.clear()
        return b"\n".join(out) + b"\n" if out else b""

    def close(self) -> None:
        self._handle.write("".join(self._rows))
        self._handle.close()


def generate(root: Path, count: int, seed: int) -> list[Scenario]:
    """Both inboxes (and their CSV files) under `root`."""
    rng = random.Random(seed)
    skills = _skill_names()
    scenarios = []

    # Per-skill files, time-ordered ids: what concurrent `record_execution` calls leave behind.
    # The ids are made in time order first, then each file is written in turn.
    inbox = root / "time-ordered" / "inbox"
    inbox.mkdir(parents=True)
    by_skill: dict[str, list[tuple[int, str, str]]] = {skill: [] for skill in skills}
    for index in range(count):
        skill = skills[index % SKILLS] if rng.random() < 0.5 else rng.choice(skills)
        by_skill[skill].append((index, new_execution_id(), skill))
    writer = _Writer(inbox.parent / "rows.csv", count, rng)
    for skill in skills:  # in the order ingestion reads the files
        (inbox / f"{skill}_executions.jsonl").write_bytes(writer.lines(by_skill[skill]))
    writer.close()
    scenarios.append(
        Scenario(
            "time-ordered",
            f"time-ordered ids, {SKILLS} per-skill files",
            inbox,
            writer.csv,
            count,
            writer.skill_ids,
            writer.sample,
        )
    )
    del by_skill

    # One file, every skill's records interleaved, random ids.
    inbox = root / "random" / "inbox"
    inbox.mkdir(parents=True)
    writer = _Writer(inbox.parent / "rows.csv", count, rng)
    with (inbox / "mixed_executions.jsonl").open("wb") as handle:
        for start in range(0, count, 10_000):
            handle.write(
                writer.lines(
                    [
                        (
                            index,
                            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
                            rng.choice(skills),
                        )
                        for index in range(start, min(count, start + 10_000))
                    ]
                )
            )
    writer.close()
    scenarios.append(
        Scenario(
            "random",
            "random uuid4 ids, one interleaved file",
            inbox,
            writer.csv,
            count,
            writer.skill_ids,
            writer.sample,
        )
    )
    return scenarios


# -- the contenders ----------------------------------------------------------------------------


@dataclass
class Run:
    """One timed load: seconds, peak RSS of its process, and what it loaded."""

    seconds: float
    cpu_seconds: float
    peak_rss_mib: float
    rows: int
    database: Path
    call_seconds: float | None = None  # skillstage: the ingestion call's own, as it reports it

    def rate(self, records: int) -> float:
        return records / self.seconds


def _child(
    args: Sequence[str], *, cwd: Path | None = None, env: dict[str, str] | None = None
) -> tuple[str, float, float, float]:
    """Run a process to its end: (its output, wall seconds, CPU seconds, peak RSS in MiB).

    The CPU time is the child's and that of the children it waited for (`os.wait4`). The peak
    RSS is the largest of its VmHWM and of its and its children's resident sets summed, read
    every 10 ms while it runs (growth in its last 10 ms is missed): `ru_maxrss` would also count
    the memory of this process, which the child was forked from, before its exec."""
    started = time.perf_counter()
    process = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=cwd,
        env=child_environment({"PYTHONPATH": os.pathsep.join(sys.path), **(env or {})}),
        text=True,
    )
    peak = [0.0]
    watching = threading.Thread(target=_watch_rss, args=(process, peak), daemon=True)
    watching.start()
    timer = threading.Timer(CHILD_TIMEOUT, process.kill)
    timer.start()
    try:
        assert process.stdout is not None
        output = process.stdout.read()
        _, status, usage = os.wait4(process.pid, 0)
    finally:
        timer.cancel()
    seconds = time.perf_counter() - started
    process.stdout.close()
    process.returncode = os.waitstatus_to_exitcode(status)
    watching.join()
    if process.returncode != 0:
        raise SystemExit(f"`{' '.join(args)}` failed ({process.returncode}):\n{output[-3000:]}")
    return output, seconds, usage.ru_utime + usage.ru_stime, peak[0]


def _watch_rss(process: subprocess.Popen[str], peak: list[float]) -> None:
    while process.returncode is None:
        try:
            high = _status_kib(process.pid, "VmHWM")
        except OSError:
            return  # reaped
        peak[0] = max(peak[0], high / 1024, _tree_rss_kib(process.pid) / 1024)
        time.sleep(0.01)


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def _tree_rss_kib(pid: int) -> int:
    """The resident sets of a process and its descendants, summed (0 for one gone meanwhile)."""
    try:
        total = _status_kib(pid, "VmRSS")
        children = [
            int(child)
            for task in Path(f"/proc/{pid}/task").iterdir()
            for child in (task / "children").read_text().split()
        ]
    except OSError:
        return 0
    return total + sum(_tree_rss_kib(child) for child in children)


def empty_store(path: Path) -> Path:
    """A new store with its schema and nothing else, to copy for each run."""
    Store.open(f"sqlite:///{path}").close()
    return path


def fresh_copy(template: Path, path: Path) -> Path:
    for stale in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        stale.unlink(missing_ok=True)
    shutil.copyfile(template, path)
    return path


def skillstage_ingest(scenario: Scenario, template: Path, database: Path, project: Path) -> Run:
    """`skillstage metrics ingest --path <inbox> --json` in `project`, on a fresh copy of the
    empty store: the whole process's time, start-up and all."""
    fresh_copy(template, database)
    command = ["metrics", "ingest", "--path", str(scenario.inbox), "--json"]
    output, seconds, cpu, rss = _child(
        [sys.executable, "-m", "skillstage", *command],
        cwd=project,
        env={"SKILLSTAGE_DATABASE_URL": f"sqlite:///{database}"},
    )
    figures = json.loads(output[output.index("{") :])
    counts = {key: figures[key] for key in ("read", "inserted", "duplicates", "quarantined")}
    expected = {"read": scenario.records, "inserted": scenario.records}
    if counts != {**expected, "duplicates": 0, "quarantined": 0}:
        raise SystemExit(f"{scenario.name}: ingestion counted {counts}, expected {expected}")
    return Run(seconds, cpu, rss, counts["inserted"], database, figures["seconds"])


def _generate_child(root: str, count: str, seed: str) -> int:
    """Generate the inboxes in a process of their own: the parent stays small, so the rusage of
    the children it starts later (`.import`) is theirs and not the memory generation took."""
    scenarios = generate(Path(root), int(count), int(seed))
    print(json.dumps([{**asdict(s), "inbox": str(s.inbox), "csv": str(s.csv)} for s in scenarios]))
    return 0


def generated(root: Path, count: int, seed: int) -> list[Scenario]:
    output, _, _, _ = _child(
        [sys.executable, __file__, "_generate", str(root), str(count), str(seed)]
    )
    return [
        Scenario(**{**found, "inbox": Path(found["inbox"]), "csv": Path(found["csv"])})
        for found in json.loads(output.strip().splitlines()[-1])
    ]


def import_template(template: Path, scenario: Scenario, path: Path) -> Path:
    """The empty store, plus the scenario's skills under the ids ingestion gives them (the
    foreign key wants them) and a bare table with the execution table's columns."""
    fresh_copy(template, path)
    connection = sqlite3.connect(path)
    with connection:
        connection.executemany(
            "INSERT INTO skill (id, name, created_at) VALUES (?, ?, '2026-11-01 00:00:00.000000')",
            [(skill_id, name) for name, skill_id in scenario.skill_ids.items()],
        )
        types = dict((row[1], row[2]) for row in connection.execute("PRAGMA table_info(execution)"))
        columns = ", ".join(f'"{c}" {types[c]}' for c in EXECUTION_COLUMNS)
        connection.execute(f"CREATE TABLE execution_bare ({columns})")
    connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    connection.close()
    return path


def shell_import(scenario: Scenario, template: Path, database: Path, table: str) -> Run:
    """The sqlite3 shell's `.import` of the scenario's CSV into `table` of a fresh copy of
    `template`, foreign keys checked and the store's bulk-write settings on."""
    fresh_copy(template, database)
    commands = [
        "PRAGMA foreign_keys = ON",
        ".output /dev/null",  # what the settings print
        *SHELL_SETTINGS,
        ".output stdout",
        f".import --csv {scenario.csv} {table}",
    ]
    output, seconds, cpu, rss = _child([SQLITE_SHELL, str(database), *commands])
    with contextlib.closing(sqlite3.connect(database)) as connection:
        rows = connection.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    if output.strip() or rows != scenario.records:
        raise SystemExit(f"{scenario.name}: .import into {table} loaded {rows} rows:\n{output}")
    return Run(seconds, cpu, rss, rows, database)


def same_rows(scenario: Scenario, ingested: Path, imported: Path) -> str | None:
    """None when the store and the .import table hold the same values for the sample of ids
    (a NULL in the store is an empty string after .import), else what differs."""
    query = "SELECT * FROM execution WHERE execution_id = ?"
    with (
        contextlib.closing(sqlite3.connect(ingested)) as ours,
        contextlib.closing(sqlite3.connect(imported)) as theirs,
    ):
        for execution_id in scenario.sample:
            mine = ours.execute(query, (execution_id,)).fetchone()
            other = theirs.execute(query, (execution_id,)).fetchone()
            if mine is None or other is None:
                return f"{execution_id}: stored {mine}, imported {other}"
            if tuple("" if value is None else value for value in mine) != other:
                return f"{execution_id}:\n  stored   {mine}\n  imported {other}"
    return None


# -- main --------------------------------------------------------------------------------------


CONTENDERS = ("skillstage", "import_indexed", "import_bare")
LABELS = {
    "skillstage": "skillstage ingest",
    "import_indexed": "sqlite3 .import, the store's table",
    "import_bare": "sqlite3 .import, bare table",
}


def measure(
    root: Path, scenarios: Sequence[Scenario], rounds: int, say: Callable[[str], None]
) -> dict[str, Any]:
    """Interleaved rounds; every contender's runs per scenario."""
    template = empty_store(root / "empty.db")
    project = root / "project"
    project.mkdir()
    (project / "skillstage.toml").write_text("")
    templates = {
        s.name: import_template(template, s, root / f"import-{s.name}.db") for s in scenarios
    }
    runs: dict[str, dict[str, list[Run]]] = {s.name: {c: [] for c in CONTENDERS} for s in scenarios}
    checks: dict[str, str | None] = {}
    turn = 0
    for round_number in range(rounds):
        for scenario in scenarios:
            order = CONTENDERS[turn % 3 :] + CONTENDERS[: turn % 3]  # nobody always goes first
            turn += 1
            for contender in order:
                database = root / f"{scenario.name}-{contender}.db"
                if contender == "skillstage":
                    run = skillstage_ingest(scenario, template, database, project)
                else:
                    table = "execution" if contender == "import_indexed" else "execution_bare"
                    run = shell_import(scenario, templates[scenario.name], database, table)
                runs[scenario.name][contender].append(run)
                say(
                    f"  round {round_number + 1} {scenario.name:<12} {LABELS[contender]:<36}"
                    f" {run.rate(scenario.records):>11,.0f} records/s"
                    f" {run.peak_rss_mib:>7.0f} MiB"
                )
            if scenario.name not in checks:
                checks[scenario.name] = same_rows(
                    scenario,
                    root / f"{scenario.name}-skillstage.db",
                    root / f"{scenario.name}-import_indexed.db",
                )
    results: dict[str, Any] = {}
    for scenario in scenarios:
        figures: dict[str, Any] = {"title": scenario.title, "records": scenario.records}
        for contender in CONTENDERS:
            done = runs[scenario.name][contender]
            best = min(done, key=lambda r: r.seconds)
            figures[contender] = {
                "best_records_per_second": round(best.rate(scenario.records)),
                "best_seconds": round(best.seconds, 3),
                "all_seconds": [round(r.seconds, 3) for r in done],
                "cpu_seconds_of_best": round(best.cpu_seconds, 3),
                "peak_rss_mib": round(max(r.peak_rss_mib for r in done), 1),
            }
            if best.call_seconds is not None:
                figures[contender]["call_seconds_of_best"] = round(best.call_seconds, 3)
        figures["ratio_skillstage_over_import"] = round(
            figures["skillstage"]["best_seconds"] / figures["import_indexed"]["best_seconds"], 2
        )
        # Each round's own: its ingestion over its .import, measured one after the other.
        figures["ratio_each_round"] = [
            round(ours.seconds / theirs.seconds, 2)
            for ours, theirs in zip(
                runs[scenario.name]["skillstage"],
                runs[scenario.name]["import_indexed"],
                strict=True,
            )
        ]
        figures["ratio_skillstage_over_bare_import"] = round(
            figures["skillstage"]["best_seconds"] / figures["import_bare"]["best_seconds"], 2
        )
        figures["rows_differ"] = checks[scenario.name]
        results[scenario.name] = figures
    return results


def main(argv: Sequence[str] | None = None) -> int:
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["_generate"]:  # the child process of `generated`
        return _generate_child(*arguments[1:4])
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--records", type=int, default=1_000_000, help="records per inbox (1,000,000)"
    )
    parser.add_argument(
        "--rounds", type=int, default=3, help="interleaved rounds; the best counts (3)"
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--dir", type=Path, default=None, help="where the inboxes and stores go (default: $TMPDIR)"
    )
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    options = parser.parse_args(arguments)
    if options.records < SKILLS or options.rounds < 1:
        parser.error(f"--records must be at least {SKILLS} and --rounds at least 1")
    if not Path(SQLITE_SHELL).exists():
        raise SystemExit(f"{SQLITE_SHELL} is missing: install the sqlite3 package")
    say: Callable[[str], None] = (lambda _: None) if options.json else print
    results: dict[str, Any] = {
        "cpus": os.cpu_count(),
        "sqlite": sqlite3.sqlite_version,
        "load_average_at_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-ingest-", dir=options.dir) as scratch:
        root = Path(scratch)
        say(f"generating 2 inboxes of {options.records:,} records …")
        started = time.perf_counter()
        scenarios = generated(root, options.records, options.seed)
        results["inbox_mib"] = {
            s.name: round(sum(f.stat().st_size for f in s.inbox.iterdir()) / 2**20, 1)
            for s in scenarios
        }
        say(f"  {time.perf_counter() - started:.1f} s; {options.rounds} interleaved rounds …")
        results["scenarios"] = measure(root, scenarios, options.rounds, say)
    results["load_average_at_end"] = round(os.getloadavg()[0], 2)
    if options.json:
        print(json.dumps(results, indent=2))
    else:
        print(render(results))
    wrong = [name for name, s in results["scenarios"].items() if s["rows_differ"]]
    return 1 if wrong else 0


def render(results: dict[str, Any]) -> str:
    lines = [f"\n{'':<40} {'records/s':>11} {'seconds':>8} {'CPU s':>7} {'peak RSS':>9}"]
    verdicts = []
    for name, figures in results["scenarios"].items():
        size = results["inbox_mib"][name]
        lines.append(f"{figures['title']} ({figures['records']:,} records, {size} MiB):")
        for contender in CONTENDERS:
            best = figures[contender]
            lines.append(
                f"  {LABELS[contender]:<38} {best['best_records_per_second']:>11,}"
                f" {best['best_seconds']:>8.2f} {best['cpu_seconds_of_best']:>7.2f}"
                f" {best['peak_rss_mib']:>6.0f} MiB"
            )
        lines.append(
            f"  skillstage / .import: {figures['ratio_skillstage_over_import']}x the time, best"
            f" against best (each round: {', '.join(f'{r}x' for r in figures['ratio_each_round'])};"
            f" bare table: {figures['ratio_skillstage_over_bare_import']}x); the ingestion call"
            f" itself took {figures['skillstage']['call_seconds_of_best']:.2f} s of its"
            f" {figures['skillstage']['best_seconds']:.2f} s"
        )
        if figures["rows_differ"]:
            lines.append(f"  ROWS DIFFER between the store and .import: {figures['rows_differ']}")
        rate = figures["skillstage"]["best_records_per_second"]
        verdicts.append(
            f"{name}: {rate:,} records/s "
            + ("met" if rate >= TARGET_RECORDS_PER_SECOND else "NOT met")
            + f"; {figures['ratio_skillstage_over_import']}x .import "
            + ("met" if figures["ratio_skillstage_over_import"] <= TARGET_RATIO else "NOT met")
            + f" (worst round {max(figures['ratio_each_round'])}x)"
            + f"; peak RSS {figures['skillstage']['peak_rss_mib']:.0f} MiB "
            + ("met" if figures["skillstage"]["peak_rss_mib"] < RSS_LIMIT_MIB else "NOT met")
        )
    lines.append(
        f"best of the rounds; {results['cpus']} CPUs, SQLite {results['sqlite']}; load average "
        f"{results['load_average_at_start']} at the start, "
        f"{results['load_average_at_end']} at the end"
    )
    lines.append(
        f"targets: >= {TARGET_RECORDS_PER_SECOND:,} records/s, within {TARGET_RATIO:g}x of .import "
        f"(its time), peak RSS < {RSS_LIMIT_MIB} MiB"
    )
    lines.extend(f"  {verdict}" for verdict in verdicts)
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
