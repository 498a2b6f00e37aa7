"""Ingestion: the append-only JSONL inbox into the store (seed 002 §5.4), and its lag (§7).

Exactly once, whatever happens: each batch of records is inserted in ONE transaction together
with the file's checkpoint (device, inode, byte offset just after the last line read), and an
execution id already stored is a duplicate, never a second row. A process killed at any instant
leaves either the batch and its checkpoint or neither; the next run goes on from the checkpoint.

- Only complete lines are read: a last line without its newline (a writer mid-write) stays for
  the next run.
- A rotated file (renamed, e.g. `x_executions.jsonl.1`) keeps its inode and so its checkpoint:
  its tail is read where it was left; the new file at the old name is a new inode and starts at 0.
- A truncated or rewritten file (smaller than its checkpoint, or a different first line) is read
  again from the start; duplicates are skipped by id.
- A line that is not a valid record goes to the quarantine table with the file, line number and
  reason, and the batch goes on.
- A `.json` file holding one JSON array of records (seed 002's `<skill>_fidelity.json` written
  whole by its writer) is read whole, up to MAX_ARRAY_BYTES, each time it changed: its checkpoint
  counts the elements taken, and an element's position stands for its line number. They are
  skipped only while the file still begins with what was read (its head hash covers all of it
  but the closing bracket): a writer that rewrites in another order has it read again, and
  duplicates skipped by id. An array that ends part-way (its writer mid-write) waits for the
  next run, like an incomplete line.

An inbox with more than READER_PROCESS_BYTES to read is read and decoded in a process of its own
(`_ReadingProcess`), which sends the rows, made ready to insert, to this one's writing thread: so
reading and writing run on two cores, neither waiting for the other's turn at Python's GIL. Its
batches and checkpoints are those reading here would make; killed, it fails the ingestion and
its batches not yet committed are read again next time; it stops when this process ends.

Memory is bounded: files are read in 1 MiB chunks, a line longer than `MAX_LINE_BYTES` is
quarantined without being held, and a few units of at most `WRITE_RECORDS` records (a batch if
it is larger) are on their way to the writer at a time: one being read, about one in the pipe
from the reading process, two in the writer's queue.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import fcntl
import gc
import hashlib
import os
import queue
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO, Protocol

import msgspec

import skillstage
from skillstage.errors import SkillstageError
from skillstage.metrics.record import (
    BENCHMARK_SOURCE,
    EARLIEST,
    INBOX_FILE,
    MAX_CLOCK_SKEW,
    ExecutionRecord,
    future_problem,
    nul_problem,
    past_problem,
    record_problem,
    skill_from_file_name,
)
from skillstage.store import Store, Transaction
from skillstage.store import executions as store_executions

CHUNK_BYTES = 1 << 20
MAX_LINE_BYTES = 1 << 20
COMMIT_RECORDS = 100_000  # at most this many records per transaction
# How long a write transaction waits for the reader's next records before it commits: a moment's
# wait spares a commit, which writes and checkpoints the pages the transaction changed.
WAIT_SECONDS = 0.02
WRITE_RECORDS = 4096  # the writer inserts up to this many records of a file at once
READER_PROCESS_BYTES = 8 << 20  # more to read than this: read in a process of its own
HEAD_BYTES = 256  # the part of a file whose hash tells it from a rewritten one
MAX_ARRAY_BYTES = 64 << 20  # a file holding one JSON array is read whole: up to this size
_TOO_LONG = f"line longer than {MAX_LINE_BYTES} bytes"

_DECODER = msgspec.json.Decoder(ExecutionRecord)
_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_TWO_DIGITS = [f"{n:02d}" for n in range(61)]
_ENCODER = msgspec.json.Encoder()
_UTC = dt.UTC


@dataclass
class IngestResult:
    """What one ingestion did."""

    files: int = 0
    read: int = 0  # complete lines read
    inserted: int = 0
    duplicates: int = 0
    quarantined: int = 0
    waiting: list[str] = field(default_factory=list)  # files whose last line is incomplete
    restarted: list[str] = field(default_factory=list)  # files truncated or rewritten
    unreadable: list[tuple[str, str]] = field(default_factory=list)  # (file, why): left as is
    seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "read": self.read,
            "inserted": self.inserted,
            "duplicates": self.duplicates,
            "quarantined": self.quarantined,
            "waiting": self.waiting,
            "restarted": self.restarted,
            "unreadable": [{"path": path, "reason": why} for path, why in self.unreadable],
            "seconds": round(self.seconds, 3),
        }


@dataclass(frozen=True)
class InboxFile:
    path: Path
    skill: str  # from the file name
    kind: str  # executions, fidelity, outcomes, performance
    format: str  # jsonl, or json: JSON lines too, or one JSON array of records


def inbox_files(inbox: Path) -> list[InboxFile]:
    """The files of the inbox that hold records, rotated ones included, by name."""
    if not inbox.is_dir():
        return []
    found = []
    for entry in sorted(os.scandir(inbox), key=lambda e: e.name):
        file = _inbox_file(Path(entry.path))
        if file is not None and entry.is_file(follow_symlinks=False):
            found.append(file)
    return found


def _inbox_file(path: Path) -> InboxFile | None:
    """The inbox file at `path`, or None when its name is not an inbox file's."""
    match = INBOX_FILE.match(path.name)
    if match is None:
        return None
    return InboxFile(path, skill_from_file_name(match["skill"]), match["kind"], match["format"])


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class _Taken(msgspec.Struct, array_like=True):
    """A batch of a file's lines as the writer sees it: where it ends (its file's checkpoint
    after it), what it follows, and its bad lines. (MessagePack between the two processes.)"""

    path: str
    device: int
    inode: int
    offset: int  # after this batch
    line: int  # lines consumed after this batch
    head_length: int  # of the file's head, what the checkpoint after this batch hashes
    head_hash: str
    lines: int  # lines in this batch
    records: int  # rows made of them
    consumed: int  # bytes
    bad: list[tuple[str, int, str, str]]
    # The file's checkpoint in the store this batch follows: (offset, line, head hash), or None
    # for none. Another ingestion that moved it meanwhile has taken these lines (`_write`).
    follows: tuple[int, int, str] | None

    def checkpoint(self) -> tuple[int, int, str]:
        """The checkpoint after this batch: offset, line, head hash."""
        return self.offset, self.line, self.head_hash


