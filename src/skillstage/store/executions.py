"""The store's side of execution metrics: ingestion checkpoints, bulk inserts of executions,
the quarantine, eval runs, and the samples gates and comparisons read.

Bulk inserts: SQLite through multi-row INSERT OR IGNORE statements of up to 4,096 rows in id
order (an execution id seen before is a duplicate, never a second row); PostgreSQL through COPY
into a temporary table, then one INSERT … SELECT … ON CONFLICT DO NOTHING. `prepare_executions`
makes the rows ready without the database (ingestion does it in another process), and
`insert_prepared` inserts them.
"""

from __future__ import annotations

import datetime as dt
import functools
import itertools
import operator
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import msgspec

from skillstage.store.store import Store, Transaction

# The execution table's columns, in the order ingestion's rows carry them.
EXECUTION_COLUMNS = (
    "execution_id",
    "skill_id",
    "version",
    "digest",
    "timestamp",
    "pattern_fidelity",
    "outcome_quality",
    "execution_time_ms",
    "patterns_followed",
    "patterns_missed",
    "exception",
    "false_positive",
    "false_negative",
    "critical",
    "subject",
    "tags",
    "benchmark",
)
_FLAGS = ("exception", "false_positive", "false_negative", "critical", "benchmark")
_QUOTED = ", ".join(f'"{c}"' for c in EXECUTION_COLUMNS)
# Rows per multi-row INSERT on SQLite: powers of two, so that the statements prepared (the driver
# caches them; the largest takes a few MB) are few whatever the batch sizes.
_STATEMENT_ROWS: tuple[int, ...] = tuple(2**n for n in range(4, 13))  # 16 … 4096
# `bulk_inserts`: SQLite's write-ahead log is checkpointed when it holds this much (default:
# after any commit that leaves it over 1,000 pages).
BULK_CHECKPOINT_BYTES = 256 << 20


@dataclass(frozen=True)
class Checkpoint:
    """How far ingestion has read one inbox file (identified by device and inode)."""

    id: int
    device: int
    inode: int
    path: str
    offset: int
    line: int
    head_hash: str
    head_length: int


def find_checkpoint(tx: Transaction, device: int, inode: int) -> Checkpoint | None:
    row = tx.one(
        'SELECT id, device, inode, path, "offset", line, head_hash, head_length'
        " FROM ingest_checkpoint WHERE device = :device AND inode = :inode",
        {"device": device, "inode": inode},
    )
    return Checkpoint(*row) if row else None


def claim_checkpoint(tx: Transaction, device: int, inode: int) -> Checkpoint | None:
    """A file's checkpoint, read to be moved on in this (write) transaction: no other ingestion
    moves it before this one ends. SQLite's write transactions are one at a time already; on
    PostgreSQL a lock on the file's identity, held to the end of the transaction, makes them so."""
    if tx.dialect.name == "postgresql":
        tx.one(
            "SELECT pg_advisory_xact_lock(hashtext('skillstage-ingest:' || current_schema()"
            " || ':' || CAST(:device AS text) || ':' || CAST(:inode AS text)))",
            {"device": device, "inode": inode},
        )
    return find_checkpoint(tx, device, inode)


def checkpoints(store: Store) -> list[Checkpoint]:
    with store.reading() as tx:
        return [
            Checkpoint(*row)
            for row in tx.query(
                'SELECT id, device, inode, path, "offset", line, head_hash, head_length'
                " FROM ingest_checkpoint ORDER BY id"
            )
        ]


def save_checkpoint(
    tx: Transaction,
    *,
    device: int,
    inode: int,
    path: str,
    offset: int,
    line: int,
    head_hash: str,
    head_length: int,
    at: dt.datetime,
) -> None:
    params = {
        "device": device,
        "inode": inode,
        "path": path,
        "offset": offset,
        "line": line,
        "head_hash": head_hash,
        "head_length": head_length,
        "at": tx.dialect.time(at),
    }
    # One statement: two ingestions at once on PostgreSQL would both find no row to update,
    # and the second INSERT would break the (device, inode) key.
    tx.execute(
        'INSERT INTO ingest_checkpoint (device, inode, path, "offset", line, head_hash,'
        " head_length, updated_at) VALUES (:device, :inode, :path, :offset, :line,"
        " :head_hash, :head_length, :at) ON CONFLICT (device, inode) DO UPDATE SET"
        ' path = excluded.path, "offset" = excluded."offset", line = excluded.line,'
        " head_hash = excluded.head_hash, head_length = excluded.head_length,"
        " updated_at = excluded.updated_at",
        params,
    )


