"""The store in a backup, and back (the SQL is `store/export.py`'s):

- SQLite: the database file itself, read in a read transaction that freezes it (the
  write-ahead log folded in first: `store_export.frozen_sqlite`), or, when writers keep the log
  busy, a copy through the online backup API; restored through the online backup API onto the
  live file (processes that have it open see an ordinary write);
- PostgreSQL with a usable `pg_dump` on PATH (its major version at least the server's): a
  data-only dump of the store's schema (`--schema`), taken in the snapshot the fingerprint is
  read in (`--snapshot`), restored by `psql` in one transaction after emptying the tables
  (the schema itself is left alone: the role may own only its tables);
- PostgreSQL otherwise: a logical export of the store's tables in one repeatable-read
  transaction, imported in one transaction.

The manifest's `store.kind` says which was used (`sqlite-file`, `sqlite-backup-api`, `pg_dump`,
`logical-export`).
"""

from __future__ import annotations

import os
import re
import shutil
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from skillstage.config import Project
from skillstage.errors import SkillstageError
from skillstage.store import Store
from skillstage.store import export as store_export

SQLITE_KINDS = ("sqlite-file", "sqlite-backup-api")  # the file as it was, or a copy of it
STORE_SQLITE = "store/state.db"
STORE_EXPORT = "store/export.jsonl"
STORE_PG_DUMP = "store/pg_dump.sql"
STORE_UNREADABLE = "store/unreadable.db"  # a pre-restore backup of a store that cannot be opened
CLIENT_TIMEOUT = 3600.0  # seconds for pg_dump or psql: a large store, a slow server


def store_snapshot(
    project: Project, scratch: Path, hold: ExitStack
) -> tuple[dict[str, Any], Path | None]:
    """The store, consistent, in a file: (its description for the manifest, the file). The file
    is a scratch copy, or (SQLite, when it can be frozen) the live database itself, consistent
    until `hold` is closed."""
    from skillstage.store import SCHEMA_REVISION
    from skillstage.store.db import SQLITE, parse_url
    from skillstage.store.store import Transaction

    url = parse_url(project.database_url)
    try:
        store = Store.open(project.database_url)
    except SkillstageError as exc:
        if url.backend == "sqlite" and url.database and os.path.exists(url.database):
            # Kept as it is, for whoever investigates; restores never read it.
            kept = scratch / "unreadable.db"
            store_export.copy_file(Path(url.database), kept)
            return {"kind": "unreadable", "error": exc.message, "member": STORE_UNREADABLE}, kept
        return {"kind": "unreadable", "error": exc.message}, None
    extra: dict[str, Any] = {}
    with store:
        target = scratch / "store"
        if store.dialect == "sqlite":
            assert url.database is not None
            frozen = store_export.frozen_sqlite(url.database)
            if frozen is not None:
                hold.callback(frozen.close)
                # The fingerprint in the transaction that freezes the file.
                fingerprint = store_export.fingerprint_of(Transaction(frozen, SQLITE))
                target, kind = Path(url.database), "sqlite-file"
            else:
                store_export.copy_sqlite(url.database, target)
                # The fingerprint of what was copied: read from the copy.
                with Store.open(f"sqlite:///{target}") as copied:
                    fingerprint = store_export.store_fingerprint(copied)
                kind = "sqlite-backup-api"
            member = STORE_SQLITE
        elif (tool := usable_pg_dump(store)) is not None:
            fingerprint, extra = _pg_dump(project, store, tool, target)
            kind, member = "pg_dump", STORE_PG_DUMP
        else:
            fingerprint = store_export.export_store(store, target)
            kind, member = "logical-export", STORE_EXPORT
    description = {
        "kind": kind,
        "dialect": url.backend,
        "database": url.display,
        "member": member,
        "schema_revision": SCHEMA_REVISION,
        **extra,
        **fingerprint,
    }
    return description, target


def _client_version(tool: str) -> tuple[int, str] | None:
    """(major version, what it prints) of a PostgreSQL client tool, or None."""
    from skillstage.process import child_environment, run

    try:
        done = run([tool, "--version"], cwd=Path.cwd(), timeout=30, env=child_environment())
    except (SkillstageError, OSError):
        return None
    found = re.search(r"\) (\d+)", done.stdout)
    return (int(found[1]), done.stdout.strip()) if done.ok and found else None


def usable_pg_dump(store: Store) -> str | None:
    """`pg_dump` on PATH when it can dump this server (its major version at least the
    server's), else None (the logical export is used)."""
    tool = shutil.which("pg_dump")
    if tool is None or os.environ.get("SKILLSTAGE_NO_PG_DUMP"):
        return None
    version = _client_version(tool)
    with store.reading() as tx:
        server = store_export.server_major_version(tx)
    return tool if version is not None and version[0] >= server else None