class _Unit(msgspec.Struct, array_like=True):
    """Batches of one file the writer inserts together, their rows made ready by the reading
    side, and the names of the skills new to the store their provisional ids stand for."""

    batches: list[_Taken]
    prepared: store_executions.PreparedRows
    new_skills: dict[int, str]


def _head_length(head: bytes, offset: int, array: bool) -> int:
    """How much of a file's head its checkpoint hashes: all an array keeps (its batches before
    the last keep the offset they started at, the bytes read going with the last element, but
    must still tell the elements they took from other ones), else what was read of it."""
    return len(head) if array else min(offset, len(head))


# A file's checkpoint as reading needs it: (offset, line, head hash, head length).
_Position = tuple[int, int, str, int]


def _start(
    file: InboxFile, handle: Any, found: _Position | None, result: IngestResult
) -> tuple[int, int, tuple[int, int, str] | None]:
    """Where to start reading an open file: its checkpoint `found`, or 0 when it is new or was
    rewritten; and the checkpoint found (see `_Taken.follows`)."""
    if found is None:
        return 0, 0, None
    offset, line, head_hash, head_length = found
    head = os.pread(handle.fileno(), head_length, 0)
    if os.fstat(handle.fileno()).st_size < offset or _hash(head) != head_hash:
        result.restarted.append(str(file.path))
        return 0, 0, (offset, line, head_hash)
    return offset, line, (offset, line, head_hash)


@dataclass
class _Reading:
    """The complete records of a file not yet taken: (text, the bytes it takes) each, or (why,
    bytes) for one that cannot be read. For a JSON array file, `kept` is what a writer that only
    appends keeps of it (all but the closing bracket): the checkpoint's head hash covers it, so
    that the elements taken are skipped only while they are unchanged."""

    records: Iterator[tuple[bytes | str, int]]
    kept: bytes | None = None
    # Whether bytes left unread after the records wait for more (an incomplete line, an array
    # cut short); not those of an array read whole, or left whole because it is broken.
    may_wait: bool = True


def _records(
    file: InboxFile, handle: Any, offset: int, line: int, unreadable: list[tuple[str, str]]
) -> _Reading:
    """The records of JSONL from `offset`, or the elements of a JSON array file after the first
    `line` (see `_Reading`)."""
    if file.format == "json" and os.pread(handle.fileno(), HEAD_BYTES, 0).lstrip()[:1] == b"[":
        size = os.fstat(handle.fileno()).st_size
        if size > MAX_ARRAY_BYTES:
            unreadable.append(
                (
                    str(file.path),
                    f"a JSON array of {size} bytes, over the {MAX_ARRAY_BYTES} read whole:"
                    " write one record per line (JSONL) instead",
                )
            )
            return _Reading(iter(()), may_wait=False)
        handle.seek(0)
        data = handle.read(size)
        try:
            elements = _ARRAY.decode(data)
        except msgspec.DecodeError as exc:
            if "truncated" not in str(exc):
                # Read line by line, its fragments would be quarantined and its checkpoint
                # would count lines where it counts elements: left whole until it is fixed.
                unreadable.append(
                    (
                        str(file.path),
                        f"not a valid JSON array ({exc}; NaN and Infinity are not JSON): fix "
                        "its writer, or write one record per line (JSONL)",
                    )
                )
                return _Reading(iter(()), may_wait=False)
            return _Reading(iter(()))  # its writer is mid-write: next time
        # The bytes read go with the last element: the checkpoint moves past the file only once
        # every element is stored.
        taken = [(bytes(element), 0) for element in elements[line:]]
        if taken:
            taken[-1] = (taken[-1][0], size - offset)
        return _Reading(iter(taken), data.rstrip()[:-1].rstrip(), may_wait=False)
    return _Reading(_complete_lines(handle, offset))


