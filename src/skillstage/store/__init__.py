"""The state store: the only place skillstage speaks SQL.

SQLite (the embedded default) and PostgreSQL share one set of SQLAlchemy Core tables; the schema
changes only through the Alembic migrations in `migrations/`, and a store at another schema is
refused with the command that fixes it.
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