def skill_ids(tx: Transaction, names: Sequence[str], at: dt.datetime) -> dict[str, int]:
    """Each skill's id, registering the names not seen before."""
    return {name: tx.ensure_skill(name, at) for name in names}


def skill_ids_by_name(tx: Transaction) -> dict[str, int]:
    """Every skill's id, by name."""
    return dict(tx.query("SELECT name, id FROM skill"))


def all_version_digests(tx: Transaction) -> dict[int, dict[str, str]]:
    """Every registered version's digest, by skill id and version."""
    found: dict[int, dict[str, str]] = {}
    query = "SELECT skill_id, version, digest FROM skill_version"
    for skill_id, version, digest in tx.query(query):
        found.setdefault(skill_id, {})[version] = digest
    return found


def version_digests(tx: Transaction, skill_id: int) -> dict[str, str]:
    """Each registered version of a skill and its digest."""
    return dict(
        tx.query(
            "SELECT version, digest FROM skill_version WHERE skill_id = :skill_id",
            {"skill_id": skill_id},
        )
    )


class PreparedRows(msgspec.Struct, array_like=True):
    """Execution rows made ready for `insert_prepared` by `prepare_executions`, which needs no
    database: ingestion prepares them in its reading process, and its writer only binds them
    (and sends them between the two as MessagePack, hence the plain types)."""

    # PostgreSQL: the rows, one per execution id (COPY takes them). SQLite: none; the rows are
    # in `statements`.
    rows: list[list[Any]]
    count: int  # rows given, before those of one id were combined
    distinct: int  # rows after
    skill_ids: list[int]
    # SQLite: multi-row INSERTs, as (rows it stores, rows it takes, their values one after
    # another, in id order): filled up to a size for which a statement is prepared
    statements: list[tuple[int, int, list[Any]]]

    def stored_rows(self) -> Sequence[Sequence[Any]]:
        """The rows, one per execution id."""
        if not self.statements:
            return self.rows
        width = len(EXECUTION_COLUMNS)
        return [
            values[index * width : (index + 1) * width]
            for used, _, values in self.statements
            for index in range(used)
        ]

    def set_skill_ids(self, real: Callable[[int], int]) -> None:
        """Put `real(id)` for each negative skill id (a provisional one: ingestion registers the
        skills new to the store in its write transaction), asking for -1 before -2 and so on
        (the order ingestion met them, which registers them in that order)."""
        provisional = sorted((skill for skill in self.skill_ids if skill < 0), reverse=True)
        if not provisional:
            return
        known = {skill: real(skill) for skill in provisional}
        width = len(EXECUTION_COLUMNS)
        for _, _, values in self.statements:
            ids = values[1::width]
            if min(ids) < 0:
                values[1::width] = [known.get(skill, skill) for skill in ids]
        for row in self.rows:
            row[1] = known.get(row[1], row[1])
        self.skill_ids = [known.get(skill, skill) for skill in self.skill_ids]


def statement_rows(tx: Transaction) -> int:
    """The most rows `prepare_executions` puts in one INSERT for `tx`'s connection (SQLite
    limits the variables of a statement); 0 on PostgreSQL, which COPYs instead."""
    if tx.dialect.name != "sqlite":
        return 0
    limit = int(tx.connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER))
    most = limit // len(EXECUTION_COLUMNS)
    return max([size for size in _STATEMENT_ROWS if size <= most] or [1])


def prepare_executions(rows: Sequence[Sequence[Any]], most: int) -> PreparedRows:
    """Rows (in `EXECUTION_COLUMNS` order) made ready for `insert_prepared`: the rows of one id
    combined; with `most` (`statement_rows`, SQLite) in id order and cut into statements of up
    to `most` rows. Touches no database."""
    count = len(rows)
    rows = _combined(rows)
    skills = list(set(map(operator.itemgetter(1), rows)))
    if not most:
        return PreparedRows([list(row) for row in rows], count, len(rows), skills, [])
    # In id order: each insert lands next to the previous one in the primary key's index, whose
    # pages are then still in the CPU's caches (~15% less time with random ids). A stable sort:
    # of two rows with the same id, the first in the files is still the one stored.
    rows = sorted(rows, key=operator.itemgetter(0))
    sizes = [size for size in _STATEMENT_ROWS if size <= most] or [1]
    statements = []
    for start in range(0, len(rows), sizes[-1]):
        chunk = rows[start : start + sizes[-1]]
        size = next(size for size in sizes if size >= len(chunk))
        # Filled up with copies of its last row, which INSERT OR IGNORE stores at most once (the
        # first copy, unless the id is already stored): the count of rows inserted stays exact,
        # and one prepared statement serves every chunk up to its size.
        filled = itertools.chain(chunk, itertools.repeat(chunk[-1], size - len(chunk)))
        statements.append((len(chunk), size, list(itertools.chain.from_iterable(filled))))
    return PreparedRows([], count, len(rows), skills, statements)