def _complete_lines(handle: Any, offset: int) -> Iterator[tuple[bytes | str, int]]:
    """(line, its length with the newline) for each complete line from `offset`; a line longer
    than MAX_LINE_BYTES comes as (why, length). An incomplete last line is not yielded."""
    handle.seek(offset)
    carry = b""
    skipping = 0  # bytes of an over-long line dropped so far
    while True:
        chunk = handle.read(CHUNK_BYTES)
        if not chunk:
            return
        if skipping:
            end = chunk.find(b"\n")
            if end < 0:
                skipping += len(chunk)
                continue
            yield _TOO_LONG, skipping + end + 1
            skipping, chunk = 0, chunk[end + 1 :]
        data = carry + chunk if carry else chunk
        end = data.rfind(b"\n")
        if end < 0:
            carry = data
            if len(carry) > MAX_LINE_BYTES:
                skipping, carry = len(carry), b""
            continue
        carry = data[end + 1 :]
        for line in data[:end].split(b"\n"):
            # A line that began in an earlier chunk may have grown past the limit here.
            yield (line if len(line) <= MAX_LINE_BYTES else _TOO_LONG), len(line) + 1
        if len(carry) > MAX_LINE_BYTES:
            skipping, carry = len(carry), b""


class _Rows:
    """Decoded records as rows of the execution table.

    A skill the store does not know yet gets a provisional (negative) id: the writer registers
    it in its own transaction, with the first rows that name it, and publishes the real id in
    `registered` (`pull` fetches what the writer published, from another process); rows made
    before the reader has seen it are given the real id by the writer. (The reader registering
    it itself would have to wait for the writer's transaction to end.)
    """

    def __init__(
        self,
        known: _Lookups,
        now: dt.datetime,
        latest: dt.datetime,
        *,
        postgres: bool,
        pull: Callable[[], None] | None = None,
    ) -> None:
        self._known = known
        self._now = now
        self._latest = latest  # the latest timestamp taken
        self._skill_ids: dict[str, int] = {}
        self._digests: dict[int, dict[str, str]] = {}
        self.postgres = postgres
        self._pull = pull
        self.new_skills: dict[int, str] = {}  # provisional id -> name
        self.registered: dict[int, int] = {}  # provisional id -> id, filled by the writer
        self._applied = 0  # how many of `registered` `_skill_ids` has taken in
        self._day, self._day_text = 0, ""  # the last date `stored_time` formatted

    def skill_id(self, name: str) -> int:
        found = self._skill_ids.get(name)
        if found is None:
            found = self._known.skill_id(name)
            if found is None:
                found = -1 - len(self.new_skills)
                self.new_skills[found] = name
            self._skill_ids[name] = found
        return found

    def refresh(self) -> None:
        """Use the real ids of the skills the writer has registered since the last call."""
        if self._pull is not None:
            self._pull()
        if len(self.registered) > self._applied:
            # (a copy: the writer may add to it meanwhile)
            for provisional, real in list(self.registered.items())[self._applied :]:
                self._skill_ids[self.new_skills[provisional]] = real
                self._applied += 1

    def digest(self, skill_id: int, version: str) -> str | None:
        """The registered digest of a version (a version maps to one digest forever)."""
        if skill_id < 0:
            return None  # a skill new to the store has no versions
        known = self._digests.get(skill_id)
        if known is None:
            known = self._digests[skill_id] = self._known.version_digests(skill_id)
        return known.get(version)

    def stored_time(self, stamp: dt.datetime) -> str:
        """`stamp` (UTC) as the store is given it: naive, as text (SQLite keeps that, and
        PostgreSQL's COPY reads it), `stamp.isoformat(" ", "microseconds")[:26]` built from
        parts, the date once a day: isoformat goes through printf, ~40% of making a row."""
        day = stamp.toordinal()
        if day != self._day:
            self._day = day
            self._day_text = f"{stamp.year:04d}-{stamp.month:02d}-{stamp.day:02d} "
        two = _TWO_DIGITS
        return (
            f"{self._day_text}{two[stamp.hour]}:{two[stamp.minute]}:{two[stamp.second]}"
            f".{str(1_000_000 + stamp.microsecond)[1:]}"
        )

    def row(self, record: ExecutionRecord, file_skill: str) -> tuple[Any, ...] | str:
        """The row for a record, or why it cannot be stored."""
        skill = record.skill or file_skill
        skill_id = self._skill_ids.get(skill)
        stamp: Any = record.timestamp
        zone = stamp.tzinfo
        if skill_id is None or zone is not _UTC:
            problem = record_problem(record, file_skill, latest=self._latest)
            if problem:
                return problem
            if skill_id is None:
                skill_id = self.skill_id(skill)
            if zone is not _UTC:
                stamp = stamp.astimezone(_UTC)
        elif stamp > self._latest:
            return future_problem(stamp, self._latest)
        elif stamp < EARLIEST:
            return past_problem(stamp)
        # A digest given is what ran, whatever the version says (content edited in place
        # without a new version): the execution is that content's.
        digest = record.digest
        if digest is None and record.version is not None:
            digest = self.digest(skill_id, record.version)
        # Naive UTC, as the store keeps time (SQLite: this text form, which date functions read).
        stamp = self.stored_time(stamp)
        followed, missed, tags = record.patterns_followed, record.patterns_missed, record.tags
        exception: Any = record.exception
        positive: Any = record.false_positive
        negative: Any = record.false_negative
        critical: Any = record.critical
        benchmark: Any = tags is not None and tags.get("source") == BENCHMARK_SOURCE
        if not self.postgres:
            # Stored as 0/1 either way; sqlite3 binds an int directly, where for a bool it first
            # looks for an adapter and fails (an AttributeError made and dropped, ~0.4 µs each).
            exception, positive, negative, critical = +exception, +positive, +negative, +critical
            benchmark = +benchmark
        return (
            record.execution_id,
            skill_id,
            record.version,
            digest,
            stamp,
            record.pattern_fidelity,
            record.outcome_quality,
            record.execution_time_ms,
            len(followed) if isinstance(followed, list) else followed,
            len(missed) if isinstance(missed, list) else missed,
            exception,
            positive,
            negative,
            critical,
            record.subject,
            None if tags is None else _ENCODER.encode(tags).decode(),
            benchmark,
        )


