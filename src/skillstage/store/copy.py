"""A store copied: one store's records into another of either dialect (the rollback drill's
scratch store, a SQLite file loaded from the project's store with the tables no move reads left
out: `lifecycle/drill.py`).

Read in one snapshot (PostgreSQL: a repeatable-read, read-only transaction) and written in one
transaction; each value is converted through the two dialects (times, JSON documents, booleans),
so the copy reads back exactly as the source does.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from skillstage.store.store import Store, Transaction


def copy_records(
    source: Store, target: Store, *, leave_out: Collection[str] = ()
) -> dict[str, int]:
    """Replace every row of `target`'s tables with `source`'s, but for the tables named in
    `leave_out` (left empty); the rows copied per table."""
    from skillstage.store.tables import metadata

    copied: dict[str, int] = {}
    with source.reading() as read, target.atomic() as write:
        if read.dialect.name == "postgresql":
            read.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        for table in reversed(metadata.sorted_tables):
            write.execute(f"DELETE FROM {table.name}")
        for table in metadata.sorted_tables:
            if table.name in leave_out:
                continue
            columns = list(table.columns)
            names = ", ".join(f'"{c.name}"' for c in columns)
            marks = ", ".join(f":c{i}" for i in range(len(columns)))
            insert = write.dialect.sql(f"INSERT INTO {table.name} ({names}) VALUES ({marks})")
            kinds = [_kind(c.type) for c in columns]
            cursor = read.connection.execute(f"SELECT {names} FROM {table.name} ORDER BY 1")
            count = 0
            while rows := cursor.fetchmany(5000):
                batch = [
                    {
                        f"c{i}": _convert(read, write, kind, v)
                        for i, (kind, v) in enumerate(zip(kinds, row, strict=True))
                    }
                    for row in rows
                ]
                write.connection.cursor().executemany(insert, batch)
                count += len(batch)
            copied[table.name] = count
        _restart_sequences(
            write, [t.name for t in metadata.sorted_tables if t.name not in leave_out]
        )
    return copied


def _kind(column_type: Any) -> str:
    """How a column's values cross dialects: time, json, bool or plain."""
    from sqlalchemy import JSON, Boolean

    from skillstage.store.tables import UTCDateTime

    if isinstance(column_type, UTCDateTime):
        return "time"
    if isinstance(column_type, JSON):
        return "json"
    return "bool" if isinstance(column_type, Boolean) else "plain"


def _convert(read: Transaction, write: Transaction, kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "time":
        return write.dialect.time(read.dialect.read_time(value))
    if kind == "json":
        return write.dialect.json(read.dialect.read_json(value))
    if kind == "bool":
        return bool(value)
    return bytes(value) if isinstance(value, memoryview) else value


def _restart_sequences(write: Transaction, tables: list[str]) -> None:
    """PostgreSQL: each serial id's sequence past the copied ids (SQLite needs nothing)."""
    if write.dialect.name != "postgresql":
        return
    from skillstage.store.tables import metadata

    for name in tables:
        column = metadata.tables[name].columns.get("id")
        if column is not None and column.autoincrement in (True, "auto"):
            write.query(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"COALESCE(MAX(id), 1), MAX(id) IS NOT NULL) FROM {name}"
            )
