"""Which schema a store is at, and bringing it up to date.

Revisions are numbered `0001`, `0002`, … in order, so a revision can be compared with
`SCHEMA_REVISION` without loading Alembic: normal startup reads one row and never imports it.
Alembic runs only to create a new store or when `skillstage db upgrade` asks for it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, inspect, text
from sqlalchemy.engine import URL

from skillstage.errors import SchemaOutdatedError, StoreError
from skillstage.store.engine import (
    SQLITE_BEGIN_OPTION,
    create_store_engine,
    display_url,
    parse_url,
    translate_errors,
)

# The head of `migrations/versions/`; a test keeps the two equal.
SCHEMA_REVISION = "0001"

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


def read_schema_state(connection: Connection) -> SchemaState:
    """The revision stamped in the database, and whether it holds tables at all."""
    tables = inspect(connection).get_table_names()
    if VERSION_TABLE not in tables:
        return SchemaState(None, bool(tables))
    revisions = connection.execute(text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars()
    found = sorted(revisions)
    if len(found) != 1:
        # Zero rows: a stamp removed by hand; several: branches we never create.
        return SchemaState(",".join(found) or None, True)
    return SchemaState(found[0], True)


def _number(revision: str) -> int | None:
    return int(revision) if revision.isdecimal() else None


def require_current(state: SchemaState, url: URL | str) -> None:
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


def _lock_for_migration(connection: Connection) -> None:
    # Two processes opening one new store at once must not both create it: the second waits here,
    # then sees the first one's schema. SQLite's BEGIN IMMEDIATE already serialises writers.
    if connection.dialect.name == "postgresql":
        connection.execute(
            text("SELECT pg_advisory_xact_lock(hashtext('skillstage-schema:' || current_schema()))")
        )


def migrate(engine: Engine, url: URL | str) -> tuple[str | None, str]:
    """Upgrade the database behind `engine` to `SCHEMA_REVISION` in one transaction.

    Returns (revision before, revision after). Refuses databases that are not skillstage stores
    and stores newer than this skillstage.
    """
    from alembic import command
    from alembic.config import Config
    from alembic.util import CommandError

    with (
        translate_errors(url, "upgrading the schema", connecting=True),
        engine.connect() as connection,
    ):
        connection.execution_options(**{SQLITE_BEGIN_OPTION: "IMMEDIATE"})
        with translate_errors(url, "upgrading the schema"), connection.begin():
            _lock_for_migration(connection)
            before = read_schema_state(connection)
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
                    f"cannot upgrade the store at {display_url(url)}: {exc}",
                    hint="the schema revision stamped in the database is not one of "
                    "skillstage's; restore a backup of the store",
                ) from exc
            after = read_schema_state(connection)
    assert after.revision is not None
    return before.revision, after.revision


def upgrade_schema(url: str) -> tuple[str | None, str]:
    """Bring the store at `url` to the schema this skillstage needs; create it when empty.

    Returns (revision before, revision after); equal when there was nothing to do. Safe to run
    at any time and from several processes at once.
    """
    parsed = parse_url(url)
    engine = create_store_engine(url)
    try:
        return migrate(engine, parsed)
    finally:
        engine.dispose()
