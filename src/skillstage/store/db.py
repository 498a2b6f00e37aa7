"""The two databases a store can live in, spoken to through their own DB-API drivers.

SQLite (the embedded default, Python's `sqlite3`) and PostgreSQL (psycopg 3, imported only when a
PostgreSQL store is opened). The store's SQL is written once, with `:name` parameters, in the
subset both understand; a `Dialect` supplies the few differences: the parameter style, how a
timestamp and a JSON document are stored, row locks.

Why not SQLAlchemy here: importing it costs ~0.3 s, more than a whole `skillstage promote`
should take, and each statement through it costs ~0.3 ms of Python against ~0.02 ms through the
driver. The tables are still declared once in SQLAlchemy Core (`tables.py`), for Alembic, which
creates and upgrades the schema; the store's tests run every statement on both databases. A
`:name` must not appear inside an SQL string literal (it would be taken for a parameter).
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import os
import re
import sqlite3
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final
from urllib.parse import SplitResult, urlsplit, urlunsplit

from skillstage.errors import StoreError, StoreURLError

SQLITE_BUSY_TIMEOUT_MS: Final = 30_000
POSTGRES_CONNECT_TIMEOUT_S: Final = 10

URL_HINT: Final = (
    "use sqlite:///path/to/state.db or postgresql+psycopg://user:password@host/dbname "
    "(key `database` in skillstage.toml, or SKILLSTAGE_DATABASE_URL)"
)

# The text form SQLite keeps timestamps in (naive UTC, always with microseconds): the form
# SQLAlchemy wrote and SQLite's own date functions read, so the seeds' dashboard SQL
# (`julianday(created_at)`, `datetime('now', '-48 hours')`) works on our columns.
_SQLITE_TIME_FORMAT: Final = "%Y-%m-%d %H:%M:%S.%f"


@dataclass(frozen=True)
class StoreURL:
    """A parsed store URL: `backend` is sqlite or postgresql; `database` the SQLite file (None
    for an in-memory store)."""

    text: str  # normalised: postgresql URLs always name the psycopg driver
    backend: str
    database: str | None = None

    @property
    def display(self) -> str:
        """For messages: a SQLite file path, or the URL without its password."""
        if self.backend == "sqlite":
            return self.database or ":memory:"
        return _hide_password(self.text)

    @property
    def conninfo(self) -> str:
        """The URL as libpq reads it (PostgreSQL only)."""
        return "postgresql" + self.text[len("postgresql+psycopg") :]

    def __str__(self) -> str:
        return self.text


_SCHEME = re.compile(r"(?P<scheme>[A-Za-z][\w+.-]*)://(?P<rest>.*)\Z", re.DOTALL)


def _hide_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user = parts.username or ""
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(SplitResult(parts.scheme, f"{user}:***@{host}", *parts[2:]))


def parse_url(url: str) -> StoreURL:
    """Parse and normalise a store URL, or raise a `StoreError` saying what is wrong with it."""
    match = _SCHEME.match(url.strip()) if isinstance(url, str) else None
    if match is None:
        raise StoreURLError(f"not a database URL: {url!r}", hint=URL_HINT)
    backend, _, driver = match["scheme"].partition("+")
    rest = match["rest"]
    if backend in ("postgresql", "postgres") and driver in ("", "psycopg"):
        # Plain `postgresql://` means psycopg2 to SQLAlchemy; psycopg 3 is the driver we ship.
        return StoreURL(f"postgresql+psycopg://{rest}", "postgresql")
    if backend == "sqlite" and driver in ("", "pysqlite"):
        if "?" in rest:
            raise StoreURLError(
                f"options in a SQLite store URL are not supported: {url}",
                hint="use sqlite:///path/to/state.db",
            )
        database = rest[1:] if rest.startswith("/") else rest
        if database in ("", ":memory:"):
            return StoreURL("sqlite://", "sqlite", None)
        return StoreURL(f"sqlite:///{database}", "sqlite", database)
    raise StoreURLError(
        f"unsupported database {match['scheme']!r} in {_hide_password(url)}", hint=URL_HINT
    )


def display_url(url: StoreURL | str) -> str:
    """The URL for messages: a SQLite file path, or the URL without its password."""
    if isinstance(url, StoreURL):
        return url.display
    try:
        return parse_url(url).display
    except StoreError:
        return url


# -- dialects ----------------------------------------------------------------------------------


class Dialect:
    """What differs between the two databases, for the statements the store writes."""

    name: str
    for_update = ""  # a row lock for the rest of the transaction (PostgreSQL)
    for_update_skip_locked = ""

    def sql(self, statement: str) -> str:
        """`statement` in this driver's parameter style (`:name` as written)."""
        return statement

    def time(self, at: dt.datetime | None) -> Any:
        """An aware datetime as stored: naive UTC. Naive datetimes are refused: a naive value's
        zone is a guess, and a wrong guess shifts every SLA age by hours."""
        if at is None:
            return None
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError(f"naive datetime {at!r}: pass an aware datetime (e.g. in UTC)")
        return at.astimezone(dt.UTC).replace(tzinfo=None)

    def read_time(self, value: Any) -> dt.datetime | None:
        """A stored timestamp as an aware UTC datetime."""
        if value is None:
            return None
        if isinstance(value, str):
            value = dt.datetime.fromisoformat(value)
        assert isinstance(value, dt.datetime)
        if value.tzinfo is not None:
            return value.astimezone(dt.UTC)
        return value.replace(tzinfo=dt.UTC)

    def json(self, document: Any) -> Any:
        """A JSON document as a parameter."""
        return None if document is None else json.dumps(document)

    def read_json(self, value: Any) -> Any:
        """A stored JSON document as Python values."""
        return json.loads(value) if isinstance(value, str | bytes) else value

    def json_text(self, column: str, key: str) -> str:
        """SQL for the text at top-level `key` of the JSON document in `column`."""
        raise NotImplementedError


