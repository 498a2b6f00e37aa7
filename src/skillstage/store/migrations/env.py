"""Alembic's entry point for skillstage's migrations.

skillstage runs its migrations itself (`skillstage.store.upgrade_schema`, `skillstage db upgrade`):
it opens the connection and the transaction, takes the migration lock and hands the connection
over in `config.attributes["connection"]`. There is no alembic.ini.

To write the next migration, copy the newest file under `versions/`, number it `revision + 1`
(four digits: revisions are compared as numbers), change `SCHEMA_REVISION` in `store/schema.py`,
and mirror the change in `store/tables.py`; `tests/store/test_schema.py` checks all three agree.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from skillstage.store.tables import metadata

connection = context.config.attributes.get("connection")
if not isinstance(connection, Connection):
    raise RuntimeError(
        "skillstage's migrations run through skillstage.store.upgrade_schema() "
        "(or `skillstage db upgrade`), not the alembic command line"
    )

context.configure(connection=connection, target_metadata=metadata)
with context.begin_transaction():
    context.run_migrations()
