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

Memory is bounded: files are read in 1 MiB chunks, a line longer than `MAX_LINE_BYTES` is
quarantined without being held, and at most about `WRITE_RECORDS` records (two batches if they
are larger) wait for the writer.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import itertools
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

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
WRITE_RECORDS = 4096  # the writer inserts up to this many records of waiting batches at once
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
        match = INBOX_FILE.match(entry.name)
        if match and entry.is_file(follow_symlinks=False):
            skill = skill_from_file_name(match["skill"])
            found.append(InboxFile(Path(entry.path), skill, match["kind"], match["format"]))
    return found


def _hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class _Batch:
    file: InboxFile
    device: int
    inode: int
    rows: list[tuple[Any, ...]]
    bad: list[tuple[str, int, str, str]]
    offset: int  # after this batch
    line: int  # lines consumed after this batch
    head: bytes  # the file's first bytes; of a JSON array, all it keeps (`_Reading.kept`)
    lines: int  # lines in this batch
    provisional: list[int]  # indexes of the rows that carry a provisional skill id
    head_length: int  # of `head`, what the checkpoint after this batch hashes (`_head_length`)
    head_hash: str
    # The file's checkpoint in the store this batch follows: (offset, line, head hash), or None
    # for none. Another ingestion that moved it meanwhile has taken these lines (`_write`).
    follows: tuple[int, int, str] | None = None

    def checkpoint(self) -> tuple[int, int, str]:
        """The checkpoint after this batch: offset, line, head hash."""
        return self.offset, self.line, self.head_hash


def _head_length(head: bytes, offset: int, array: bool) -> int:
    """How much of a file's head its checkpoint hashes: all an array keeps (its batches before
    the last keep the offset they started at, the bytes read going with the last element, but
    must still tell the elements they took from other ones), else what was read of it."""
    return len(head) if array else min(offset, len(head))


