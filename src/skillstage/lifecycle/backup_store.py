"""The store in a backup, and back: SQLite's online backup API, and a logical export of the
store's own tables for PostgreSQL (one repeatable-read transaction out, one transaction in).

Why not `pg_dump` for PostgreSQL: it must match the server's major version, and its restore
(`pg_restore --clean`) drops and re-creates the schema, which a role that only owns its tables
may not do; the export reads and writes exactly the store's tables, with no client tool, and a
restore either lands whole or not at all.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import sqlite3
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillstageError
from skillstage.store import Store

STORE_SQLITE = "store/state.db"
STORE_EXPORT = "store/export.jsonl"
STORE_UNREADABLE = "store/unreadable.db"  # a pre-restore backup of a store that cannot be opened


def store_snapshot(project: Project, scratch: Path) -> tuple[dict[str, Any], Path | None]:
    """The store, consistent, in a scratch file: (its description for the manifest, the file)."""
    from skillstage.store import SCHEMA_REVISION
    from skillstage.store.db import parse_url

    url = parse_url(project.database_url)
    try:
        store = Store.open(project.database_url)
    except SkillstageError as exc:
        if url.backend == "sqlite" and url.database and os.path.exists(url.database):
            # Kept as it is, for whoever investigates; restores never read it.
            kept = scratch / "unreadable.db"
            _copy_file(Path(url.database), kept)
            return {"kind": "unreadable", "error": exc.message, "member": STORE_UNREADABLE}, kept
        return {"kind": "unreadable", "error": exc.message}, None
    with store:
        target = scratch / "store"
        if store.dialect == "sqlite":
            assert url.database is not None
            copy_sqlite(url.database, target)
            # The fingerprint of what was copied: read from the copy.
            with Store.open(f"sqlite:///{target}") as copied:
                fingerprint = store_fingerprint(copied)
            kind, member = "sqlite-backup-api", STORE_SQLITE
        else:
            fingerprint = export_store(store, target)
            kind, member = "logical-export", STORE_EXPORT
    description = {
        "kind": kind,
        "dialect": url.backend,
        "database": url.display,
        "member": member,
        "schema_revision": SCHEMA_REVISION,
        **fingerprint,
    }
    return description, target


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


def restore_store(project: Project, copy: Path, backed: dict[str, Any]) -> None:
    """Replace the project's store, in one transaction, with the backup's copy at `copy`
    (described by `backed`, the manifest's store). Doing it twice does no harm."""
    from skillstage.lifecycle.backup import BackupError
    from skillstage.store.db import parse_url

    url = parse_url(project.database_url)
    if backed["kind"] == "sqlite-backup-api":
        if url.backend != "sqlite" or url.database is None:
            raise BackupError(
                "the backup holds a SQLite store, and this project's store is "
                f"{url.backend} ({url.display})",
                hint="point `database` at a SQLite file to restore it",
            )
        restore_sqlite(url.database, copy)
        return
    if url.backend != "postgresql":
        raise BackupError(
            f"the backup holds a PostgreSQL export, and this project's store is {url.display}",
            hint="point `database` (or SKILLSTAGE_DATABASE_URL) at a PostgreSQL database",
        )
    with Store.open(project.database_url) as store:
        import_store(store, copy)


def _copy_file(source: Path, target: Path) -> None:
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
    _copy_file(copy, scratch)
    os.replace(scratch, database)
    return "file-replaced"