class SQLiteDialect(Dialect):
    name = "sqlite"

    def time(self, at: dt.datetime | None) -> Any:
        naive = super().time(at)
        return None if naive is None else naive.strftime(_SQLITE_TIME_FORMAT)

    def json_text(self, column: str, key: str) -> str:
        return f"json_extract({column}, '$.{key}')"


class PostgreSQLDialect(Dialect):
    name = "postgresql"
    for_update = " FOR UPDATE"
    for_update_skip_locked = " FOR UPDATE SKIP LOCKED"

    def sql(self, statement: str) -> str:
        return _pyformat(statement)

    def json(self, document: Any) -> Any:
        from psycopg.types.json import Jsonb

        return None if document is None else Jsonb(document)

    def json_text(self, column: str, key: str) -> str:
        return f"({column} ->> '{key}')"


@functools.lru_cache(maxsize=512)
def _pyformat(statement: str) -> str:
    # psycopg's named style is %(name)s, and a literal % must be doubled. `::` (a cast) is left.
    escaped = statement.replace("%", "%%")
    return re.sub(r"(?<![:\w]):([A-Za-z_]\w*)", r"%(\1)s", escaped)


SQLITE: Final = SQLiteDialect()
POSTGRESQL: Final = PostgreSQLDialect()


def dialect_of(url: StoreURL) -> Dialect:
    return SQLITE if url.backend == "sqlite" else POSTGRESQL


# -- connections -------------------------------------------------------------------------------


def connect(url: StoreURL) -> Any:
    """A new DB-API connection to the store at `url`, in autocommit mode: the store sends BEGIN,
    COMMIT and SAVEPOINT itself. Driver errors are the caller's to translate."""
    if url.backend == "sqlite":
        return _connect_sqlite(url)
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(
            f"the PostgreSQL driver is missing: {exc}",
            hint="install skillstage with its dependencies (psycopg[binary])",
        ) from None
    return psycopg.connect(
        url.conninfo, autocommit=True, connect_timeout=POSTGRES_CONNECT_TIMEOUT_S
    )