def insert_executions(tx: Transaction, rows: Sequence[Sequence[Any]]) -> int:
    """Insert rows (in `EXECUTION_COLUMNS` order); the number of new executions.

    An execution id already stored is never a second row: the stored one is filled in from the
    new row (its missing values taken, its flags OR-ed), so the parts of one execution that
    seed 002's per-metric files (and our executions file) hold come together in either order.
    Rows of one id among `rows` are combined first.
    """
    if not rows:
        return 0
    return insert_prepared(tx, prepare_executions(rows, statement_rows(tx)))


def insert_prepared(
    tx: Transaction, prepared: PreparedRows, checked: set[int] | None = None
) -> int:
    """`insert_executions` of rows `prepare_executions` made ready for `tx`'s dialect; no skill
    id may be negative. `checked`: skills known to exist in this transaction (see
    `_require_skills`), added to."""
    if not prepared.distinct:
        return 0
    connection = tx.connection
    if tx.dialect.name == "sqlite":
        wanted = set(prepared.skill_ids)
        if checked is not None:
            wanted -= checked
            checked |= wanted
        _require_skills(tx, wanted)
        before = connection.total_changes
        for _, size, values in prepared.statements:
            # One statement of many rows is one call into SQLite, which works through all of
            # them without Python's GIL. (`executemany` takes the GIL back after every row, and
            # then waits for the thread holding it to let go: that halved ingestion's speed.)
            connection.execute(_values_sql(size), values)
        inserted = int(connection.total_changes - before)
        if inserted < prepared.distinct:
            connection.execute(
                "CREATE TEMPORARY TABLE IF NOT EXISTS ingest_batch AS SELECT * FROM execution"
                " WHERE 0"
            )
            connection.executemany(
                f"INSERT INTO temp.ingest_batch ({_QUOTED}) VALUES"
                f" ({', '.join('?' * len(EXECUTION_COLUMNS))})",
                prepared.stored_rows(),
            )
            connection.execute(_FILL_FROM_BATCH)
            connection.execute("DELETE FROM temp.ingest_batch")
        return inserted
    connection.execute(
        "CREATE TEMPORARY TABLE IF NOT EXISTS ingest_batch"
        " (LIKE execution INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
    )
    with connection.cursor() as cursor:
        with cursor.copy(f"COPY ingest_batch ({_QUOTED}) FROM STDIN") as copy:
            for row in prepared.rows:
                copy.write_row(row)
        cursor.execute(
            f"INSERT INTO execution ({_QUOTED}) SELECT {_QUOTED} FROM ingest_batch"
            " ON CONFLICT (execution_id) DO NOTHING"
        )
        inserted = int(cursor.rowcount)
        if inserted < prepared.distinct:
            cursor.execute(_FILL_FROM_BATCH)
        cursor.execute("DELETE FROM ingest_batch")
    return inserted


def _combined(rows: Sequence[Sequence[Any]]) -> Sequence[Sequence[Any]]:
    """One row per execution id: a later row fills in what an earlier one lacks."""
    if len({row[0] for row in rows}) == len(rows):
        return rows
    by_id: dict[Any, list[Any]] = {}
    for row in rows:
        known = by_id.get(row[0])
        if known is None:
            by_id[row[0]] = list(row)
            continue
        for index in _FILLED_INDEXES:
            if index in _FLAG_INDEXES:
                known[index] = known[index] or row[index]
            elif known[index] is None:
                known[index] = row[index]
    return [tuple(row) for row in by_id.values()]


# What the stored executions take from `ingest_batch` (the rows just written, in a temporary
# table) for ids they already had: missing values, and flags OR-ed. Only rows that gain
# something are written.
_FILLED = [c for c in EXECUTION_COLUMNS if c not in ("execution_id", "skill_id")]
_FILLED_INDEXES = [EXECUTION_COLUMNS.index(c) for c in _FILLED]
_FLAG_INDEXES = {EXECUTION_COLUMNS.index(c) for c in _FLAGS}
_FILL_FROM_BATCH = (
    "UPDATE execution AS e SET "
    + ", ".join(
        f'"{c}" = (e."{c}" OR b."{c}")' if c in _FLAGS else f'"{c}" = COALESCE(e."{c}", b."{c}")'
        for c in _FILLED
    )
    + " FROM ingest_batch AS b WHERE b.execution_id = e.execution_id AND ("
    + " OR ".join(
        f'(b."{c}" AND NOT e."{c}")'
        if c in _FLAGS
        else f'(e."{c}" IS NULL AND b."{c}" IS NOT NULL)'
        for c in _FILLED
    )
    + ")"
)