def _start(
    store: Store, file: InboxFile, handle: Any, result: IngestResult
) -> tuple[int, int, tuple[int, int, str] | None]:
    """Where to start reading an open file: its checkpoint, or 0 when it is new or was rewritten;
    and the checkpoint found (see `_Batch.follows`)."""
    status = os.fstat(handle.fileno())
    with store.reading() as tx:
        found = store_executions.find_checkpoint(tx, status.st_dev, status.st_ino)
    if found is None:
        return 0, 0, None
    stored = (found.offset, found.line, found.head_hash)
    head = os.pread(handle.fileno(), found.head_length, 0)
    if status.st_size < found.offset or _hash(head) != found.head_hash:
        result.restarted.append(str(file.path))
        return 0, 0, stored
    return found.offset, found.line, stored


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
    `registered`; rows made before the reader has seen it are rewritten by the writer. (The
    reader registering it itself would have to wait for the writer's transaction to end.)
    """

    def __init__(self, store: Store, now: dt.datetime, latest: dt.datetime) -> None:
        self._store = store
        self._now = now
        self._latest = latest  # the latest timestamp taken
        self._skill_ids: dict[str, int] = {}
        self._digests: dict[int, dict[str, str]] = {}
        self.postgres = store.dialect == "postgresql"
        self.new_skills: dict[int, str] = {}  # provisional id -> name
        self.registered: dict[int, int] = {}  # provisional id -> id, filled by the writer
        self._applied = 0  # how many of `registered` `_skill_ids` has taken in
        self._day, self._day_text = 0, ""  # the last date `sqlite_time` formatted

    def skill_id(self, name: str) -> int:
        found = self._skill_ids.get(name)
        if found is None:
            with self._store.reading() as tx:
                found = tx.skill_id(name)
            if found is None:
                found = -1 - len(self.new_skills)
                self.new_skills[found] = name
            self._skill_ids[name] = found
        return found

    def refresh(self) -> None:
        """Use the real ids of the skills the writer has registered since the last call."""
        if len(self.registered) > self._applied:
            # (a copy: the writer may add to it meanwhile)
            for provisional, real in list(self.registered.items())[self._applied :]:
                self._skill_ids[self.new_skills[provisional]] = real
                self._applied += 1

    def register(self, tx: Transaction, provisional: int) -> int:
        """The writer's side: the real id of a provisional one, registered in `tx` if need be."""
        found = self.registered.get(provisional)
        if found is None:
            found = self.registered[provisional] = tx.ensure_skill(
                self.new_skills[provisional], self._now
            )
        return found

    def digest(self, skill_id: int, version: str) -> str | None:
        """The registered digest of a version (a version maps to one digest forever)."""
        if skill_id < 0:
            return None  # a skill new to the store has no versions
        known = self._digests.get(skill_id)
        if known is None:
            with self._store.reading() as tx:
                known = self._digests[skill_id] = store_executions.version_digests(tx, skill_id)
        return known.get(version)

    def sqlite_time(self, stamp: dt.datetime) -> str:
        """`stamp` (UTC) as SQLite keeps it: `stamp.isoformat(" ", "microseconds")[:26]`, built
        from parts, the date once a day: isoformat goes through printf, ~40% of making a row."""
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
        # Naive UTC, as the store keeps time (SQLite: its text form, which date functions read).
        stamp = stamp.replace(tzinfo=None) if self.postgres else self.sqlite_time(stamp)
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
    store: Store,
    file: InboxFile,
    rows: _Rows,
    batch_size: int,
    result: IngestResult,
    progress: Callable[[int], None] | None,
) -> Iterator[_Batch]:
    """Read one file from its checkpoint, in batches of decoded rows."""
    handle = _open(file, result.unreadable)
    if handle is None:
        return
    with handle:
        status = os.fstat(handle.fileno())
        offset, line, follows = _start(store, file, handle, result)
        if status.st_size <= offset:
            return
        head = os.pread(handle.fileno(), HEAD_BYTES, 0)
        decode, make_row, path = _DECODER.decode, rows.row, str(file.path)
        batch: list[tuple[Any, ...]] = []
        bad: list[tuple[str, int, str, str]] = []
        provisional: list[int] = []
        count = consumed = 0

        hashes: dict[int, str] = {}  # of the head's first bytes, by length: an array's once

        def cut() -> _Batch:
            """The lines read since the last batch, as a batch (its checkpoint: `offset`)."""
            nonlocal follows
            length = _head_length(head, offset, reading.kept is not None)
            if length not in hashes:
                hashes[length] = _hash(head[:length])
            made = _Batch(
                file,
                status.st_dev,
                status.st_ino,
                batch,
                bad,
                offset,
                line,
                head,
                count,
                provisional,
                length,
                hashes[length],
                follows,
            )
            follows = made.checkpoint()
            return made

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
                    if made[1] < 0:
                        provisional.append(len(batch))
                    batch.append(made)
            if count >= batch_size:
                offset += consumed
                yield cut()
                if progress is not None:
                    progress(consumed)
                batch, bad, provisional, count, consumed = [], [], [], 0, 0
                rows.refresh()
        if count:
            offset += consumed
            yield cut()
            if progress is not None:
                progress(consumed)
        if reading.may_wait and os.fstat(handle.fileno()).st_size > offset:
            result.waiting.append(str(file.path))


def _write(
    tx: Transaction, batches: list[_Batch], rows: _Rows, now: dt.datetime
) -> tuple[list[_Batch], int]:
    """Batches, in order, and their files' checkpoints, in the caller's transaction; the batches
    written, and the number of rows they inserted.

    A file whose checkpoint is no longer the one its first batch here follows was read meanwhile
    by another ingestion (two cron runs at once): its batches are left out, not inserted as
    duplicates nor their bad lines quarantined a second time."""
    taken: set[tuple[int, int]] = set()
    checked: set[tuple[int, int]] = set()
    for batch in batches:
        identity = (batch.device, batch.inode)
        if identity not in checked:
            checked.add(identity)
            found = store_executions.claim_checkpoint(tx, *identity)
            stored = (found.offset, found.line, found.head_hash) if found else None
            if stored != batch.follows:
                taken.add(identity)
    batches = [batch for batch in batches if (batch.device, batch.inode) not in taken]
    if not batches:
        return batches, 0
    for batch in batches:
        for index in batch.provisional:
            row = batch.rows[index]
            batch.rows[index] = (row[0], rows.register(tx, row[1]), *row[2:])
    together = (
        batches[0].rows
        if len(batches) == 1
        else list(itertools.chain.from_iterable(batch.rows for batch in batches))
    )
    inserted = store_executions.insert_executions(tx, together)
    last: dict[tuple[int, int], _Batch] = {}  # each file's last batch
    for batch in batches:
        if batch.bad:
            store_executions.quarantine(tx, batch.bad, now)
        last[batch.device, batch.inode] = batch
    # The earlier batches' checkpoints would be overwritten in this same transaction: only the
    # last one per file is saved (each statement lets the reading thread take the GIL, and the
    # writer waits up to 5 ms to get it back).
    for batch in last.values():
        store_executions.save_checkpoint(
            tx,
            device=batch.device,
            inode=batch.inode,
            path=str(batch.file.path),
            offset=batch.offset,
            line=batch.line,
            head_hash=batch.head_hash,
            head_length=batch.head_length,
            at=now,
        )
    return batches, inserted