def _connect_sqlite(url: StoreURL) -> sqlite3.Connection:
    if url.database is not None:
        try:
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(
                f"cannot create the directory for the store: {exc.strerror}",
                path=Path(url.database).parent,
            ) from None
    # isolation_level=None: the sqlite3 module's own transaction handling skips BEGIN before
    # SELECT and SAVEPOINT, which breaks savepoints and read-then-write logic. Connections are
    # used by one thread at a time, but may be closed by another (`Store.close`).
    connection = sqlite3.connect(
        url.database or ":memory:",
        isolation_level=None,
        check_same_thread=False,
        timeout=SQLITE_BUSY_TIMEOUT_MS / 1000,
    )
    try:
        connection.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        connection.execute("PRAGMA foreign_keys = ON")
        if url.database is not None:
            _use_wal(connection)
    except BaseException:
        connection.close()
        raise
    return connection


def _use_wal(connection: sqlite3.Connection) -> None:
    """Switch the database to WAL, so readers (`skillstage list`, the loader) never block a
    promotion and the reverse. The mode is stored in the file: this does work once per store."""
    if connection.execute("PRAGMA journal_mode").fetchone()[0] == "wal":
        return
    # Changing the mode needs the file to itself and SQLite does not wait on the busy handler
    # for it, so a new store opened by several processes at once retries briefly; if it still
    # cannot, a later connection will (the rollback journal is slower, not wrong).
    for attempt in range(50):
        try:
            connection.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            time.sleep(0.01 * (attempt + 1))


def connection_is_usable(connection: Any) -> bool:
    """False for a PostgreSQL connection that was closed or broke (the server restarted)."""
    return not (getattr(connection, "closed", False) or getattr(connection, "broken", False))


# -- errors ------------------------------------------------------------------------------------


def _driver_error(exc: BaseException) -> BaseException | None:
    """The database driver's exception behind `exc`, or None when `exc` is not a database
    failure. SQLAlchemy's errors (from migrations) carry the driver's as `orig`."""
    if isinstance(exc, sqlite3.Error):
        return exc
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None and isinstance(exc, psycopg.Error):
        return exc  # type: ignore[no-any-return]  # (narrowed to psycopg's Error, typed Any)
    sqlalchemy_exc = sys.modules.get("sqlalchemy.exc")
    if sqlalchemy_exc is not None and isinstance(exc, sqlalchemy_exc.SQLAlchemyError):
        original = getattr(exc, "orig", None)
        return original if isinstance(original, BaseException) else exc
    return None


def _reason(error: BaseException) -> str:
    # libpq's messages run over several lines ("Is the server running on that host…"); keep them
    # on one line for the terminal.
    return re.sub(r"\s*\n\s*", "; ", str(error).strip())


@contextmanager
def translate_errors(url: StoreURL, doing: str, *, connecting: bool = False) -> Iterator[None]:
    """Turn database failures inside the block into a `StoreError` naming the store and the
    action. With `connecting`, any failure means the store could not be reached. The original
    exception stays chained for the traceback log."""
    try:
        yield
    except Exception as exc:
        error = _driver_error(exc)
        if error is None:
            raise
        where = url.display
        full = _disk_full(url)
        if connecting and url.backend == "sqlite":
            raise StoreError(
                f"cannot open the store at {where}: {_reason(error)}",
                hint=full
                or "the file must be a SQLite database that this user can read and write; "
                "or point `database` in skillstage.toml (or SKILLSTAGE_DATABASE_URL) elsewhere",
            ) from exc
        if connecting:
            raise StoreError(
                f"cannot connect to the store at {where}: {_reason(error)}",
                hint="check that the database server is running and that the URL "
                "(`database` in skillstage.toml, or SKILLSTAGE_DATABASE_URL) is right",
            ) from exc
        raise StoreError(
            f"the store at {where} failed while {doing}: {_reason(error)}", hint=full
        ) from exc


def _disk_full(url: StoreURL) -> str | None:
    """A hint when a SQLite store's disk has no room left (SQLite says "disk I/O error" when it
    cannot create its -wal and -shm files), else None."""
    if url.backend != "sqlite" or url.database is None:
        return None
    try:
        free = os.statvfs(os.path.dirname(os.path.abspath(url.database)) or ".")
    except OSError:
        return None
    if free.f_bavail * free.f_frsize >= 1 << 20:
        return None
    return "the disk holding the store is full: free some space, then run it again"
