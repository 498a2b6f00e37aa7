"""Turning a database URL into an engine, and database failures into `StoreError`s.

SQLite is the embedded default; PostgreSQL (through psycopg 3) serves teams. Nothing else is
supported, and a URL for anything else is refused here with a message rather than failing later.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError, SQLAlchemyError
from sqlalchemy.pool import StaticPool

from skillstage.errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 30_000
POSTGRES_CONNECT_TIMEOUT_S = 10

# The execution option that makes a SQLite transaction take the write lock at BEGIN.
SQLITE_BEGIN_OPTION = "skillstage_sqlite_begin"

_URL_HINT = (
    "use sqlite:///path/to/state.db or postgresql+psycopg://user:password@host/dbname "
    "(key `database` in skillstage.toml, or SKILLSTAGE_DATABASE_URL)"
)


def parse_url(url: str) -> URL:
    """Parse and normalise a store URL, or raise a `StoreError` saying what is wrong with it."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"not a database URL: {url!r}", hint=_URL_HINT) from None
    # From the URL's text: asking SQLAlchemy for the driver would import it, and fail on names
    # it does not know.
    backend, _, driver = parsed.drivername.partition("+")
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        # Plain `postgresql://` means psycopg2 to SQLAlchemy; psycopg 3 is the driver we ship.
        return parsed.set(drivername="postgresql+psycopg")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        return parsed
    raise StoreError(
        f"unsupported database {parsed.drivername!r} in {display_url(parsed)}",
        hint=_URL_HINT,
    )


def display_url(url: URL | str) -> str:
    """The URL for messages: a SQLite file path, or the URL without its password."""
    if isinstance(url, str):
        try:
            parsed = make_url(url)
        except ArgumentError:
            return url
        return display_url(parsed)
    if url.get_backend_name() == "sqlite":
        return url.database or ":memory:"
    return url.render_as_string(hide_password=True)


def _sqlite_file(url: URL) -> Path | None:
    database = url.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return None
    return Path(database)


def create_store_engine(url: str) -> Engine:
    """An engine for the store at `url`, configured for our transaction rules. Cheap: it does not
    connect."""
    parsed = parse_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    try:
        return create_engine(
            parsed,
            pool_pre_ping=True,
            connect_args={"connect_timeout": POSTGRES_CONNECT_TIMEOUT_S},
        )
    except (ImportError, NoSuchModuleError) as exc:
        raise StoreError(
            f"the PostgreSQL driver is missing: {exc}",
            hint="install skillstage with its dependencies (psycopg[binary])",
        ) from None


def _sqlite_engine(url: URL) -> Engine:
    path = _sqlite_file(url)
    options: dict[str, Any] = {}
    if path is None:
        # One shared connection, or every checkout would see a fresh, empty in-memory database.
        options["poolclass"] = StaticPool
        options["connect_args"] = {"check_same_thread": False}
    else:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the directory for the store: {exc.strerror}", path=path.parent
            ) from None
    engine = create_engine(url, **options)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # We emit BEGIN ourselves (below): the sqlite3 module's own transaction handling skips
        # BEGIN before SELECT and SAVEPOINT, which breaks savepoints and read-then-write logic.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys = ON")
            if path is not None:
                _use_wal(cursor)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        # Write transactions take the write lock up front (BEGIN IMMEDIATE), so two writers queue
        # on the busy timeout instead of one failing mid-transaction on a lock upgrade.
        mode = connection.get_execution_options().get(SQLITE_BEGIN_OPTION, "DEFERRED")
        connection.exec_driver_sql(f"BEGIN {mode}")

    return engine


def _use_wal(cursor: Any) -> None:
    """Switch the database to WAL, so readers (`skillstage list`, the loader) never block a
    promotion and the reverse. The mode is stored in the file: this does work once per store."""
    if cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    # Changing the mode needs the file to itself and SQLite does not wait on the busy handler
    # for it, so a new store opened by several processes at once retries briefly; if it still
    # cannot, a later connection will (the rollback journal is slower, not wrong).
    for attempt in range(50):
        try:
            cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.01 * (attempt + 1))


def _is_sqlite(url: URL | str) -> bool:
    return str(url).startswith("sqlite") if isinstance(url, str) else url.drivername == "sqlite"


def _reason(exc: DBAPIError | SQLAlchemyError) -> str:
    original = getattr(exc, "orig", None) or exc
    text = str(original).strip()
    # libpq's messages run over several lines ("Is the server running on that host…"); keep them
    # on one line for the terminal.
    return re.sub(r"\s*\n\s*", "; ", text)


@contextmanager
def translate_errors(url: URL | str, doing: str, *, connecting: bool = False) -> Iterator[None]:
    """Turn database failures inside the block into a `StoreError` naming the store and the
    action. With `connecting`, any failure means the store could not be reached. The original
    exception stays chained for the traceback log."""
    try:
        yield
    except DBAPIError as exc:
        where = display_url(url)
        if (connecting or exc.connection_invalidated) and _is_sqlite(url):
            raise StoreError(
                f"cannot open the store at {where}: {_reason(exc)}",
                hint="the file must be a SQLite database that this user can read and write; "
                "or point `database` in skillstage.toml (or SKILLSTAGE_DATABASE_URL) elsewhere",
            ) from exc
        if connecting or exc.connection_invalidated:
            raise StoreError(
                f"cannot connect to the store at {where}: {_reason(exc)}",
                hint="check that the database server is running and that the URL "
                "(`database` in skillstage.toml, or SKILLSTAGE_DATABASE_URL) is right",
            ) from exc
        raise StoreError(f"the store at {where} failed while {doing}: {_reason(exc)}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(
            f"the store at {display_url(url)} failed while {doing}: {_reason(exc)}"
        ) from exc
