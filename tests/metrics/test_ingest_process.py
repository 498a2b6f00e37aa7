"""Ingestion with the inbox read in a process of its own (skillstage.metrics.ingest, more to read
than READER_PROCESS_BYTES), on SQLite and PostgreSQL.

The tests of test_ingest.py that ingest in the test's own process are run here again with that
threshold at nothing, so that every inbox goes through the reading process; then what only that
path has: the same rows as reading in process, a SIGKILL of the ingesting process or of the
reading one at random points, after which the next run still stores every record exactly once,
and no reading process left behind.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import skillstage.metrics.ingest as ingest_module
from skillstage.errors import SkillstageError
from skillstage.metrics.ingest import ingest
from skillstage.store import Store
from skillstage.store.executions import checkpoints
from tests.metrics import test_ingest as in_process
from tests.metrics.test_ingest import (
    STAMP,
    _append,
    _committed_then_the_rest,
    _counted,
    _counts,
    _environment,
    _executions,
    _line,
    _quarantine,
    _reap,
    _two_ingestions_at_once,
    _write_load,
)


@pytest.fixture(autouse=True)
def _read_in_a_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_module, "READER_PROCESS_BYTES", -1)


# The tests of test_ingest.py whose ingestion runs in the test's process (those that start a
# `skillstage` process of their own read in process: their inboxes are small), run here again.
for _name in (
    "test_ingesting_twice_adds_nothing_and_lost_checkpoints_only_find_duplicates",
    "test_an_id_written_twice_is_stored_once",
    "test_an_incomplete_last_line_waits_until_it_is_complete",
    "test_a_record_written_after_a_crashed_writers_partial_line_is_not_lost",
    "test_a_complete_record_without_its_newline_is_not_read",
    "test_malformed_lines_are_quarantined_with_file_line_and_reason",
    "test_a_line_just_over_the_limit_is_quarantined_as_too_long",
    "test_a_renamed_file_is_read_on_from_its_checkpoint_and_the_new_one_from_the_start",
    "test_a_copy_truncate_rotation_is_read_again_from_the_start",
    "test_an_emptied_file_is_read_from_the_start_once_written_again",
    "test_per_metric_files_merge_into_one_row_per_execution",
    "test_a_version_without_a_digest_gets_the_registered_digest",
    "test_an_inbox_with_two_skills_is_ingested_on_sqlite",
    "test_an_unreadable_inbox_file_is_reported_and_the_others_are_ingested",
    "test_logrotate_names_and_seed_underscore_names_are_read",
    "test_a_per_metric_file_fills_in_missing_values_but_never_overwrites",
    "test_the_executions_record_arriving_after_its_per_metric_parts_completes_them",
    "test_repeated_ingestion_does_not_collect_connections",
    "test_a_json_array_file_is_read_whole_and_then_only_its_new_elements",
    "test_a_json_array_cut_short_by_its_writer_waits_and_a_broken_one_is_left_whole",
    "test_a_json_array_over_the_size_read_whole_is_reported_unreadable",
    "test_a_json_array_rewritten_in_another_order_loses_no_element",
    "test_records_no_store_can_keep_are_quarantined_and_the_rest_ingested",
    "test_an_inbox_file_whose_name_is_not_utf8_is_reported_and_the_others_ingested",
):
    globals()[_name] = getattr(in_process, _name)


def _mixed_inbox(inbox: Path, seed: int) -> None:
    """Files of every kind: several skills (new to the store), records naming their skill in a
    shared file, ids written twice and parts of one execution in per-metric files, bad lines,
    a JSON array, a rotated file and a last line still being written."""
    rng = random.Random(seed)
    inbox.mkdir()
    for skill in ("alpha", "beta-two", "gamma"):
        lines = []
        for n in range(rng.randrange(3000, 6000)):
            if rng.random() < 0.01:
                lines.append(rng.choice(["not json\n", "{}\n", '{"execution_id": 5}\n']))
                continue
            fields: dict[str, Any] = {
                "pattern_fidelity": round(rng.random(), 3),
                "exception": rng.random() < 0.1,
                "subject": f"user-{rng.randrange(50)}",
            }
            if rng.random() < 0.2:
                fields["tags"] = {"model": rng.choice(["a", "b"]), "source": "eval"}
            if rng.random() < 0.3:
                fields["version"] = rng.choice(["1.0.0", "1.1.0"])
            if rng.random() < 0.05:
                fields["timestamp"] = "2999-01-01T00:00:00Z"  # in the future: quarantined
            lines.append(_line(f"{skill}-{n % 4000}", **fields))  # some ids twice
        (inbox / f"{skill}_executions.jsonl.1").write_text("".join(lines[: len(lines) // 2]))
        (inbox / f"{skill}_executions.jsonl").write_text("".join(lines[len(lines) // 2 :]))
    shared = [
        _line(f"shared-{n}", skill=rng.choice(["alpha", "delta", "epsilon-1"])) for n in range(2500)
    ]
    # Blank lines are read, and neither stored nor quarantined.
    _append(inbox / "mixed_executions.jsonl", "\n" * 5 + "".join(shared) + '{"execution_id": "half')
    _append(
        inbox / "alpha_fidelity.jsonl",
        "".join(_line(f"alpha-{n}", outcome_quality=0.5, critical=True) for n in range(0, 3000, 7)),
    )
    records = [
        {"execution_id": f"beta-two-{n}", "timestamp": STAMP, "execution_time_ms": n}
        for n in range(500)
    ]
    (inbox / "beta_two_performance.json").write_text(json.dumps(records))


def _state(store: Store) -> tuple[Any, ...]:
    """Everything ingestion leaves in the store, ids of skills given by name."""
    with store.reading() as tx:
        rows = tx.query(
            "SELECT e.execution_id, s.name, e.version, e.digest, e.timestamp,"
            " e.pattern_fidelity, e.outcome_quality, e.execution_time_ms, e.patterns_followed,"
            " e.patterns_missed, e.exception, e.false_positive, e.false_negative, e.critical,"
            " e.subject, e.tags, e.benchmark FROM execution e JOIN skill s ON s.id = e.skill_id"
            " ORDER BY e.execution_id"
        )
        skills = tx.query("SELECT id, name FROM skill ORDER BY id")
    quarantine = [(Path(path).name, line, reason) for path, line, reason, _ in _quarantine(store)]
    saved = sorted((Path(c.path).name, c.offset, c.line, c.head_hash) for c in checkpoints(store))
    return [tuple(row) for row in rows], [tuple(s) for s in skills], sorted(quarantine), saved


def test_the_reading_process_stores_what_reading_in_process_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    seed = random.randrange(2**32)
    _mixed_inbox(tmp_path / "inbox", seed)
    results, states = [], []
    now = dt.datetime.now(dt.UTC)  # (quarantine reasons say it)
    for threshold in (1 << 40, -1):  # in process, then in a process of its own
        monkeypatch.setattr(ingest_module, "READER_PROCESS_BYTES", threshold)
        with Store.open(f"sqlite:///{tmp_path / f'{threshold}.db'}") as store:
            first = ingest(store, tmp_path / "inbox", batch_size=300, now=now)
            again = ingest(store, tmp_path / "inbox", batch_size=300, now=now)
            results.append((_counted(first), first.waiting, _counted(again)))
            states.append(_state(store))

    assert results[0] == results[1], f"seed {seed}"
    assert results[0][0][3] > 0 and results[0][2] == (0, 0, 0, 0), f"seed {seed}"
    assert states[0] == states[1], f"seed {seed}"


def test_a_mixed_inbox_read_in_a_process_of_its_own(store: Store, tmp_path: Path) -> None:
    _mixed_inbox(tmp_path / "inbox", 7)

    result = ingest(store, tmp_path / "inbox", batch_size=1000)

    read, inserted, duplicates, quarantined = _counted(result)
    assert read == inserted + duplicates + quarantined + 5
    assert _counts(store)[0] == _counts(store)[1] == inserted
    assert [Path(p).name for p in result.waiting] == ["mixed_executions.jsonl"]
    stored = _executions(store)
    assert {stored[f"shared-{n}"]["skill"] for n in range(2500)} == {"alpha", "delta", "epsilon-1"}
    assert stored["beta-two-7"]["execution_time_ms"] == 7
    reasons = [reason for _, _, reason, _ in _quarantine(store)]
    assert len(reasons) == quarantined
    assert any("in the future" in reason for reason in reasons)
    assert any("not valid JSON" in reason for reason in reasons)
    assert ingest(store, tmp_path / "inbox").inserted == 0


# -- killed ---------------------------------------------------------------------------------------

# A child ingesting through a reading process, which says where that process is, and is SIGKILLed
# `delay` seconds after `target` records are written.
_CHILD = """\
import os, sys, time
from pathlib import Path
import skillstage.metrics.ingest as ingest_module
from skillstage.store import Store

