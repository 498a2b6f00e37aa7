"""A SQLAlchemy engine on a store, for Alembic's migrations (and tests that inspect the schema).

The store itself speaks to its database through the driver (`db.py`); SQLAlchemy is imported only
when a schema is created or upgraded.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.pool import StaticPool

from skillstage.store.db import (
    POSTGRES_CONNECT_TIMEOUT_S,
    StoreURL,
    connect,
    parse_url,
)

# The execution option that makes a SQLite transaction take the write lock at BEGIN.
SQLITE_BEGIN_OPTION = "skillstage_sqlite_begin"


def create_store_engine(url: str | StoreURL, *, sqlite_connection: Any = None) -> Engine:
    """An engine for the store at `url`. Cheap: it does not connect. With `sqlite_connection`,
    the engine uses that open connection (an in-memory store exists only on its connection)."""
    parsed = parse_url(url) if isinstance(url, str) else url
    if parsed.backend == "postgresql":
        return create_engine(
            parsed.text,
            pool_pre_ping=True,
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
    if sqlite_connection is not None:
        engine = create_engine("sqlite://", creator=lambda: sqlite_connection, poolclass=StaticPool)
    else:
        # The same connection set-up as the store's own (WAL, foreign keys, busy timeout).
        engine = create_engine("sqlite://", creator=lambda: connect(parsed))

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # We emit BEGIN ourselves: the sqlite3 module's own transaction handling skips BEGIN
        # before SELECT and SAVEPOINT. Write transactions take the write lock up front (BEGIN
        # IMMEDIATE), so two writers queue on the busy timeout instead of one failing.
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine
