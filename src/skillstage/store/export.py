"""The store's bytes for backups (`lifecycle/backup_store.py`): its fingerprint, a logical
export of its tables and the import back (one transaction each way), SQLite's online backup API
both ways, and what `pg_dump`'s restore needs around it."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from skillstage.store.store import Store


def copy_sqlite(database: str, target: Path) -> None:
    """A consistent copy of the SQLite database at `database`, through the online backup API
    (writers go on meanwhile). The copy is scratch: written without a journal or fsync."""
    source = sqlite3.connect(database, timeout=30)
    try:
        # Pages read through a memory map, not a read() each.
        source.execute("PRAGMA mmap_size = 1099511627776")
        destination = sqlite3.connect(target)
        try:
            destination.execute("PRAGMA journal_mode = OFF")
            destination.execute("PRAGMA synchronous = OFF")
            source.backup(destination)
        finally:
            destination.close()
    finally:
        source.close()


def frozen_sqlite(database: str) -> sqlite3.Connection | None:
    """A connection in a read transaction for which the database file itself is a consistent
    snapshot, or None when writers kept the write-ahead log busy.

    The log is folded into the file first (a TRUNCATE checkpoint); when it is still empty once
    the transaction has begun, the transaction reads the file alone, and no checkpoint may then
    write into the file until it ends (SQLite's WAL_READ_LOCK(0): walformat.html, "How the
    various locks are used"); writers go on appending to the log meanwhile. In rollback-journal
    mode the transaction's shared lock keeps writers out of the file. Either way the file's
    bytes can be read directly until the connection is closed (its transaction with it)."""
    connection = sqlite3.connect(
        database, timeout=30, isolation_level=None, check_same_thread=False
    )
    try:
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        connection.execute("BEGIN")
        connection.execute("SELECT count(*) FROM sqlite_master").fetchone()
        try:
            empty = os.path.getsize(database + "-wal") == 0
        except FileNotFoundError:
            empty = True
        if empty:
            return connection
    except BaseException:
        connection.close()
        raise
    connection.close()
    return None


def copy_file(source: Path, target: Path) -> None:
    with open(source, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)
        dst.flush()
        os.fsync(dst.fileno())


def store_fingerprint(store: Store) -> dict[str, Any]:
    """What says how far a store has got: its latest event and every table's row count."""
    with store.reading() as tx:
        return fingerprint_of(tx)


def fingerprint_of(tx: Any) -> dict[str, Any]:
    """`store_fingerprint` in an open transaction."""
    from skillstage.store.tables import metadata

    latest = tx.one("SELECT id, at FROM event ORDER BY id DESC LIMIT 1")
    count = tx.scalar("SELECT count(*) FROM event")
    tables = {
        table.name: tx.scalar(f"SELECT count(*) FROM {table.name}")
        for table in metadata.sorted_tables
    }
    at = tx.dialect.read_time(latest[1]) if latest else None
    return {
        "events": count,
        "latest_event_id": latest[0] if latest else None,
        "latest_event_at": at.isoformat() if at else None,
        "tables": tables,
    }


def _encode(value: Any) -> Any:
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dict | list):
        return {"$j": value}
    if isinstance(value, bytes | memoryview):
        return {"$b": base64.b64encode(bytes(value)).decode()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if "$dt" in value:
            return dt.datetime.fromisoformat(value["$dt"])
        if "$j" in value:
            from psycopg.types.json import Jsonb

            return Jsonb(value["$j"])
        if "$b" in value:
            return base64.b64decode(value["$b"])
    return value


def export_store(store: Store, target: Path) -> dict[str, Any]:
    """Every row of every table of the store, as JSON lines (per table: a line naming it and its
    columns, then one line per row), from one snapshot; returns that snapshot's fingerprint."""
    from skillstage.store.tables import metadata

    with store.reading() as tx, open(target, "w", encoding="utf-8") as out:
        if tx.dialect.name == "postgresql":
            tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        fingerprint = fingerprint_of(tx)
        for table in metadata.sorted_tables:
            cursor = tx.connection.execute(f"SELECT * FROM {table.name} ORDER BY 1")
            columns = [d[0] for d in cursor.description]
            out.write(json.dumps({"table": table.name, "columns": columns}) + "\n")
            while rows := cursor.fetchmany(5000):
                out.writelines(
                    json.dumps([_encode(v) for v in row], default=str) + "\n" for row in rows
                )
    return fingerprint


def import_store(store: Store, source: Path) -> None:
    """Replace every row of the store's tables with the export at `source`, in one transaction
    (PostgreSQL: sequences set past the restored ids)."""
    from skillstage.store.tables import metadata

    tables = [t.name for t in metadata.sorted_tables]
    with store.atomic() as tx, open(source, encoding="utf-8") as reading:
        for name in reversed(tables):
            tx.execute(f"DELETE FROM {name}")
        table: str | None = None
        insert = ""
        batch: list[list[Any]] = []

        def flush() -> None:
            if batch:
                tx.connection.cursor().executemany(insert, batch)
                batch.clear()

        for line in reading:
            row = json.loads(line)
            if isinstance(row, dict):
                flush()
                table = row["table"]
                if table not in tables:
                    raise ValueError(f"the export names a table this store has not: {table}")
                columns = row["columns"]
                marks = ", ".join(["%s"] * len(columns))
                insert = f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({marks})"
                continue
            batch.append([_decode(v) for v in row])
            if len(batch) >= 5000:
                flush()
        flush()
        for name in tables:
            table_columns = metadata.tables[name].columns
            if "id" in table_columns and table_columns["id"].autoincrement in (True, "auto"):
                tx.query(
                    f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                    f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {name}"
                )


def restore_sqlite(database: str, copy: Path) -> str:
    """Put the SQLite database `copy` in place of the store at `database`: through the backup
    API onto the live file (processes that have it open see an ordinary write), or, when the
    live file cannot be read, by replacing the file. Returns which."""
    try:
        source = sqlite3.connect(copy)
        try:
            live = sqlite3.connect(database, timeout=30)
            try:
                live.execute("SELECT count(*) FROM sqlite_master").fetchone()
                source.backup(live)
            finally:
                live.close()
        finally:
            source.close()
        return "backup-api"
    except sqlite3.DatabaseError:
        pass
    # The live file is not a database: a WAL beside it would be replayed onto the new one.
    for suffix in ("-wal", "-shm", "-journal"):
        Path(database + suffix).unlink(missing_ok=True)
    scratch = Path(database + ".restoring")
    copy_file(copy, scratch)
    os.replace(scratch, database)
    return "file-replaced"


def current_schema(tx: Any) -> str:
    """The schema the store's tables are in (PostgreSQL: the first of its search_path)."""
    return str(tx.scalar("SELECT current_schema()"))


def server_major_version(tx: Any) -> int:
    return int(tx.scalar("SHOW server_version_num")) // 10000


def export_snapshot(tx: Any) -> str:
    """Make this (repeatable-read) transaction's snapshot one `pg_dump --snapshot` can use."""
    tx.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
    return str(tx.scalar("SELECT pg_export_snapshot()"))


def truncate_statement(schema: str) -> str:
    """The SQL that empties every table of the store in `schema`, run with a data-only dump's
    restore in one transaction."""
    from skillstage.store.tables import metadata

    quoted = schema.replace('"', '""')
    names = ", ".join(f'"{quoted}"."{t.name}"' for t in metadata.sorted_tables)
    return f'TRUNCATE {names}, "{quoted}".alembic_version;\n'