def _open(file: InboxFile, unreadable: list[tuple[str, str]]) -> BinaryIO | None:
    """The file open for reading; None when it went away (rotated since the directory was
    listed: its new name is read next time) or cannot be read (added to `unreadable`: the other
    files are read all the same, and this one where it was once it can be)."""
    name = os.fsencode(file.path)
    try:
        name.decode("utf-8")
    except UnicodeDecodeError:
        # Its path would go into the checkpoint and the quarantine, which keep text.
        shown = name.decode("utf-8", "backslashreplace")
        unreadable.append((shown, "its name is not valid UTF-8: rename it"))
        return None
    try:
        return file.path.open("rb")
    except FileNotFoundError:
        return None
    except OSError as exc:
        unreadable.append((str(file.path), exc.strerror or str(exc)))
        return None


def _batches(
    file: InboxFile,
    found: Callable[[int, int], _Position | None],
    rows: _Rows,
    batch_size: int,
    result: IngestResult,
    progress: Callable[[int], None] | None,
) -> Iterator[tuple[_Taken, list[tuple[Any, ...]]]]:
    """Read one file from its checkpoint (`found` by device and inode), in batches of decoded
    rows."""
    handle = _open(file, result.unreadable)
    if handle is None:
        return
    with handle:
        status = os.fstat(handle.fileno())
        offset, line, follows = _start(file, handle, found(status.st_dev, status.st_ino), result)
        if status.st_size <= offset:
            return
        head = os.pread(handle.fileno(), HEAD_BYTES, 0)
        decode, make_row, path = _DECODER.decode, rows.row, str(file.path)
        batch: list[tuple[Any, ...]] = []
        bad: list[tuple[str, int, str, str]] = []
        count = consumed = 0

        hashes: dict[int, str] = {}  # of the head's first bytes, by length: an array's once

        def cut() -> tuple[_Taken, list[tuple[Any, ...]]]:
            """The lines read since the last batch, as a batch (its checkpoint: `offset`)."""
            nonlocal follows
            length = _head_length(head, offset, reading.kept is not None)
            if length not in hashes:
                hashes[length] = _hash(head[:length])
            made = _Taken(
                path,
                status.st_dev,
                status.st_ino,
                offset,
                line,
                length,
                hashes[length],
                count,
                len(batch),
                consumed,
                bad,
                follows,
            )
            follows = made.checkpoint()
            return made, batch

        rows.refresh()
        reading = _records(file, handle, offset, line, result.unreadable)
        if reading.kept is not None:
            head = reading.kept
        for text, length in reading.records:
            consumed += length
            count += 1
            line += 1
            if isinstance(text, str):
                bad.append((path, line, text, ""))
            elif text.strip():
                try:
                    record = decode(text)
                    # (a NUL can only come escaped: a raw one is not JSON)
                    made = (b"\\u0000" in text and nul_problem(record)) or make_row(
                        record, file.skill
                    )
                except msgspec.ValidationError as exc:
                    made = f"not a valid record: {exc}"
                except msgspec.DecodeError as exc:
                    made = f"not valid JSON: {exc}"
                if isinstance(made, str):
                    bad.append((path, line, made, text.decode("utf-8", "replace")))
                else:
                    batch.append(made)
            if count >= batch_size:
                offset += consumed
                yield cut()
                if progress is not None:
                    progress(consumed)
                batch, bad, count, consumed = [], [], 0, 0
                rows.refresh()
        if count:
            offset += consumed
            yield cut()
            if progress is not None:
                progress(consumed)
        if reading.may_wait and os.fstat(handle.fileno()).st_size > offset:
            result.waiting.append(str(file.path))


def _units(
    files: list[InboxFile],
    found: Callable[[int, int], _Position | None],
    rows: _Rows,
    batch_size: int,
    most: int,
    result: IngestResult,
    progress: Callable[[int], None] | None = None,
    *,
    together: int = WRITE_RECORDS,
) -> Iterator[_Unit]:
    """The files' batches, their rows made ready to insert; those of a file that go in one
    statement (up to `together` records; one batch if it is larger) in one unit. `progress` is
    called after each batch is read, once what was yielded before it is taken (with `together`
    0, once the unit of that batch alone is).

    A unit holds one file's batches: another ingestion that took some of its lines meanwhile
    makes the writer leave all of them out (`_write`), which batches of several files whose
    rows are combined could not be."""
    for file in files:
        waiting: list[tuple[_Taken, list[tuple[Any, ...]]]] = []
        records = 0
        for taken, batch in _batches(file, found, rows, batch_size, result, progress):
            waiting.append((taken, batch))
            records += len(batch)
            if records + batch_size > together:
                yield _unit(waiting, rows, most)
                waiting, records = [], 0
        if waiting:
            yield _unit(waiting, rows, most)