def _require_skills(tx: Transaction, skill_ids: Iterable[int]) -> None:
    """The execution table's foreign key, checked once for all the rows: `bulk_inserts` turns
    SQLite's own check off (see there). Inside the write transaction, so no skill can go away
    before the rows commit. Fails as SQLite's check would."""
    wanted = list(skill_ids)
    for start in range(0, len(wanted), 500):
        params = {f"s{index}": skill for index, skill in enumerate(wanted[start : start + 500])}
        names = ", ".join(":" + key for key in params)
        if len(tx.query(f"SELECT id FROM skill WHERE id IN ({names})", params)) != len(params):
            raise sqlite3.IntegrityError("FOREIGN KEY constraint failed")


@functools.cache
def _values_sql(rows: int) -> str:
    row = f"({', '.join('?' * len(EXECUTION_COLUMNS))})"
    return f"INSERT OR IGNORE INTO execution ({_QUOTED}) VALUES {', '.join([row] * rows)}"


@contextmanager
def bulk_inserts(store: Store) -> Iterator[None]:
    """For a run of `insert_executions` on this thread (outside a transaction). SQLite: the
    execution table's foreign key is checked by `insert_executions` once per call instead of by
    SQLite row by row, temporary data stays in memory, and the write-ahead log is checkpointed
    once it holds BULK_CHECKPOINT_BYTES rather than after every commit, and when the run ends.

    Why: a multi-row INSERT that could fail half-way keeps a statement journal (a copy of each
    page it changes, to undo itself alone), and only the foreign key can make INSERT OR IGNORE
    fail; without it SQLite keeps no journal, which takes ~30% off ingestion's writing. Any other
    journal stays in memory rather than in a temporary file. A checkpoint copies the pages the
    log holds into the database: after each of ingestion's commits, it copied the same index
    pages again and again (a million records: about 3 s of commits and checkpoints, 2 s so).
    Committed pages in the log are as durable as in the database: a crash loses nothing more.
    """
    if store.dialect != "sqlite":
        yield
        return
    with store.reading() as tx:
        connection = tx.connection  # this thread's; its settings outlast the transaction
    settings = ("temp_store", "foreign_keys", "wal_autocheckpoint")
    saved = [int(connection.execute(f"PRAGMA {name}").fetchone()[0]) for name in settings]
    page = int(connection.execute("PRAGMA page_size").fetchone()[0])
    connection.execute("PRAGMA temp_store = MEMORY")
    connection.execute("PRAGMA foreign_keys = OFF")
    connection.execute(f"PRAGMA wal_autocheckpoint = {BULK_CHECKPOINT_BYTES // page}")
    try:
        yield
    finally:
        for name, value in zip(settings, saved, strict=True):
            connection.execute(f"PRAGMA {name} = {value}")
        # What the log holds: copied now, as far as readers let it, not left to the next writer.
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)")


def quarantine(
    tx: Transaction, entries: Sequence[tuple[str, int, str, str]], at: dt.datetime
) -> None:
    """Keep lines that could not be ingested: (path, line number, reason, content)."""
    stamp = tx.dialect.time(at)
    sql = tx.dialect.sql(
        "INSERT INTO ingest_quarantine (path, line, reason, content, at)"
        " VALUES (:path, :line, :reason, :content, :at)"
    )
    for path, line, reason, content in entries:
        tx.connection.execute(
            sql,
            {
                "path": path,
                "line": line,
                "reason": reason,
                # (a NUL byte of a broken line: PostgreSQL's text cannot hold it)
                "content": content[:4096].replace("\x00", "\\x00"),
                "at": stamp,
            },
        )


@dataclass(frozen=True)
class QuarantinedLine:
    id: int
    path: str
    line: int
    reason: str
    content: str
    at: dt.datetime


def quarantined(store: Store, limit: int = 100) -> list[QuarantinedLine]:
    """The latest quarantined lines, newest first."""
    with store.reading() as tx:
        return [
            QuarantinedLine(r[0], r[1], r[2], r[3], r[4], tx.dialect.read_time(r[5]))  # type: ignore[arg-type]
            for r in tx.query(
                "SELECT id, path, line, reason, content, at FROM ingest_quarantine"
                " ORDER BY id DESC LIMIT :limit",
                {"limit": limit},
            )
        ]
