"""The state store: the only place skillstage speaks SQL.

SQLite (the embedded default) and PostgreSQL share one schema, declared in SQLAlchemy Core
(`tables.py`) and changed only through the Alembic migrations in `migrations/`; a store at another
schema is refused with the command that fixes it. At run time the store speaks to the database
through its driver (`db.py`): SQLAlchemy and Alembic load only to create or upgrade a schema.
"""

from __future__ import annotations

from skillstage.store.schema import SCHEMA_REVISION, upgrade_schema
from skillstage.store.store import (
    Assignment,
    Event,
    JournalEntry,
    Store,
    Transaction,
    VersionRecord,
)

__all__ = [
    "SCHEMA_REVISION",
    "Assignment",
    "Event",
    "JournalEntry",
    "Store",
    "Transaction",
    "VersionRecord",
    "upgrade_schema",
]