def _unit(batches: list[tuple[_Taken, list[tuple[Any, ...]]]], rows: _Rows, most: int) -> _Unit:
    together = (
        batches[0][1] if len(batches) == 1 else [row for _, batch in batches for row in batch]
    )
    prepared = store_executions.prepare_executions(together, most)
    new = {skill: rows.new_skills[skill] for skill in prepared.skill_ids if skill < 0}
    return _Unit([taken for taken, _ in batches], prepared, new)


class _Lookups(Protocol):
    """What reading needs of the store besides the files' checkpoints."""

    def skill_id(self, name: str) -> int | None: ...

    def version_digests(self, skill_id: int) -> dict[str, str]: ...


class _StoreLookups:
    """Looked up in the store as needed (reading in this process)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    def skill_id(self, name: str) -> int | None:
        with self._store.reading() as tx:
            return tx.skill_id(name)

    def version_digests(self, skill_id: int) -> dict[str, str]:
        with self._store.reading() as tx:
            return store_executions.version_digests(tx, skill_id)


class _Known(msgspec.Struct, array_like=True):
    """What the store knows, read before reading starts, for a reading process (which has no
    connection to the store of its own): skill ids by name and each skill's version digests."""

    skills: dict[str, int]
    digests: dict[int, dict[str, str]]

    def skill_id(self, name: str) -> int | None:
        return self.skills.get(name)

    def version_digests(self, skill_id: int) -> dict[str, str]:
        return self.digests.get(skill_id, {})


class _Skills:
    """The writer's side of provisional skill ids: the names they stand for, and their real ids
    once registered, passed on to the reading side by `tell`."""

    def __init__(self, now: dt.datetime, tell: Callable[[int, int], None]) -> None:
        self._now = now
        self._tell = tell
        self.names: dict[int, str] = {}  # provisional id -> name
        self._real: dict[int, int] = {}

    def real(self, tx: Transaction, provisional: int) -> int:
        """The real id of a provisional one, registered in `tx` if need be."""
        found = self._real.get(provisional)
        if found is None:
            found = self._real[provisional] = tx.ensure_skill(self.names[provisional], self._now)
            self._tell(provisional, found)
        return found


class _Written:
    """What one write transaction has done so far: the files' checkpoints as it left them (it
    claimed them), their last batches (whose checkpoints it saves before it commits), and the
    skills whose existence it checked."""

    def __init__(self) -> None:
        self.positions: dict[tuple[int, int], tuple[int, int, str] | None] = {}
        self.last: dict[tuple[int, int], _Taken] = {}
        self.skills: set[int] = set()

    def save_checkpoints(self, tx: Transaction, now: dt.datetime) -> None:
        # Each file's last checkpoint only: the earlier ones would be overwritten in this same
        # transaction.
        for batch in self.last.values():
            store_executions.save_checkpoint(
                tx,
                device=batch.device,
                inode=batch.inode,
                path=batch.path,
                offset=batch.offset,
                line=batch.line,
                head_hash=batch.head_hash,
                head_length=batch.head_length,
                at=now,
            )


def _write(
    tx: Transaction, unit: _Unit, written: _Written, skills: _Skills, now: dt.datetime
) -> tuple[list[_Taken], int]:
    """A unit in the caller's transaction, whose checkpoints `written.save_checkpoints` saves
    before it commits; the batches written, and the number of rows they inserted.

    A unit whose file's checkpoint is no longer the one its first batch follows was read
    meanwhile by another ingestion (two cron runs at once): it is left out, not inserted as
    duplicates nor its bad lines quarantined a second time."""
    first, last = unit.batches[0], unit.batches[-1]
    identity = (first.device, first.inode)
    if identity not in written.positions:
        found = store_executions.claim_checkpoint(tx, *identity)
        written.positions[identity] = (found.offset, found.line, found.head_hash) if found else None
    if written.positions[identity] != first.follows:
        return [], 0
    written.positions[identity] = last.checkpoint()
    written.last[identity] = last
    unit.prepared.set_skill_ids(lambda provisional: skills.real(tx, provisional))
    inserted = store_executions.insert_prepared(tx, unit.prepared, written.skills)
    for batch in unit.batches:
        if batch.bad:
            store_executions.quarantine(tx, batch.bad, now)
    return unit.batches, inserted


def _unread(files: list[InboxFile], saved: dict[tuple[int, int], _Position]) -> int:
    """Bytes of the files not yet ingested (an upper bound: rewritten files count whole)."""
    total = 0
    for file in files:
        try:
            status = file.path.stat()
        except FileNotFoundError:
            continue
        known = saved.get((status.st_dev, status.st_ino))
        done = known[0] if known is not None and known[0] <= status.st_size else 0
        total += status.st_size - done
    return total


def _saved(store: Store) -> dict[tuple[int, int], _Position]:
    return {
        (c.device, c.inode): (c.offset, c.line, c.head_hash, c.head_length)
        for c in store_executions.checkpoints(store)
    }