def _libpq(project: Project) -> tuple[str, dict[str, str]]:
    """The store's URL as libpq takes it (`--dbname`), and the environment with its password
    (PGPASSWORD: not on a command line that `ps` shows)."""
    from sqlalchemy.engine import make_url

    from skillstage.process import child_environment

    url = make_url(project.database_url)
    env = child_environment({"PGPASSWORD": url.password} if url.password else None)
    plain = url.set(drivername="postgresql", password=None)
    return plain.render_as_string(hide_password=False), env


def _pg_dump(
    project: Project, store: Store, tool: str, target: Path
) -> tuple[dict[str, Any], dict[str, Any]]:
    with store.reading() as tx:
        snapshot = store_export.export_snapshot(tx)
        schema = store_export.current_schema(tx)
        fingerprint = store_export.fingerprint_of(tx)
        # While this transaction is open, pg_dump reads exactly what it sees.
        _run_client(
            project,
            [
                tool,
                f"--schema={schema}",
                f"--snapshot={snapshot}",
                "--data-only",
                "--format=plain",
                "--no-owner",
                "--no-privileges",
                f"--file={target}",
            ],
            target.parent,
            failed="pg_dump failed",
            hint="fix what it says, or set SKILLSTAGE_NO_PG_DUMP=1 to back up with the "
            "logical export",
        )
    version = _client_version(tool)
    return fingerprint, {"schema": schema, "tool": version[1] if version else tool}


def restore_store(project: Project, copy: Path, backed: dict[str, Any]) -> None:
    """Replace the project's store, in one transaction, with the backup's copy at `copy`
    (described by `backed`, the manifest's store). Doing it twice does no harm."""
    from skillstage.lifecycle.backup import BackupError
    from skillstage.store.db import parse_url

    url = parse_url(project.database_url)
    if backed["kind"] in SQLITE_KINDS:
        if url.backend != "sqlite" or url.database is None:
            raise BackupError(
                "the backup holds a SQLite store, and this project's store is "
                f"{url.backend} ({url.display})",
                hint="point `database` at a SQLite file to restore it",
            )
        store_export.restore_sqlite(url.database, copy)
        return
    if url.backend != "postgresql":
        raise BackupError(
            f"the backup holds a PostgreSQL store, and this project's store is {url.display}",
            hint="point `database` (or SKILLSTAGE_DATABASE_URL) at a PostgreSQL database",
        )
    if backed["kind"] == "pg_dump":
        _psql_restore(project, copy, backed)
        return
    with Store.open(project.database_url) as store:
        store_export.import_store(store, copy)


def refuse_unrestorable(backed: dict[str, Any]) -> None:
    """Refuse, before anything changes, a store this machine cannot put back."""
    from skillstage.lifecycle.backup import BackupError

    if backed["kind"] == "pg_dump" and shutil.which("psql") is None:
        raise BackupError(
            "the backup's store was taken with pg_dump, and psql is not on PATH to restore it; "
            "nothing was restored",
            hint="install the PostgreSQL client (e.g. apt-get install postgresql-client)",
        )


def _psql_restore(project: Project, copy: Path, backed: dict[str, Any]) -> None:
    from skillstage.lifecycle.backup import BackupError

    refuse_unrestorable(backed)
    tool = shutil.which("psql")
    assert tool is not None
    with Store.open(project.database_url) as store, store.reading() as tx:
        schema = store_export.current_schema(tx)
    if schema != backed.get("schema"):
        raise BackupError(
            f"the backup holds the store of schema {backed.get('schema')!r}; this project's "
            f"store is in {schema!r}",
            hint="point the store's search_path at that schema to restore it",
        )
    truncate = copy.with_name("truncate.sql")
    truncate.write_text(store_export.truncate_statement(schema), encoding="utf-8")
    _run_client(
        project,
        [
            tool,
            "--no-psqlrc",
            "--quiet",
            "--single-transaction",
            "--set=ON_ERROR_STOP=1",
            f"--file={truncate}",
            f"--file={copy}",
        ],
        copy.parent,
        failed="psql could not restore the store (nothing was changed)",
        hint="fix what it says, then run the restore again",
    )


def _run_client(project: Project, args: list[str], cwd: Path, *, failed: str, hint: str) -> None:
    """Run a PostgreSQL client tool on the store's database, or raise what it said."""
    from skillstage.lifecycle.backup import BackupError
    from skillstage.process import run

    dbname, env = _libpq(project)
    done = run([args[0], f"--dbname={dbname}", *args[1:]], cwd=cwd, timeout=CLIENT_TIMEOUT, env=env)
    if not done.ok:
        raise BackupError(f"{failed} (exit {done.returncode}): {done.output_tail(5)}", hint=hint)
