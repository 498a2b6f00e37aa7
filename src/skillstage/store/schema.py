"""Which schema a store is at, and bringing it up to date.

Revisions are numbered `0001`, `0002`, … in order, so a revision can be compared with
`SCHEMA_REVISION` without loading Alembic: normal startup reads one row and never imports it.
Alembic runs only to create a new store or when `skillstage db upgrade` asks for it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from skillstage.errors import SchemaOutdatedError, StoreError
from skillstage.store.db import StoreURL, display_url, parse_url, translate_errors

# The head of `migrations/versions/`; a test keeps the two equal.
SCHEMA_REVISION = "0007"

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
VERSION_TABLE = "alembic_version"


@dataclass(frozen=True)
class SchemaState:
    """What a database holds: its revision (None when unstamped) and whether it has any tables."""

    revision: str | None
    has_tables: bool

    @property
    def is_empty(self) -> bool:
        return self.revision is None and not self.has_tables


# The tables of the schema the connection is on (`?` is SQLite's placeholder; psycopg's is %s).
_TABLE_NAMES = {
    "sqlite": "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    "postgresql": "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()",
}

Query = Callable[[str], Sequence[Sequence[Any]]]


def read_schema_state(query: Query, backend: str) -> SchemaState:
    """The revision stamped in the database, and whether it holds tables at all. `query` runs
    one SQL statement without parameters and returns its rows."""
    tables = {row[0] for row in query(_TABLE_NAMES[backend])}
    if VERSION_TABLE not in tables:
        return SchemaState(None, bool(tables))
    found = sorted(row[0] for row in query(f"SELECT version_num FROM {VERSION_TABLE}"))
    if len(found) != 1:
        # Zero rows: a stamp removed by hand; several: branches we never create.
        return SchemaState(",".join(found) or None, True)
    return SchemaState(found[0], True)


def _number(revision: str) -> int | None:
    return int(revision) if revision.isdecimal() else None


def require_current(state: SchemaState, url: StoreURL | str) -> None:
    """Refuse a store whose schema is not the one this skillstage was built for."""
    where = display_url(url)
    if state.revision == SCHEMA_REVISION:
        return
    if state.revision is None:
        raise StoreError(
            f"the database at {where} holds tables but no skillstage schema revision",
            hint="point `database` at an empty database (or a new SQLite file) for skillstage",
        )
    number = _number(state.revision)
    if number is not None and number < int(SCHEMA_REVISION):
        raise SchemaOutdatedError(
            f"the store at {where} is at schema {state.revision}, this skillstage needs "
            f"{SCHEMA_REVISION}; run `skillstage db upgrade`"
        )
    raise SchemaOutdatedError(
        f"the store at {where} is at schema {state.revision}, which this skillstage does not "
        f"know (it needs {SCHEMA_REVISION}); a newer skillstage wrote it",
        hint="upgrade skillstage (`pip install --upgrade skillstage`) on this machine",
    )


def migrate(url: StoreURL, *, sqlite_connection: Any = None) -> tuple[str | None, str]:
    """Upgrade the store at `url` to `SCHEMA_REVISION` in one transaction, with Alembic.

    Returns (revision before, revision after). Refuses databases that are not skillstage stores
    and stores newer than this skillstage. `sqlite_connection`: run on that open SQLite
    connection (an in-memory store exists only there).
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError
    from sqlalchemy import text

    from skillstage.store.engine import SQLITE_BEGIN_OPTION, create_store_engine

    engine = create_store_engine(url, sqlite_connection=sqlite_connection)
    try:
        with (
            translate_errors(url, "upgrading the schema", connecting=True),
            engine.connect() as connection,
        ):
            connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
            with translate_errors(url, "upgrading the schema"), connection.begin():
                if url.backend == "postgresql":
                    # Two processes opening one new store at once must not both create it: the
                    # second waits here, then sees the first one's schema. SQLite's BEGIN
                    # IMMEDIATE already serialises writers.
                    connection.execute(
                        text(
                            "SELECT pg_advisory_xact_lock("
                            "hashtext('skillstage-schema:' || current_schema()))"
                        )
                    )

                def query(sql: str) -> Sequence[Sequence[Any]]:
                    return connection.exec_driver_sql(sql).all()

                before = read_schema_state(query, url.backend)
                if not before.is_empty:
                    number = _number(before.revision or "")
                    if number is None or number > int(SCHEMA_REVISION):
                        require_current(before, url)
                config = Config()
                config.set_main_option("script_location", str(MIGRATIONS_DIR))
                config.set_main_option("path_separator", "os")
                # env.py runs the migrations on this connection, inside this transaction.
                config.attributes["connection"] = connection
                try:
                    command.upgrade(config, "head")
                except CommandError as exc:
                    raise StoreError(
                        f"cannot upgrade the store at {url.display}: {exc}",
                        hint="the schema revision stamped in the database is not one of "
                        "skillstage's; restore a backup of the store",
                    ) from exc
                after = read_schema_state(query, url.backend)
    finally:
        if sqlite_connection is None:
            engine.dispose()  # (disposing would close the caller's connection)
    assert after.revision is not None
    return before.revision, after.revision


def upgrade_schema(url: str) -> tuple[str | None, str]:
    """Bring the store at `url` to the schema this skillstage needs; create it when empty.

    Returns (revision before, revision after); equal when there was nothing to do. Safe to run
    at any time and from several processes at once.
    """
    return migrate(parse_url(url))