ingest_module.READER_PROCESS_BYTES = -1
target, marker = int(sys.argv[3]), Path(sys.argv[4])
done = 0


def progress(count):  # once a batch (of 500 records) is taken
    global done
    done += 500
    children = [
        child
        for task in Path("/proc/self/task").iterdir()
        for child in (task / "children").read_text().split()
    ]
    if done >= target and not marker.exists():
        marker.with_suffix(".new").write_text(" ".join(children))
        marker.with_suffix(".new").rename(marker)  # whole when the parent sees it


ingest_module.ingest(Store.open(sys.argv[1]), Path(sys.argv[2]), batch_size=500, progress=progress)
"""


def _gone(pid: int, within: float) -> bool:
    """Whether process `pid` has ended (a zombie nobody reaps counts as ended) within seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (FileNotFoundError, ProcessLookupError):
            return True
        if state in ("Z", "X"):
            return True
        time.sleep(0.01)
    return False


@pytest.mark.parametrize("which", ["ingesting", "reading"])
def test_killed_with_its_reading_process_then_ingested_again_stores_each_record_once(
    store: Store, store_url: str, tmp_path: Path, which: str
) -> None:
    # The reading process keeps ahead of the writer by a few units of 4,096 records: killed
    # before the second half is written, it has not read all yet.
    total = 120_000 if store.dialect == "sqlite" or which == "reading" else 40_000
    inbox = tmp_path / "inbox"
    lengths = _write_load(inbox, total)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    interrupted = 0
    for round_number in range(3):
        where = f"seed {seed}, round {round_number}, {which} process killed"
        with store.atomic() as tx:
            tx.execute("DELETE FROM execution")
            tx.execute("DELETE FROM ingest_checkpoint")
        marker = tmp_path / "marker"
        marker.unlink(missing_ok=True)
        target = rng.randrange(1, total // 2 if which == "reading" else total * 3 // 4)
        child = subprocess.Popen(
            [sys.executable, "-c", _CHILD, store_url, str(inbox), str(target), str(marker)],
            env=_environment(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            deadline = time.monotonic() + 120
            while not marker.exists() and child.poll() is None:
                assert time.monotonic() < deadline, where
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.05))
            reading = [int(pid) for pid in marker.read_text().split()] if marker.exists() else []
            assert reading or child.poll() is not None, where
            if child.poll() is None:
                os.kill(child.pid if which == "ingesting" else reading[0], signal.SIGKILL)
        finally:
            code, errors = _reap(child, timeout=60)
        if which == "ingesting":
            assert code in (0, -signal.SIGKILL), f"{where}: exit {code}: {errors}"
        else:  # its reader gone, the ingestion fails (or it had finished)
            assert code == 0 or "ended unexpectedly" in errors, f"{where}: exit {code}: {errors}"
        assert all(_gone(pid, within=10) for pid in reading), f"{where}: a reading process is left"
        interrupted += code != 0
        _committed_then_the_rest(store, inbox, lengths, total, where)
    assert interrupted, f"every child finished before it was killed (seed {seed})"


def test_a_reading_process_killed_under_a_library_call_fails_it_and_loses_nothing(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    total = 100_000
    _write_load(inbox, total)
    killed: list[int] = []

    def progress(count: int) -> None:
        if not killed:
            (pid,) = (
                int(child)
                for task in Path("/proc/self/task").iterdir()
                for child in (task / "children").read_text().split()
            )
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)

    with pytest.raises(SkillstageError, match="ended unexpectedly"):
        ingest(store, inbox, batch_size=500, progress=progress)

    before = _counts(store)[0]
    assert sum(c.line for c in checkpoints(store)) == before
    result = ingest(store, inbox, batch_size=500)
    assert _counted(result) == (total - before, total - before, 0, 0)
    assert _counts(store) == (total, total)


def test_two_large_ingestions_at_once_take_each_line_once(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    # test_ingest.py's overlapping cron runs, with inboxes large enough to be read by reading
    # processes (READER_PROCESS_BYTES is the command's own here: 30 MB of lines).
    per_file, bad = 30_000, 90
    results = _two_ingestions_at_once(
        store_url, tmp_path, per_file=per_file, batch_size=700, subject="x" * 200
    )
    assert sum(f.stat().st_size for f in (tmp_path / "inbox").iterdir()) > 8 << 20
    assert sum(r["read"] for r in results) == 3 * per_file
    assert sum(r["inserted"] for r in results) == 3 * per_file - bad
    assert sum(r["duplicates"] for r in results) == 0
    assert sum(r["quarantined"] for r in results) == bad
    assert len(_quarantine(store)) == bad
    assert _counts(store) == (3 * per_file - bad, 3 * per_file - bad)


def test_the_rows_are_those_sqlite_would_store_from_the_same_records(tmp_path: Path) -> None:
    # The values each column gets, as a store written row by row with plain INSERTs of the same
    # rows would hold them (types included: SQLite keeps what it is given).
    inbox = tmp_path / "inbox"
    _mixed_inbox(inbox, 11)
    with Store.open(f"sqlite:///{tmp_path / 'a.db'}") as store:
        ingest(store, inbox)
    connection = sqlite3.connect(tmp_path / "a.db")
    types = connection.execute(
        "SELECT typeof(timestamp), typeof(pattern_fidelity), typeof(exception), typeof(tags),"
        " typeof(benchmark), count(*) FROM execution GROUP BY 1, 2, 3, 4, 5"
    ).fetchall()
    connection.close()
    assert {row[:5] for row in types} <= {
        ("text", "real", "integer", "null", "integer"),
        ("text", "real", "integer", "text", "integer"),
        ("text", "null", "integer", "null", "integer"),
        ("text", "null", "integer", "text", "integer"),
    }