def pending_bytes(store: Store, inbox: Path) -> int:
    """Bytes of the inbox not yet ingested (an upper bound: rewritten files count whole)."""
    total = 0
    by_identity = {(c.device, c.inode): c for c in store_executions.checkpoints(store)}
    for file in inbox_files(inbox):
        try:
            status = file.path.stat()
        except FileNotFoundError:
            continue
        known = by_identity.get((status.st_dev, status.st_ino))
        done = known.offset if known is not None and known.offset <= status.st_size else 0
        total += status.st_size - done
    return total


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

    Decoding runs on this thread while a second one writes the batches decoded before, all
    those waiting in one statement (the database driver releases the GIL while SQLite works
    through it), so reading and writing overlap.
    """
    started = time.perf_counter()
    now = now or dt.datetime.now(dt.UTC)
    result = IngestResult()
    files = inbox_files(inbox)
    result.files = len(files)
    rows = _Rows(store, now, now + max_clock_skew)
    # Room for what the writer inserts at once, and for the batch being decoded meanwhile.
    pipe: queue.Queue[_Batch | None] = queue.Queue(maxsize=max(2, 1 + WRITE_RECORDS // batch_size))
    failure: list[BaseException] = []

    def gather(first: _Batch) -> tuple[list[_Batch], _Batch | None, bool]:
        """`first` and the batches waiting behind it that go in with it (up to WRITE_RECORDS
        records); the batch taken that did not fit (or None), and whether the end was taken."""
        group, records = [first], len(first.rows)
        while True:
            try:
                following = pipe.get_nowait()
            except queue.Empty:
                return group, None, False
            if following is None:
                return group, None, True
            records += len(following.rows)
            if records > WRITE_RECORDS:
                return group, following, False
            group.append(following)

    def write(tx: Transaction, group: list[_Batch]) -> int:
        """Write `group` in `tx`, counted in the result: the lines it took."""
        group, inserted = _write(tx, group, rows, now)
        lines = sum(b.lines for b in group)
        result.read += lines
        result.inserted += inserted
        result.duplicates += sum(len(b.rows) for b in group) - inserted
        result.quarantined += sum(len(b.bad) for b in group)
        return lines

    if store.single_connection:
        # An in-memory store lives on one connection, which a writing thread and this one
        # cannot use at once: each batch is written as soon as it is decoded, here.
        with store.bulk_writes(), store_executions.bulk_inserts(store):
            for file in files:
                for batch in _batches(store, file, rows, batch_size, result, progress):
                    with store.atomic() as tx:
                        write(tx, [batch])
        result.seconds = time.perf_counter() - started
        return result

    def writer() -> None:
        # A transaction takes batches while more are waiting, up to COMMIT_RECORDS: committing
        # every 1,000 records rewrites the same index pages thousands of times. Each batch's
        # checkpoint is in the transaction with its rows, so a kill loses both or neither.
        # Never wait for the reader while holding the write lock: another process may need it.
        batch: _Batch | None = pipe.get()
        ended = batch is None
        try:
            with store.bulk_writes(), store_executions.bulk_inserts(store):
                while batch is not None:
                    with store.atomic() as tx:
                        written = 0
                        while batch is not None:
                            group, batch, ended = gather(batch)
                            written += write(tx, group)
                            if ended or written >= COMMIT_RECORDS:
                                break
                            if batch is None:
                                try:
                                    batch = pipe.get_nowait()
                                except queue.Empty:
                                    break
                                ended = batch is None
                    if batch is None and not ended:
                        batch = pipe.get()
                        ended = batch is None
        except BaseException as exc:
            failure.append(exc)
            while not ended:  # let the reader finish: it stops at its next batch
                ended = pipe.get() is None
        finally:
            store.release_connection()  # this thread ends: its connection with it

    thread = threading.Thread(target=writer, name="skillstage-ingest-writer", daemon=True)
    thread.start()
    try:
        for file in files:
            for batch in _batches(store, file, rows, batch_size, result, progress):
                if failure:
                    break
                pipe.put(batch)
            if failure:
                break
    finally:
        pipe.put(None)
        thread.join()
    if failure:
        raise failure[0]
    result.seconds = time.perf_counter() - started
    return result


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