def pending_bytes(store: Store, inbox: Path) -> int:
    """Bytes of the inbox not yet ingested (an upper bound: rewritten files count whole)."""
    return _unread(inbox_files(inbox), _saved(store))


def ingest(
    store: Store,
    inbox: Path,
    *,
    batch_size: int = 1000,
    progress: Callable[[int], None] | None = None,
    now: dt.datetime | None = None,
    max_clock_skew: dt.timedelta = MAX_CLOCK_SKEW,
) -> IngestResult:
    """Ingest every new complete line of the inbox's files; see the module docstring. A record
    dated more than `max_clock_skew` after `now` is quarantined.

    More than READER_PROCESS_BYTES to read: the files are read and decoded in a process of its
    own (`_ReadingProcess`), and its rows written here by a thread of their own while this one
    takes the next ones from it; so the two work on two cores, neither waiting for the other's
    turn at Python's GIL. Less: read and written by this thread, one after the other (starting
    a process would take longer).
    """
    started = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    latest = now + max_clock_skew
    result = IngestResult()
    files = inbox_files(inbox)
    result.files = len(files)
    saved = _saved(store)
    with store.reading() as tx:
        most = store_executions.statement_rows(tx)
    postgres = store.dialect == "postgresql"
    if store.single_connection or _unread(files, saved) <= READER_PROCESS_BYTES:
        rows = _Rows(_StoreLookups(store), now, latest, postgres=postgres)
        skills = _Skills(now, rows.registered.__setitem__)
        # Each batch is written before the next is read: `progress` may pause (a progress bar
        # drawing), and what was read before is not left waiting meanwhile.
        units = _units(files, _finder(saved), rows, batch_size, most, result, progress, together=0)
        with store.bulk_writes(), store_executions.bulk_inserts(store):
            for unit in units:
                skills.names.update(unit.new_skills)
                with store.atomic() as tx:
                    written = _Written()
                    _count(result, _write(tx, unit, written, skills, now))
                    written.save_checkpoints(tx, now)
    else:
        with store.reading() as tx:
            known = _Known(
                store_executions.skill_ids_by_name(tx),
                store_executions.all_version_digests(tx),
            )
        job = _Job(
            [os.fsencode(file.path) for file in files],
            [(*identity, *position) for identity, position in saved.items()],
            known,
            batch_size,
            most,
            postgres,
            now,
            latest,
            {name: globals()[name] for name in _LIMITS},
        )
        _ingest_in_two(store, _ReadingProcess(job), result, progress, now)
    result.seconds = time.perf_counter() - started
    return result


def _finder(saved: dict[tuple[int, int], _Position]) -> Callable[[int, int], _Position | None]:
    return lambda device, inode: saved.get((device, inode))


def _count(result: IngestResult, written: tuple[list[_Taken], int]) -> int:
    """Count what `_write` wrote in the result; the records it took."""
    batches, inserted = written
    records = sum(batch.records for batch in batches)
    result.read += sum(batch.lines for batch in batches)
    result.inserted += inserted
    result.duplicates += records - inserted
    result.quarantined += sum(len(batch.bad) for batch in batches)
    return records


def _ingest_in_two(
    store: Store,
    reading: _ReadingProcess,
    result: IngestResult,
    progress: Callable[[int], None] | None,
    now: dt.datetime,
) -> None:
    """Units from the reading process, written by a thread of their own."""
    skills = _Skills(now, reading.tell)
    pipe: queue.Queue[_Unit | None] = queue.Queue(maxsize=2)
    failure: list[BaseException] = []
    # Units written, freed by this thread: freeing a unit's values holds the GIL for a few ms,
    # which the writer would spend doing it instead of writing the next.
    spent: list[_Unit] = []

    def writer() -> None:
        # A transaction takes units while more come, up to COMMIT_RECORDS: committing every
        # 1,000 records rewrites the same index pages thousands of times. Each batch's
        # checkpoint is in the transaction with its rows, so a kill loses both or neither.
        # Holding the write lock, it waits at most WAIT_SECONDS for the reader: another process
        # may need the lock.
        unit = pipe.get()
        ended = unit is None
        try:
            with store.bulk_writes(), store_executions.bulk_inserts(store):
                while unit is not None:
                    with store.atomic() as tx:
                        written, records = _Written(), 0
                        while unit is not None:
                            records += _count(result, _write(tx, unit, written, skills, now))
                            spent.append(unit)
                            unit = None
                            if records >= COMMIT_RECORDS:
                                break
                            try:
                                unit = pipe.get(timeout=WAIT_SECONDS)
                            except queue.Empty:
                                break
                            ended = unit is None
                        written.save_checkpoints(tx, now)
                    if unit is None and not ended:
                        unit = pipe.get()
                        ended = unit is None
        except BaseException as exc:
            failure.append(exc)
            while not ended:  # let the reader finish: it stops at its next unit
                ended = pipe.get() is None
        finally:
            store.release_connection()  # this thread ends: its connection with it

    thread = threading.Thread(target=writer, name="skillstage-ingest-writer", daemon=True)
    thread.start()
    try:
        for unit in reading.units(result):
            if failure:
                break
            skills.names.update(unit.new_skills)
            pipe.put(unit)
            spent.clear()
            if progress is not None:
                for batch in unit.batches:
                    progress(batch.consumed)
    finally:
        pipe.put(None)
        thread.join()
        reading.close()
    if failure:
        raise failure[0]


