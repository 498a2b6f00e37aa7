"""Ingestion of the execution-metrics inbox (skillstage.metrics.ingest) into the store.

Real inbox files under tmp_path, the real store on SQLite and PostgreSQL (the `store` fixture),
and real processes: a child ingesting is SIGKILLed at random points and the next run must still
store every record exactly once.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

import skillstage
import skillstage.api
import skillstage.config
import skillstage.errors
import skillstage.store.db
from skillstage.errors import UsageError
from skillstage.metrics.ingest import MAX_LINE_BYTES, IngestResult, ingest, lag
from skillstage.metrics.record import ExecutionRecord, append_records, record_execution
from skillstage.store import Store
from skillstage.store.executions import checkpoints

STAMP = "2026-03-01T10:00:00Z"
DIGEST = "ab" * 32


def _line(execution_id: str, **fields: Any) -> str:
    return json.dumps({"execution_id": execution_id, "timestamp": STAMP, **fields}) + "\n"


def _append(path: Path, text: str | bytes) -> None:
    data = text.encode() if isinstance(text, str) else text
    with path.open("ab") as handle:
        handle.write(data)


def _counts(store: Store) -> tuple[int, int]:
    """(rows, distinct execution ids) in the execution table."""
    with store.reading() as tx:
        row = tx.one("SELECT COUNT(*), COUNT(DISTINCT execution_id) FROM execution")
    assert row is not None
    return int(row[0]), int(row[1])


def _ids(store: Store) -> list[str]:
    with store.reading() as tx:
        return [r[0] for r in tx.query("SELECT execution_id FROM execution ORDER BY execution_id")]


def _executions(store: Store) -> dict[str, dict[str, Any]]:
    """Every stored execution by id, with its skill's name and its timestamp as aware UTC."""
    with store.reading() as tx:
        rows = tx.query(
            "SELECT e.execution_id, s.name, e.version, e.digest, e.timestamp,"
            " e.pattern_fidelity, e.outcome_quality, e.execution_time_ms,"
            " e.patterns_followed, e.patterns_missed, e.exception, e.false_positive, e.tags"
            " FROM execution e JOIN skill s ON s.id = e.skill_id"
        )
        read_time = tx.dialect.read_time
        return {
            r[0]: {
                "skill": r[1],
                "version": r[2],
                "digest": r[3],
                "timestamp": read_time(r[4]),
                "pattern_fidelity": r[5],
                "outcome_quality": r[6],
                "execution_time_ms": r[7],
                "patterns_followed": r[8],
                "patterns_missed": r[9],
                "exception": bool(r[10]),
                "false_positive": bool(r[11]),
                # SQLite keeps JSON as text, PostgreSQL as jsonb (read back as a dict).
                "tags": json.loads(r[12]) if isinstance(r[12], str) else r[12],
            }
            for r in rows
        }


def _quarantine(store: Store) -> list[tuple[str, int, str, str]]:
    with store.reading() as tx:
        return [
            (r[0], int(r[1]), r[2], r[3])
            for r in tx.query(
                "SELECT path, line, reason, content FROM ingest_quarantine ORDER BY id"
            )
        ]


def _forget_checkpoints(store: Store) -> None:
    with store.atomic() as tx:
        tx.execute("DELETE FROM ingest_checkpoint")


def _counted(result: IngestResult) -> tuple[int, int, int, int]:
    return result.read, result.inserted, result.duplicates, result.quarantined