# -- the reading process -----------------------------------------------------------------------


class _Job(msgspec.Struct, array_like=True):
    """What a reading process is to read, and what it needs of the store."""

    files: list[bytes]  # their paths, as the file system has them (not always UTF-8)
    saved: list[tuple[int, int, int, int, str, int]]  # device, inode, and the checkpoint
    known: _Known
    batch_size: int
    most: int
    postgres: bool
    now: dt.datetime
    latest: dt.datetime
    limits: dict[str, int | str]  # this module's limits, as the ingesting process has them


_LIMITS = (
    "CHUNK_BYTES",
    "MAX_LINE_BYTES",
    "HEAD_BYTES",
    "MAX_ARRAY_BYTES",
    "WRITE_RECORDS",
    "_TOO_LONG",
)


class _Done(msgspec.Struct, array_like=True):
    """A reading process's last word: what it found of the files, or why it failed."""

    waiting: list[str]
    restarted: list[str]
    unreadable: list[tuple[str, str]]
    error: str | None = None


_PAIR = struct.Struct("<qq")  # a provisional skill id and its real one, to the reading process
_LENGTH = struct.Struct("<I")
_MSGPACK = msgspec.msgpack.Encoder()
_UNIT = msgspec.msgpack.Decoder(_Unit)
_DONE = msgspec.msgpack.Decoder(_Done)
_PIPE_BYTES = 1 << 20  # the pipe from the reading process holds about a unit


def _frame(kind: bytes, payload: bytes) -> bytes:
    return kind + _LENGTH.pack(len(payload)) + payload


def _read_frame(source: IO[bytes]) -> tuple[bytes, bytes] | None:
    """A frame written by `_frame`; None at the end of `source`."""
    head = _read_exactly(source, 1 + _LENGTH.size)
    if head is None:
        return None
    (length,) = _LENGTH.unpack(head[1:])
    payload = _read_exactly(source, length)
    return None if payload is None else (head[:1], payload)


def _read_exactly(source: IO[bytes], size: int) -> bytes | None:
    """`size` bytes of `source`, or None when it ends first."""
    data = source.read(size)
    if len(data) == size:
        return data
    parts = [data]
    while size > sum(map(len, parts)):
        more = source.read(size - sum(map(len, parts)))
        if not more:
            return None
        parts.append(more)
    return b"".join(parts)


class _ReadingProcess:
    """A process reading and decoding the inbox (`_read_inbox`), its rows made ready to insert:
    `units` yields them as it sends them. The real ids of skills the writer registers go back
    to it (`tell`), so that the rows it makes after carry them."""

    def __init__(self, job: _Job) -> None:
        # The reading process imports this module as this process did.
        root = str(Path(skillstage.__file__).resolve().parent.parent)
        paths = [root, *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        self._process = subprocess.Popen(
            [sys.executable, "-c", f"import {__name__}; {__name__}._read_inbox()"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)},
        )
        assert self._process.stdin is not None and self._process.stdout is not None
        self._out = self._process.stdout
        self._in = self._process.stdin
        with contextlib.suppress(OSError, AttributeError):  # Linux: a larger pipe buffer
            fcntl.fcntl(self._out.fileno(), fcntl.F_SETPIPE_SZ, _PIPE_BYTES)
        try:
            self._in.write(_frame(b"J", _MSGPACK.encode(job)))
            self._in.flush()
        except BrokenPipeError:
            pass  # it failed to start: `units` says how
        os.set_blocking(self._in.fileno(), False)
        self._told: collections.deque[bytes] = collections.deque()
        self._unsent = bytearray()

    def tell(self, provisional: int, real: int) -> None:
        """From any thread: the real id of a provisional skill id (sent by `units`'s thread, so
        that a full pipe never stops the writer)."""
        self._told.append(_PAIR.pack(provisional, real))

    def _send_told(self) -> None:
        while self._told:
            self._unsent += self._told.popleft()
        if self._unsent:
            try:
                del self._unsent[: os.write(self._in.fileno(), self._unsent)]
            except BlockingIOError:
                pass  # it reads them between batches
            except BrokenPipeError:
                self._unsent.clear()

    def units(self, result: IngestResult) -> Iterator[_Unit]:
        """The units it reads, until it has read all; what it found of the files is put in
        `result`. Raises SkillstageError when it fails."""
        while True:
            self._send_told()
            frame = _read_frame(self._out)
            if frame is None:
                code = self._process.wait()
                raise SkillstageError(
                    f"the process reading the metrics inbox ended unexpectedly (exit {code})",
                    hint="see its error output above; run the ingestion again",
                )
            kind, payload = frame
            if kind == b"U":
                yield _UNIT.decode(payload)
                continue
            done = _DONE.decode(payload)
            if done.error is not None:
                raise SkillstageError(f"reading the metrics inbox failed: {done.error}")
            result.waiting.extend(done.waiting)
            result.restarted.extend(done.restarted)
            result.unreadable.extend(done.unreadable)
            return

    def close(self) -> None:
        """Wait for its end; when the ingestion failed, it ends at the pipes' closing (writing
        to one whose reader is gone, or finding the other closed), or is killed."""
        for pipe in (self._in, self._out):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()