def _environment(**extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    environment.update(extra)
    return environment


# -- killed mid-ingest ----------------------------------------------------------------------------

# The child ingests with small batches and, optionally, a pause after handing each batch to the
# writer thread (its progress callback; a progress bar's drawing does the same). The writer takes
# batches into one transaction while more are waiting, up to 100,000 records; with a pause longer
# than it takes to write a batch it finds none waiting and commits about once a batch, so a kill
# lands between commits and inside one at random points of the run.
_CHILD = """\
import sys, time
from pathlib import Path
from skillstage.metrics.ingest import ingest
from skillstage.store import Store

pause, target, marker = float(sys.argv[3]), int(sys.argv[4]), Path(sys.argv[5])
batches = 0


def progress(done):
    # Once `target` records are read, say so and slow right down: the parent's kill then lands
    # while this process is alive however loaded the machine is.
    global batches
    batches += 1
    if batches * 500 >= target:
        marker.touch()
    if pause:
        time.sleep(2 if batches * 500 >= target else pause)


ingest(Store.open(sys.argv[1]), Path(sys.argv[2]), batch_size=500, progress=progress)
"""

_LOAD_LINE = (
    '{{"execution_id":"{file}-{number:07d}","timestamp":"2026-03-01T10:00:00Z",'
    '"version":"1.0.0","pattern_fidelity":0.9,"outcome_quality":0.8}}\n'
)
_LOAD_FILES = 4


def _write_load(inbox: Path, total: int) -> dict[str, int]:
    """`total` records with unique ids in files of skill `load` (the live file and rotated ones),
    each file's lines all of one length. Returns each path's line length."""
    inbox.mkdir(parents=True)
    lengths = {}
    for index in range(_LOAD_FILES):
        path = inbox / ("load_executions.jsonl" + (f".{index}" if index else ""))
        lines = [_LOAD_LINE.format(file=index, number=n) for n in range(total // _LOAD_FILES)]
        path.write_text("".join(lines))
        lengths[str(path)] = len(lines[0])
    return lengths


def _kill_while_ingesting(
    store: Store, url: str, inbox: Path, *, pause: float, target: int, delay: float
) -> tuple[int, int]:
    """Start a child ingesting into an emptied store and SIGKILL it `delay` seconds after it has
    read `target` records; returns (rows committed, the child's exit code)."""
    with store.atomic() as tx:
        tx.execute("DELETE FROM execution")
        tx.execute("DELETE FROM ingest_checkpoint")
    marker = inbox.parent / "reached-target"
    marker.unlink(missing_ok=True)
    child = subprocess.Popen(
        [sys.executable, "-c", _CHILD, url, str(inbox), str(pause), str(target), str(marker)],
        env=_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 60
        while not marker.exists() and child.poll() is None:
            assert time.monotonic() < deadline, f"the child got no further than {target} rows"
            time.sleep(0.002)
        time.sleep(delay)
        if child.poll() is None:
            os.kill(child.pid, signal.SIGKILL)
    finally:
        code, errors = _reap(child)
    assert code in (0, -signal.SIGKILL), f"the child failed (exit {code}): {errors}"
    return _counts(store)[0], code


def _reap(child: subprocess.Popen[bytes], timeout: float = 30) -> tuple[int, str]:
    """A child's exit code and error output, once it has ended (killed if it has not within
    `timeout` seconds)."""
    try:
        code = child.wait(timeout=timeout)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.stderr is not None
    errors = child.stderr.read().decode()
    child.stderr.close()
    return code, errors


def _committed_then_the_rest(
    store: Store, inbox: Path, lengths: dict[str, int], total: int, where: str
) -> int:
    """After a killed ingestion of `_write_load`'s `total` records: the rows it committed
    (exactly the lines up to the checkpoints), and then one in this process, which must store
    exactly the rest. Returns the rows committed before."""
    before = _counts(store)[0]
    assert _counts(store) == (before, before), where
    # Each batch commits with its file's checkpoint: what is stored is exactly the lines up to
    # the checkpoints, and each checkpoint's offset is just after its last line.
    saved = checkpoints(store)
    assert sum(c.line for c in saved) == before, where
    for checkpoint in saved:
        assert checkpoint.offset == checkpoint.line * lengths[checkpoint.path], where

    result = ingest(store, inbox, batch_size=500)

    assert _counted(result) == (total - before, total - before, 0, 0), where
    assert _counts(store) == (total, total), where
    assert [c.line for c in checkpoints(store)] == [total // _LOAD_FILES] * _LOAD_FILES, where
    return before


def _kill_then_ingest_again(
    store: Store, url: str, inbox: Path, *, total: int, pause: float, kills: list[tuple[int, float]]
) -> list[int]:
    """For each (target, delay): a killed ingestion, then one in this process, which must store
    exactly the rest. Returns the rows committed before each kill that interrupted the child."""
    lengths = _write_load(inbox, total)
    interrupted = []
    for round_number, (target, delay) in enumerate(kills):
        where = f"round {round_number}: killed {delay:.3f} s after {target} rows"
        before, code = _kill_while_ingesting(
            store, url, inbox, pause=pause, target=target, delay=delay
        )
        _committed_then_the_rest(store, inbox, lengths, total, where)
        if code == -signal.SIGKILL and before < total:
            interrupted.append(before)
    return interrupted


def test_killed_between_small_transactions_then_ingested_again_stores_each_record_once(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    # Writing a batch of 500 takes ~2 ms on SQLite and ~20 ms on PostgreSQL here.
    total, pause = (40_000, 0.005) if store.dialect == "sqlite" else (20_000, 0.04)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    # Early, middle and late in the run, and a few milliseconds into the next transaction.
    kills = [
        (rng.randrange(total * part // 10, total * (part + 3) // 10), rng.uniform(0, 0.01))
        for part in (0, 3, 6)
    ]

    interrupted = _kill_then_ingest_again(
        store, store_url, tmp_path / "inbox", total=total, pause=pause, kills=kills
    )

    assert interrupted, f"every child finished before it was killed (seed {seed}: {kills})"


def test_killed_inside_a_large_transaction_then_ingested_again_stores_each_record_once(
    sqlite_url: str, tmp_path: Path
) -> None:
    # At full speed the writer commits 100,000 records at a time: 200,000 make two transactions,
    # and the kill lands inside the second, some way after the first has committed.
    seed = random.randrange(2**32)
    delay = random.Random(seed).uniform(0, 0.5)

    with Store.open(sqlite_url) as store:
        interrupted = _kill_then_ingest_again(
            store, sqlite_url, tmp_path / "inbox", total=200_000, pause=0, kills=[(1, delay)]
        )

    assert interrupted, f"the child finished before it was killed (seed {seed})"


# -- idempotence ----------------------------------------------------------------------------------


def test_ingesting_twice_adds_nothing_and_lost_checkpoints_only_find_duplicates(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    append_records(
        inbox,
        [
            ExecutionRecord(
                execution_id=f"id-{n}",
                timestamp=dt.datetime(2026, 3, 1, 10, n % 60, tzinfo=dt.UTC),
                skill="pdf-filler",
                pattern_fidelity=(n % 100) / 100,
            )
            for n in range(1500)
        ],
    )
    (inbox / "pdf-filler_executions.jsonl").rename(inbox / "pdf-filler_executions.jsonl.1")
    _append(inbox / "pdf-filler_executions.jsonl", "".join(_line(f"new-{n}") for n in range(500)))

    first = ingest(store, inbox, batch_size=100)
    second = ingest(store, inbox, batch_size=100)
    _forget_checkpoints(store)
    third = ingest(store, inbox, batch_size=100)

    assert (first.files, *_counted(first)) == (2, 2000, 2000, 0, 0)
    assert (second.files, *_counted(second)) == (2, 0, 0, 0, 0)
    assert _counted(third) == (2000, 0, 2000, 0)
    assert _counts(store) == (2000, 2000)
    stored = _executions(store)
    assert stored["id-37"]["pattern_fidelity"] == pytest.approx(0.37)
    assert stored["new-4"]["skill"] == "pdf-filler"


def test_an_id_written_twice_is_stored_once(store: Store, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = [_line("a", outcome_quality=0.1), _line("b"), _line("a", outcome_quality=0.9)]
    _append(inbox / "s_executions.jsonl", "".join(lines))

    result = ingest(store, inbox)

    assert _counted(result) == (3, 2, 1, 0)
    # The first one written wins: a later line with the same id is a duplicate, not an update.
    assert _executions(store)["a"]["outcome_quality"] == pytest.approx(0.1)


# -- incomplete last line -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "head",
    ['{"execution_id": "late", "timest', '{"execution_id": "late", "timestamp": "'],
)
def test_an_incomplete_last_line_waits_until_it_is_complete(
    store: Store, tmp_path: Path, head: str
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "s_executions.jsonl"
    _append(path, _line("one") + _line("two") + head)
    full = _line("late")
    assert full.startswith(head)

    first = ingest(store, inbox)
    pending = lag(store, inbox)
    again = ingest(store, inbox)
    _append(path, full[len(head) :])
    completed = ingest(store, inbox)
    last = ingest(store, inbox)

    assert _counted(first) == (2, 2, 0, 0) and first.waiting == [str(path)]
    # The incomplete line is no record yet: nothing to report an age for.
    assert pending.oldest is None and pending.files[0].pending_bytes == len(head)
    assert _counted(again) == (0, 0, 0, 0) and again.waiting == [str(path)]
    assert _counted(completed) == (1, 1, 0, 0) and completed.waiting == []
    assert _counted(last) == (0, 0, 0, 0) and last.waiting == []
    assert _ids(store) == ["late", "one", "two"]
    assert _quarantine(store) == []


def test_a_record_written_after_a_crashed_writers_partial_line_is_not_lost(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    record_execution(inbox, skill="s", execution_id="good-1")
    _append(inbox / "s_executions.jsonl", '{"execution_id": "crashed-2", "timest')  # died here
    assert _counted(ingest(store, inbox)) == (1, 1, 0, 0)
    record_execution(inbox, skill="s", execution_id="good-3")
    assert _counted(ingest(store, inbox)) == (2, 1, 0, 1)
    assert _ids(store) == ["good-1", "good-3"]
    ((line, content),) = [(q[1], q[3]) for q in _quarantine(store)]
    assert (line, content) == (2, '{"execution_id": "crashed-2", "timest')


def test_a_complete_record_without_its_newline_is_not_read(store: Store, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "s_executions.jsonl"
    # Valid JSON, but a writer may still be writing it (the newline ends every record).
    _append(path, _line("one") + _line("two").rstrip("\n"))

    first = ingest(store, inbox)
    _append(path, "\n" + _line("three"))
    second = ingest(store, inbox)

    assert _counted(first) == (1, 1, 0, 0) and first.waiting == [str(path)]
    assert _counted(second) == (2, 2, 0, 0) and second.waiting == []
    assert _counts(store) == (3, 3)


# -- quarantine -----------------------------------------------------------------------------------


def _malformed_inbox(inbox: Path) -> Path:
    inbox.mkdir()
    path = inbox / "s_executions.jsonl"
    lines = [
        _line("good-1"),  # 1
        '{"execution_id": "broken", "timestamp": \n',  # 2
        _line("typed", execution_time_ms="fast"),  # 3
        _line("too-faithful", pattern_fidelity=1.5),  # 4
        json.dumps({"execution_id": "naive", "timestamp": "2026-03-01T10:00:00"}) + "\n",  # 5
        _line("badly-named", skill="Bad_Skill"),  # 6
        '{"execution_id": "huge", "subject": "' + "x" * (3 * MAX_LINE_BYTES) + '"}\n',  # 7
        _line("good-2"),  # 8
        "\n",  # 9: blank, skipped
        "[1, 2]\n",  # 10
        _line("good-3", timestamp="2026-03-01T12:30:00+02:00"),  # 11
    ]
    _append(path, "".join(lines))
    return path


# (line, what the reason must say) for the lines of _malformed_inbox that are quarantined.
_EXPECTED_REASONS = [
    (2, ["not valid JSON"]),
    (3, ["not a valid record", "got `str`", "$.execution_time_ms"]),
    (4, ["not a valid record", "<= 1.0", "$.pattern_fidelity"]),
    (5, ["timestamp has no time zone"]),
    (6, ["'Bad_Skill' is not a skill name"]),
    (7, [f"line longer than {MAX_LINE_BYTES} bytes"]),
    (10, ["not a valid record", "Expected `object`, got `array`"]),
]


def test_malformed_lines_are_quarantined_with_file_line_and_reason(
    store: Store, tmp_path: Path
) -> None:
    path = _malformed_inbox(tmp_path / "inbox")

    result = ingest(store, tmp_path / "inbox", batch_size=4)

    assert _counted(result) == (11, 3, 0, 7)
    stored = _executions(store)
    assert sorted(stored) == ["good-1", "good-2", "good-3"]
    # An offset is turned into UTC.
    assert stored["good-3"]["timestamp"] == dt.datetime(2026, 3, 1, 10, 30, tzinfo=dt.UTC)
    quarantined = _quarantine(store)
    assert [(p, line) for p, line, _, _ in quarantined] == [
        (str(path), line) for line, _ in _EXPECTED_REASONS
    ]
    for (_, line, reason, _), (_, phrases) in zip(quarantined, _EXPECTED_REASONS, strict=True):
        for phrase in phrases:
            assert phrase in reason, (line, reason)
    by_line = {line: content for _, line, _, content in quarantined}
    assert by_line[4] == _line("too-faithful", pattern_fidelity=1.5).rstrip("\n")
    assert by_line[7] == ""  # an over-long line is not kept

    # Line numbers go on from the checkpoint in the next run.
    _append(path, _line("good-4") + "not json\n")
    later = ingest(store, tmp_path / "inbox")
    assert _counted(later) == (2, 1, 0, 1)
    assert _quarantine(store)[-1][:2] == (str(path), 13)


def test_the_quarantine_command_lists_the_lines_newest_first(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    path = _malformed_inbox(tmp_path / "inbox")
    ingest(store, tmp_path / "inbox")
    project = tmp_path / "project"
    project.mkdir()
    (project / "skillstage.toml").write_text("")

    shown = subprocess.run(
        [sys.executable, "-m", "skillstage", "metrics", "quarantine", "--json"],
        cwd=project,
        env=_environment(SKILLSTAGE_DATABASE_URL=store_url),
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert shown.returncode == 0, shown.stderr
    lines = json.loads(shown.stdout)
    assert [(q["path"], q["line"]) for q in lines] == [
        (str(path), line) for line, _ in reversed(_EXPECTED_REASONS)
    ]
    by_line = {q["line"]: q for q in lines}
    assert "$.pattern_fidelity" in by_line[4]["reason"]
    assert '"too-faithful"' in by_line[4]["content"]
    assert "timestamp has no time zone" in by_line[5]["reason"]


def test_a_line_just_over_the_limit_is_quarantined_as_too_long(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "s_executions.jsonl"
    long = _line("long", subject="x" * (MAX_LINE_BYTES + 1000))
    assert len(long) > MAX_LINE_BYTES
    _append(path, _line("before") + long + _line("after"))

    result = ingest(store, inbox)

    assert _ids(store) == ["after", "before"]
    assert _counted(result) == (3, 2, 0, 1)
    assert _quarantine(store) == [(str(path), 2, f"line longer than {MAX_LINE_BYTES} bytes", "")]


# -- rotation -------------------------------------------------------------------------------------


def test_a_renamed_file_is_read_on_from_its_checkpoint_and_the_new_one_from_the_start(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    live = inbox / "x_executions.jsonl"
    _append(live, "".join(_line(f"old-{n}") for n in range(10)))
    first = ingest(store, inbox, batch_size=3)
    _append(live, "".join(_line(f"tail-{n}") for n in range(5)))
    rotated = live.rename(inbox / "x_executions.jsonl.1")
    _append(live, "".join(_line(f"new-{n}") for n in range(7)))

    second = ingest(store, inbox, batch_size=3)
    third = ingest(store, inbox, batch_size=3)

    assert _counted(first) == (10, 10, 0, 0)
    assert _counted(second) == (12, 12, 0, 0) and second.restarted == []
    assert _counted(third) == (0, 0, 0, 0)
    assert _counts(store) == (22, 22)
    by_path = {c.path: c for c in checkpoints(store)}
    assert by_path[str(rotated)].line == 15 and by_path[str(live)].line == 7
    assert by_path[str(rotated)].offset == rotated.stat().st_size


@pytest.mark.parametrize("new_lines", [3, 25], ids=["shorter", "longer"])
def test_a_copy_truncate_rotation_is_read_again_from_the_start(
    store: Store, tmp_path: Path, new_lines: int
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    live = inbox / "x_executions.jsonl"
    _append(live, "".join(_line(f"old-{n}") for n in range(10)))
    ingest(store, inbox)
    # copytruncate: copy to a new file, then truncate the live one in place (same inode) and the
    # writers go on appending to it. Longer than before, only its head tells it was rewritten.
    _append(live, _line("old-tail"))
    copy = inbox / "x_executions.jsonl.1"
    copy.write_bytes(live.read_bytes())
    with live.open("r+b") as handle:
        handle.truncate(0)
    _append(live, "".join(_line(f"new-{n}") for n in range(new_lines)))

    result = ingest(store, inbox)
    again = ingest(store, inbox)

    assert result.restarted == [str(live)]
    # The copy: 10 already stored and the tail; the live file: its new lines.
    assert _counted(result) == (11 + new_lines, 1 + new_lines, 10, 0)
    assert _counted(again) == (0, 0, 0, 0) and again.restarted == []
    assert _counts(store) == (11 + new_lines, 11 + new_lines)
    assert {f"new-{n}" for n in range(new_lines)} | {"old-tail"} <= set(_ids(store))


def test_an_emptied_file_is_read_from_the_start_once_written_again(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    live = inbox / "x_executions.jsonl"
    _append(live, "".join(_line(f"old-{n}") for n in range(5)))
    ingest(store, inbox)
    with live.open("r+b") as handle:
        handle.truncate(0)

    empty = ingest(store, inbox)
    _append(live, _line("new-0") + _line("new-1"))
    refilled = ingest(store, inbox)

    assert _counted(empty) == (0, 0, 0, 0) and empty.restarted == [str(live)]
    assert _counted(refilled) == (2, 2, 0, 0) and refilled.restarted == [str(live)]
    assert _counts(store) == (7, 7)


# -- seed 002's per-metric files ------------------------------------------------------------------


def test_per_metric_files_merge_into_one_row_per_execution(store: Store, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    ids = [f"run-{n}" for n in range(5)]
    # An execution record of our own for one of them, with a flag the metric files do not set.
    _append(inbox / "s_executions.jsonl", _line("run-0", exception=True, version="1.0.0"))
    _append(
        inbox / "s_fidelity.json",
        "".join(
            _line(
                i,
                pattern_fidelity=0.5 + n / 10,
                patterns_followed=["p1", "p2"][: n % 3],
                patterns_missed=["p3"],
            )
            for n, i in enumerate(ids)
        ),
    )
    _append(
        inbox / "s_outcomes.json",
        "".join(_line(i, outcome_quality=n / 10, false_positive=n == 2) for n, i in enumerate(ids))
        + _line("only-outcome", outcome_quality=0.25),
    )
    _append(
        inbox / "s_performance.json",
        "".join(_line(i, execution_time_ms=100.0 + n) for n, i in enumerate(ids)),
    )

    result = ingest(store, inbox, batch_size=2)
    _forget_checkpoints(store)
    again = ingest(store, inbox, batch_size=2)

    assert result.inserted == 6 and result.quarantined == 0 and result.read == 1 + 5 + 6 + 5
    assert again.inserted == 0 and again.read == result.read
    stored = _executions(store)
    assert sorted(stored) == ["only-outcome", *ids]
    for n, execution_id in enumerate(ids):
        row = stored[execution_id]
        assert row["skill"] == "s"  # from the file name: the records name no skill
        assert row["pattern_fidelity"] == pytest.approx(0.5 + n / 10)
        assert row["outcome_quality"] == pytest.approx(n / 10)
        assert row["execution_time_ms"] == pytest.approx(100.0 + n)
        assert row["patterns_followed"] == n % 3  # seed 002 writes lists; the store counts
        assert row["patterns_missed"] == 1
        assert row["false_positive"] is (n == 2)
    assert stored["run-0"]["exception"] is True and stored["run-0"]["version"] == "1.0.0"
    assert stored["only-outcome"]["pattern_fidelity"] is None
    assert stored["only-outcome"]["outcome_quality"] == pytest.approx(0.25)


# -- digests --------------------------------------------------------------------------------------


def test_a_version_without_a_digest_gets_the_registered_digest(
    store: Store, tmp_path: Path
) -> None:
    store.ensure_version("s", "1.2.0", DIGEST, path="skills/s", frontmatter={"name": "s"})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    other = "cd" * 32
    _append(
        inbox / "s_executions.jsonl",
        _line("registered", version="1.2.0")
        + _line("unregistered", version="9.9.9")
        + _line("given", version="1.2.0", digest=other)
        + _line("unversioned"),
    )

    result = ingest(store, inbox)

    assert _counted(result) == (4, 4, 0, 0)
    stored = _executions(store)
    assert stored["registered"]["digest"] == DIGEST
    assert stored["unregistered"]["digest"] is None
    assert stored["given"]["digest"] == other
    assert stored["unversioned"]["digest"] is None


# -- more than one skill --------------------------------------------------------------------------


def test_an_inbox_with_two_skills_is_ingested_on_sqlite(
    sqlite_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A short busy timeout, so that the lock wait fails in a second instead of thirty.
    monkeypatch.setattr(skillstage.store.db, "SQLITE_BUSY_TIMEOUT_MS", 1000)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _append(inbox / "a_executions.jsonl", _line("a-1"))
    _append(inbox / "b_executions.jsonl", _line("b-1"))

    with Store.open(sqlite_url) as store:
        # The pause after each batch (a progress bar's drawing would do) lets the writer take
        # the batch first. Without it the writer mostly wins that race all the same: 2 skills of
        # 10 records failed 3 runs in 5 here, of 1,000 records 5 in 5.
        result = ingest(store, inbox, progress=lambda done: time.sleep(0.2))

        assert _counted(result) == (2, 2, 0, 0)
        assert {r["skill"] for r in _executions(store).values()} == {"a", "b"}


def test_an_in_memory_store_is_ingested_on_its_one_connection(tmp_path: Path) -> None:
    # An in-memory store is one connection: a writing thread beside the reading one failed with
    # "cannot start a transaction within a transaction" once a new skill or version was looked up.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for skill in range(6):
        _append(
            inbox / f"s{skill}_executions.jsonl",
            "".join(_line(f"s{skill}-{n}", version="1.0.0") for n in range(400)),
        )
    with Store.open("sqlite://") as store:
        now = dt.datetime.now(dt.UTC)
        with store.atomic() as tx:
            tx.ensure_skill("s0", now)
        first = ingest(store, inbox, batch_size=50)
        _append(inbox / "s5_executions.jsonl", _line("s5-new") + _line("s0-1"))
        second = ingest(store, inbox, batch_size=50)

        assert (_counted(first), _counted(second)) == ((2400, 2400, 0, 0), (2, 1, 1, 0))
        assert _counts(store) == (2401, 2401)
        assert {r["skill"] for r in _executions(store).values()} == {f"s{n}" for n in range(6)}


# -- the command line and the library call ---------------------------------------------------------


def _skillstage(project: Path, database: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "skillstage", "metrics", *args],
        cwd=project,
        env=_environment(SKILLSTAGE_DATABASE_URL=database),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_record_lag_and_ingest_commands(store: Store, store_url: str, tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "skillstage.toml").write_text("")
    inbox = project / ".skillstage" / "metrics"
    two_hours_ago = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)).replace(microsecond=0)

    recorded = _skillstage(
        project,
        store_url,
        "record",
        "--skill",
        "s",
        "--id",
        "cli-1",
        "--version",
        "1.0.0",
        "--fidelity",
        "0.9",
        "--quality",
        "0.7",
        "--followed",
        "a,b",
        "--tag",
        "channel=web",
        "--timestamp",
        two_hours_ago.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "--json",
    )
    behind = _skillstage(project, store_url, "lag", "--json")
    ingested = _skillstage(project, store_url, "ingest", "--json")
    caught_up = _skillstage(project, store_url, "lag", "--json")

    assert recorded.returncode == 0, recorded.stderr
    assert json.loads(recorded.stdout)["execution_id"] == "cli-1"
    (line,) = (inbox / "s_executions.jsonl").read_text().splitlines()
    assert json.loads(line)["pattern_fidelity"] == 0.9

    assert behind.returncode == 1, behind.stdout + behind.stderr
    report = json.loads(behind.stdout)
    assert dt.datetime.fromisoformat(report["oldest_pending"]) == two_hours_ago
    assert report["alert"] is True and report["lag_seconds"] >= 7200

    assert ingested.returncode == 0, ingested.stderr
    assert {k: json.loads(ingested.stdout)[k] for k in ("read", "inserted", "quarantined")} == {
        "read": 1,
        "inserted": 1,
        "quarantined": 0,
    }
    assert caught_up.returncode == 0, caught_up.stdout + caught_up.stderr
    assert json.loads(caught_up.stdout)["oldest_pending"] is None

    row = _executions(store)["cli-1"]
    assert (row["skill"], row["version"], row["timestamp"]) == ("s", "1.0.0", two_hours_ago)
    assert row["pattern_fidelity"] == pytest.approx(0.9)
    assert row["outcome_quality"] == pytest.approx(0.7)
    assert row["patterns_followed"] == 2
    assert row["tags"] == {"channel": "web"}


def _without_root_powers() -> list[str]:
    """A command prefix under which file permissions hold (root reads any file otherwise)."""
    if os.geteuid() != 0:
        return []
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: permissions cannot be made to hold")
    return ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--inh-caps", "-all"]


def test_an_unreadable_inbox_file_is_reported_and_the_others_are_ingested(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "skillstage.toml").write_text("")
    inbox = project / ".skillstage" / "metrics"
    inbox.mkdir(parents=True)
    _append(inbox / "a_executions.jsonl", _line("a-1"))
    _append(inbox / "b_executions.jsonl", _line("b-1"))
    _append(inbox / "c_executions.jsonl", _line("c-1"))
    (inbox / "b_executions.jsonl").chmod(0)
    prefix = _without_root_powers()

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*prefix, sys.executable, "-m", "skillstage", "metrics", *args],
            cwd=project,
            env=_environment(SKILLSTAGE_DATABASE_URL=store_url),
            capture_output=True,
            text=True,
            timeout=120,
        )

    ingested, lagging = run("ingest", "--json"), run("lag")
    assert ingested.returncode == 1, ingested.stderr
    assert "Traceback" not in ingested.stderr + lagging.stderr
    counts = json.loads(ingested.stdout)
    assert (counts["read"], counts["inserted"]) == (2, 2)
    assert counts["unreadable"] == [
        {"path": str(inbox / "b_executions.jsonl"), "reason": "Permission denied"}
    ]
    assert sorted(_ids(store)) == ["a-1", "c-1"]
    assert lagging.returncode == 1
    assert f"cannot read {inbox / 'b_executions.jsonl'}: Permission denied" in lagging.stderr

    (inbox / "b_executions.jsonl").chmod(0o644)  # fixed: read from where it was
    again = run("ingest", "--json")
    assert again.returncode == 0, again.stderr
    assert (json.loads(again.stdout)["inserted"], sorted(_ids(store))) == (1, ["a-1", "b-1", "c-1"])
    missing = run("lag", "--path", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "is not a directory" in missing.stderr


def test_two_ingestions_at_once_both_succeed(store: Store, store_url: str, tmp_path: Path) -> None:
    # New files whose records are already stored (what a copy-truncate rotation leaves): both
    # ingestions save a first checkpoint for each; on PostgreSQL an UPDATE-then-INSERT raced.
    (tmp_path / "skillstage.toml").write_text("")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    lines = "".join(_line(f"r-{n}") for n in range(50))
    _append(inbox / "s_executions.jsonl", lines)
    assert ingest(store, inbox).inserted == 50
    for round_ in range(3):
        for copy in range(20):
            _append(inbox / f"s_executions.jsonl.{round_}-{copy}", lines)
        runs = [
            subprocess.Popen(
                [sys.executable, "-m", "skillstage", "metrics", "ingest", "--path", str(inbox)],
                cwd=tmp_path,
                env=_environment(SKILLSTAGE_DATABASE_URL=store_url),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for _ in range(2)
        ]
        for run in runs:
            out, err = run.communicate(timeout=120)
            assert run.returncode == 0, out + err
    assert _counts(store) == (50, 50)
    assert len(checkpoints(store)) == 61


def test_lag_alerts_only_past_the_hour_and_clears_after_ingest(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    now = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)
    skillstage.record_execution("s", inbox=inbox, timestamp=now - dt.timedelta(minutes=50))
    skillstage.record_execution("s", inbox=inbox, timestamp=now - dt.timedelta(minutes=10))

    within = lag(store, inbox, now=now)
    over = lag(store, inbox, now=now + dt.timedelta(minutes=11))
    ingest(store, inbox)
    after = lag(store, inbox, now=now + dt.timedelta(minutes=11))

    assert within.oldest == now - dt.timedelta(minutes=50) and not within.alert
    assert over.alert and over.lag_seconds == pytest.approx(61 * 60)
    assert after.oldest is None and not after.alert and after.to_dict()["pending_bytes"] == 0


def test_record_execution_refuses_an_unknown_field_and_writes_nothing(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"

    with pytest.raises(UsageError) as unknown:
        skillstage.record_execution("s", inbox=inbox, pattern_fidelity=0.5, colour="red")
    with pytest.raises(UsageError) as out_of_range:
        skillstage.record_execution("s", inbox=inbox, pattern_fidelity=1.5)
    with pytest.raises(UsageError) as naive:
        skillstage.record_execution("s", inbox=inbox, timestamp=dt.datetime(2026, 3, 1, 10))

    assert "unknown field(s) colour" in str(unknown.value)
    assert "pattern_fidelity" in (unknown.value.hint or "")
    assert "$.pattern_fidelity" in str(out_of_range.value)
    assert "timestamp has no time zone" in str(naive.value)
    for bad, why in [
        ({"execution_id": ""}, "Expected `str` of length >= 1 - at `$.execution_id`"),
        ({"tags": {"a": object()}}, "Encoding objects of type object is unsupported"),
        ({"timestamp": "yesterday"}, "Invalid RFC3339 encoded datetime - at `$.timestamp`"),
    ]:
        with pytest.raises(UsageError, match=re.escape(why)):
            skillstage.record_execution("s", inbox=inbox, **bad)
    assert not (inbox / "s_executions.jsonl").exists()
    # ISO text is a timestamp too; an inbox path that is a file is refused, not crashed on.
    text = skillstage.record_execution("s", inbox=inbox, timestamp="2026-03-01T10:00:00Z")
    assert text.timestamp == dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)
    with pytest.raises(UsageError, match="is not a directory"):
        skillstage.record_execution("s", inbox=inbox / "s_executions.jsonl")


def test_logrotate_names_and_seed_underscore_names_are_read(store: Store, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _append(inbox / "pdf-filler_executions.jsonl-20261202", _line("rotated", skill="pdf-filler"))
    _append(inbox / "pdf-filler_executions.jsonl-20261201.gz", b"\x1f\x8b not text")
    _append(
        inbox / "youtube_spam_detection_fidelity.json",
        _line("seed", pattern_fidelity=0.9, patterns_followed=["a"]),
    )

    result = ingest(store, inbox)

    assert (result.files, result.inserted, result.quarantined) == (2, 2, 0)
    with store.reading() as tx:
        rows = tx.query(
            "SELECT x.execution_id, s.name FROM execution x JOIN skill s ON s.id = x.skill_id"
            " ORDER BY x.execution_id"
        )
    assert rows == [("rotated", "pdf-filler"), ("seed", "youtube-spam-detection")]


def test_a_per_metric_file_fills_in_missing_values_but_never_overwrites(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _append(inbox / "s_fidelity.json", _line("e1", pattern_fidelity=0.9))
    ingest(store, inbox)
    _append(inbox / "s_outcomes.json", _line("e1", pattern_fidelity=0.1, outcome_quality=0.7))

    ingest(store, inbox)

    with store.reading() as tx:
        row = tx.one("SELECT pattern_fidelity, outcome_quality FROM execution")
    assert row == (0.9, 0.7)


def test_the_executions_record_arriving_after_its_per_metric_parts_completes_them(
    store: Store, tmp_path: Path
) -> None:
    store.ensure_version("s", "1.0.0", DIGEST, path="skills/s", frontmatter={"name": "s"})
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _append(inbox / "s_fidelity.json", _line("m-1", pattern_fidelity=0.9))
    assert _counted(ingest(store, inbox)) == (1, 1, 0, 0)
    # The executions file's record of the same run, later, with what the fidelity file lacks;
    # twice in one batch, the second adding a flag. A complete duplicate changes nothing.
    _append(
        inbox / "s_executions.jsonl",
        _line("m-1", version="1.0.0", pattern_fidelity=0.2, outcome_quality=0.7)
        + _line("m-1", execution_time_ms=12.0, exception=True)
        + _line("m-2", version="1.0.0", outcome_quality=0.5),
    )
    assert _counted(ingest(store, inbox)) == (3, 1, 2, 0)
    stored = _executions(store)
    got = {k: stored["m-1"][k] for k in ("version", "digest", "pattern_fidelity", "exception")}
    assert got == {"version": "1.0.0", "digest": DIGEST, "pattern_fidelity": 0.9, "exception": True}
    assert (stored["m-1"]["outcome_quality"], stored["m-1"]["execution_time_ms"]) == (0.7, 12.0)
    _append(inbox / "s_executions.jsonl.1", _line("m-2", version="1.0.0", outcome_quality=0.5))
    assert _counted(ingest(store, inbox)) == (1, 0, 1, 0)
    assert _executions(store)["m-2"] == stored["m-2"]


def test_repeated_ingestion_does_not_collect_connections(sqlite_url: str, tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    with Store.open(sqlite_url) as store:
        for n in range(5):
            _append(inbox / "s_executions.jsonl", _line(f"e{n}"))
            assert ingest(store, inbox).inserted == 1
        # This thread's own connection, and none left behind by the five writer threads.
        assert len(store._connections) == 1


def _write_array(path: Path, records: list[dict[str, Any]]) -> None:
    """Seed 002's writer as it may be: the whole file rewritten in place as one JSON array."""
    with path.open("r+" if path.exists() else "w") as handle:
        json.dump(records, handle, indent=2)
        handle.truncate()


def test_a_json_array_file_is_read_whole_and_then_only_its_new_elements(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "youtube_spam_detection_fidelity.json"
    records = [
        {"execution_id": f"a-{n}", "timestamp": STAMP, "pattern_fidelity": 0.9} for n in range(3)
    ]
    _write_array(path, records)

    assert _counted(ingest(store, inbox)) == (3, 3, 0, 0)
    assert _counted(ingest(store, inbox)) == (0, 0, 0, 0)
    # Appended by rewriting the array: only the new elements are read, one of them no record.
    records += [{"execution_id": "a-3", "timestamp": STAMP}, {"execution_id": 7}]
    _write_array(path, records)
    assert _counted(ingest(store, inbox)) == (2, 1, 0, 1)
    assert _ids(store) == ["a-0", "a-1", "a-2", "a-3"]
    assert _executions(store)["a-0"]["skill"] == "youtube-spam-detection"
    # The element's position stands for its line.
    ((where, position, reason, _content),) = _quarantine(store)
    assert (where, position) == (str(path), 5)
    assert "not a valid record" in reason
    # Written anew from the first element on (another writer's formatting): all duplicates.
    path.write_text(json.dumps(records[:4]))
    assert _counted(ingest(store, inbox)) == (4, 0, 4, 0)
    assert lag(store, inbox).files == []


def test_a_json_array_cut_short_by_its_writer_waits_and_a_broken_one_is_left_whole(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    whole = json.dumps([{"execution_id": f"c-{n}", "timestamp": STAMP} for n in range(2)])
    _append(inbox / "s_outcomes.json", whole[:-20])

    result = ingest(store, inbox)

    assert _counted(result) == (0, 0, 0, 0)
    assert result.waiting == [str(inbox / "s_outcomes.json")]
    pending = lag(store, inbox, now=dt.datetime(2026, 3, 1, 11, tzinfo=dt.UTC))
    assert [f.oldest for f in pending.files] == [None]
    _append(inbox / "s_outcomes.json", whole[-20:])
    assert _counted(ingest(store, inbox)) == (2, 2, 0, 0)
    # An array that is not JSON (Python's json.dump writes NaN) is left whole, reported, until
    # it is fixed: read line by line, its fragments would be quarantined.
    broken = inbox / "t_outcomes.json"
    broken.write_text('[\n  {"execution_id": "t-1", "timestamp": "' + STAMP + '",\n')
    _append(broken, '   "pattern_fidelity": NaN},\n  {"execution_id": "t-2"}\n]')
    result = ingest(store, inbox)
    assert (_counted(result), result.waiting) == ((0, 0, 0, 0), [])
    ((where, why),) = result.unreadable
    assert where == str(broken) and why.startswith("not a valid JSON array (JSON is malformed")
    broken.write_text(json.dumps([{"execution_id": f"t-{n}", "timestamp": STAMP} for n in (1, 2)]))
    assert _counted(ingest(store, inbox)) == (2, 2, 0, 0)
    # A .jsonl file is never read as an array.
    _append(inbox / "u_executions.jsonl", json.dumps([{"execution_id": "u-1"}]) + "\n")
    assert _counted(ingest(store, inbox)) == (1, 0, 0, 1)


def test_a_json_array_over_the_size_read_whole_is_reported_unreadable(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(skillstage.metrics.ingest, "MAX_ARRAY_BYTES", 100)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _write_array(inbox / "s_fidelity.json", [{"execution_id": f"b-{n}"} for n in range(5)])
    _append(inbox / "s_executions.jsonl", _line("d-1"))

    result = ingest(store, inbox)

    assert _counted(result) == (1, 1, 0, 0)
    ((where, why),) = result.unreadable
    assert where == str(inbox / "s_fidelity.json")
    assert "write one record per line" in why


def test_record_execution_without_an_inbox_takes_the_projects_clock_skew(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "skillstage.toml").write_text("[metrics]\nmax_clock_skew_minutes = 60\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SKILLSTAGE_CONFIG", raising=False)
    ahead = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=30)

    skillstage.record_execution("s", timestamp=ahead)

    with pytest.raises(UsageError, match="is in the future"):
        skillstage.record_execution("s", timestamp=ahead + dt.timedelta(minutes=40))
    with pytest.raises(UsageError, match="is in the future"):  # an inbox given: 10 minutes
        skillstage.record_execution("s", inbox=tmp_path / "elsewhere", timestamp=ahead)
    (line,) = (tmp_path / ".skillstage" / "metrics" / "s_executions.jsonl").read_text().splitlines()
    assert dt.datetime.fromisoformat(json.loads(line)["timestamp"]) == ahead
    # The project's API takes a skew of its own too.
    project = skillstage.config.load_project(start=tmp_path)
    later = ahead + dt.timedelta(minutes=40)
    skillstage.api.record_execution(
        project, "s", timestamp=later, max_clock_skew=dt.timedelta(hours=2)
    )


def test_a_json_array_rewritten_in_another_order_loses_no_element(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "s_fidelity.json"
    # Long enough that the rewrite keeps the first bytes a short head hash would look at.
    padding = "x" * 400
    first = {"execution_id": "r-0", "timestamp": STAMP, "tags": {"note": padding}}
    records = [first, {"execution_id": "r-1", "timestamp": STAMP}]
    _write_array(path, records)
    assert _counted(ingest(store, inbox)) == (2, 2, 0, 0)
    # The writer puts the new record second: skipping the two elements taken would skip it.
    _write_array(path, [first, {"execution_id": "r-new", "timestamp": STAMP}, records[1]])
    assert _counted(ingest(store, inbox)) == (3, 1, 2, 0)
    assert _ids(store) == ["r-0", "r-1", "r-new"]
    # Nothing new since: nothing read, and the file is not waiting for anything.
    result = ingest(store, inbox)
    assert (_counted(result), result.waiting) == ((0, 0, 0, 0), [])


def test_a_json_array_killed_mid_ingestion_then_rewritten_loses_nothing(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "load_fidelity.json"
    _write_array(path, [{"execution_id": f"old-{n}", "timestamp": STAMP} for n in range(4000)])
    before, code = _kill_while_ingesting(
        store, store_url, inbox, pause=0.05, target=1500, delay=0.3
    )
    assert code == -signal.SIGKILL and 0 < before < 4000
    (saved,) = checkpoints(store)
    assert saved.line == before  # elements taken, the offset still where the batch started
    # Rewritten in place (one inode) with other records: the elements taken are not these.
    _write_array(path, [{"execution_id": f"new-{n}", "timestamp": STAMP} for n in range(4000)])

    result = ingest(store, inbox)

    assert str(path) in result.restarted
    assert _counted(result) == (4000, 4000, 0, 0)
    assert sum(1 for i in _ids(store) if i.startswith("new-")) == 4000


# -- what one store keeps and another would refuse ---------------------------------------------


def test_records_no_store_can_keep_are_quarantined_and_the_rest_ingested(
    store: Store, tmp_path: Path
) -> None:
    # PostgreSQL's text and JSON cannot hold U+0000, and its version column holds 128
    # characters: one such record used to fail every ingestion there, for every skill.
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    path = inbox / "s_executions.jsonl"
    _append(path, _line("good-1"))
    _append(path, _line("nul-subject", subject="user\x00id"))
    _append(path, _line("nul-tag", tags={"k": "a\x00b"}))
    _append(path, b"\x00\x00\x00\x00\n")  # what a power loss leaves in an appended file
    _append(path, _line("long-version", version="1.0.0-" + "a" * 130))
    _append(path, _line("escaped-backslash", subject="a\\u0000b"))  # text, not a NUL
    _append(path, _line("good-2"))

    result = ingest(store, inbox)

    assert _counted(result) == (7, 3, 0, 4)
    assert _ids(store) == ["escaped-backslash", "good-1", "good-2"]
    reasons = {line: reason for _, line, reason, _ in _quarantine(store)}
    assert "subject holds a NUL character" in reasons[2]
    assert "tags holds a NUL character" in reasons[3]
    assert "not valid JSON" in reasons[4]
    assert "length <= 128" in reasons[5]
    assert _quarantine(store)[2][3] == "\\x00" * 4  # kept, readable


def test_record_execution_refuses_what_no_store_can_keep(tmp_path: Path) -> None:
    for fields in ({"subject": "a\x00b"}, {"version": "1." + "0" * 130}):
        with pytest.raises(UsageError, match="not a valid execution record"):
            record_execution(tmp_path, skill="s", **fields)
    assert not (tmp_path / "s_executions.jsonl").exists()


def test_an_inbox_file_whose_name_is_not_utf8_is_reported_and_the_others_ingested(
    store: Store, tmp_path: Path
) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    _append(inbox / "good_executions.jsonl", _line("good-1"))
    odd = os.fsdecode(os.fsencode(inbox) + b"/b\xffd_executions.jsonl")
    _append(Path(odd), _line("odd-1"))

    result = ingest(store, inbox)

    assert _ids(store) == ["good-1"]
    ((shown, why),) = result.unreadable
    assert shown.endswith("b\\xffd_executions.jsonl") and "not valid UTF-8" in why


def test_two_ingestions_at_once_take_each_line_once(
    store: Store, store_url: str, tmp_path: Path
) -> None:
    # Overlapping cron runs: each line is read (inserted or quarantined) by one of them; the
    # other leaves what the first took, so nothing is quarantined twice or counted a duplicate.
    results = _two_ingestions_at_once(store_url, tmp_path, per_file=20_000, batch_size=100)
    assert sum(r["read"] for r in results) == 60_000
    assert sum(r["inserted"] for r in results) == 59_940
    assert sum(r["duplicates"] for r in results) == 0
    assert sum(r["quarantined"] for r in results) == 60
    assert len(_quarantine(store)) == 60
    assert _counts(store) == (59_940, 59_940)


def _two_ingestions_at_once(
    store_url: str, tmp_path: Path, *, per_file: int, batch_size: int, **fields: Any
) -> list[dict[str, Any]]:
    """Two `skillstage metrics ingest` processes started together on an inbox of three skills'
    files of `per_file` lines, one in 1,000 not JSON; their JSON results."""
    (tmp_path / "skillstage.toml").write_text("")
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for skill in ("a", "b", "c"):
        lines = [
            "not json\n" if n % 1000 == 7 else _line(f"{skill}-{n}", **fields)
            for n in range(per_file)
        ]
        _append(inbox / f"{skill}_executions.jsonl", "".join(lines))
    command = [sys.executable, "-m", "skillstage", "metrics", "ingest", "--path", str(inbox)]
    runs = [
        subprocess.Popen(
            [*command, "--batch-size", str(batch_size), "--json"],
            cwd=tmp_path,
            env=_environment(SKILLSTAGE_DATABASE_URL=store_url),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=300)
        assert run.returncode == 0, out + err
        results.append(json.loads(out))
    return results


def test_record_execution_into_an_inbox_it_cannot_write_says_so(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "s_executions.jsonl").mkdir()  # what is in the way, whoever runs the test
    with pytest.raises(skillstage.errors.SkillstageError, match="cannot append to the metrics"):
        record_execution(inbox, skill="s")