def _read_inbox() -> None:
    """The reading process (`_ReadingProcess`): its job on stdin, frames on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C: the ingesting process stops this one
    # Reading makes no reference cycles worth collecting, but the collector, run every 700
    # allocations, went through the batches' rows again and again (a few per cent of its time).
    gc.disable()
    frames = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, not among the frames
    source = os.fdopen(0, "rb", buffering=0)
    found = _read_frame(source)
    if found is None:
        return  # the ingestion stopped before it began
    job = msgspec.msgpack.decode(found[1], type=_Job)
    os.set_blocking(0, False)
    pairs = bytearray()

    def pull() -> None:
        """The real ids the writer sent of provisional skill ids."""
        nonlocal pairs
        while True:
            try:
                data = os.read(0, 1 << 16)
            except BlockingIOError:
                break
            if not data:  # the ingestion stopped (or its process died): so does reading
                os._exit(0)
            pairs += data
        whole = len(pairs) - len(pairs) % _PAIR.size
        for provisional, real in _PAIR.iter_unpack(pairs[:whole]):
            rows.registered[provisional] = real
        del pairs[:whole]

    result = IngestResult()
    rows = _Rows(job.known, job.now, job.latest, postgres=job.postgres, pull=pull)
    saved = {(d, i): (offset, line, head, length) for d, i, offset, line, head, length in job.saved}
    globals().update(job.limits)
    files = [file for path in job.files if (file := _inbox_file(Path(os.fsdecode(path))))]
    try:
        for unit in _units(files, _finder(saved), rows, job.batch_size, job.most, result):
            frames.write(_frame(b"U", _MSGPACK.encode(unit)))
            frames.flush()
        done = _Done(result.waiting, result.restarted, result.unreadable)
    except BrokenPipeError:  # the ingestion stopped (or its process died)
        os._exit(0)
    except Exception as exc:
        traceback.print_exc()
        done = _Done([], [], [], f"{type(exc).__name__}: {exc}")
    try:
        frames.write(_frame(b"D", _MSGPACK.encode(done)))
        frames.flush()
    except BrokenPipeError:
        os._exit(0)


@dataclass(frozen=True)
class PendingFile:
    path: str
    pending_bytes: int
    oldest: dt.datetime | None  # the timestamp of its first record not yet ingested


@dataclass
class LagReport:
    """How far ingestion is behind (seed 002 §7: alert when over an hour)."""

    now: dt.datetime
    alert_hours: float
    files: list[PendingFile]
    # Inbox files that cannot be read, and why: ingestion cannot get on with them, which is
    # an alert whatever their age.
    unreadable: list[tuple[str, str]] = field(default_factory=list)

    @property
    def oldest(self) -> dt.datetime | None:
        stamps = [f.oldest for f in self.files if f.oldest is not None]
        return min(stamps) if stamps else None

    @property
    def lag_seconds(self) -> float:
        oldest = self.oldest
        return max(0.0, (self.now - oldest).total_seconds()) if oldest else 0.0

    @property
    def alert(self) -> bool:
        return self.lag_seconds > self.alert_hours * 3600 or bool(self.unreadable)

    def to_dict(self) -> dict[str, Any]:
        oldest = self.oldest
        return {
            "lag_seconds": round(self.lag_seconds, 3),
            "oldest_pending": oldest.isoformat() if oldest else None,
            "pending_bytes": sum(f.pending_bytes for f in self.files),
            "alert_hours": self.alert_hours,
            "alert": self.alert,
            "unreadable": [{"path": path, "reason": why} for path, why in self.unreadable],
            "files": [
                {
                    "path": f.path,
                    "pending_bytes": f.pending_bytes,
                    "oldest_pending": f.oldest.isoformat() if f.oldest else None,
                }
                for f in self.files
            ],
        }


def lag(
    store: Store, inbox: Path, *, alert_hours: float = 1.0, now: dt.datetime | None = None
) -> LagReport:
    """The age of the oldest complete record not yet ingested, per file and overall."""
    now = now or dt.datetime.now(dt.UTC)
    pending: list[PendingFile] = []
    by_identity = {(c.device, c.inode): c for c in store_executions.checkpoints(store)}
    unreadable: list[tuple[str, str]] = []
    for file in inbox_files(inbox):
        handle = _open(file, unreadable)
        if handle is None:
            continue
        with handle:
            status = os.fstat(handle.fileno())
            known = by_identity.get((status.st_dev, status.st_ino))
            offset = line = 0
            if known is not None and known.offset <= status.st_size:
                head = os.pread(handle.fileno(), known.head_length, 0)
                if _hash(head) == known.head_hash:
                    offset, line = known.offset, known.line
            if status.st_size <= offset:
                continue
            oldest = None
            for text, _length in _records(file, handle, offset, line, unreadable).records:
                if isinstance(text, str) or not text.strip():
                    continue
                try:
                    stamp = _DECODER.decode(text).timestamp
                except msgspec.DecodeError:
                    continue  # a line for the quarantine; the next one tells the age
                if stamp.tzinfo is not None:
                    oldest = stamp.astimezone(dt.UTC)
                    break
            pending.append(PendingFile(str(file.path), status.st_size - offset, oldest))
    return LagReport(now, alert_hours, pending, unreadable)
