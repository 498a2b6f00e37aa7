"""A SQLite store is backed up by reading its file in place, in a read transaction that freezes
it, and by the online backup API when writers keep the write-ahead log busy: both give back the
store as it was when the backup began, with writes going on meanwhile."""

from __future__ import annotations

import hashlib
import shutil
import sqlite3
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.store.export import frozen_sqlite
from tests.skilltree import write_skill


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.delenv("SKILLSTAGE_DATABASE_URL", raising=False)
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    write_skill(project.root / ".claude/skills/staging", "alpha")
    (result,) = api.promote(project, ["alpha"], actor="tester")
    assert result.success, result.error
    return project


def _database(project: Project) -> str:
    return project.database_url.removeprefix("sqlite:///")


def _sha(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _write_events(database: str, count: int) -> None:
    """Rows written by another connection, committed to the write-ahead log, then a checkpoint
    attempted (as any writer's automatic checkpoint would)."""
    connection = sqlite3.connect(database, isolation_level=None)
    try:
        connection.execute("CREATE TABLE IF NOT EXISTS scratch_rows (n INTEGER)")
        for n in range(count):
            connection.execute("INSERT INTO scratch_rows VALUES (?)", (n,))
        connection.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
    finally:
        connection.close()


def test_the_frozen_file_does_not_change_while_writers_go_on(project: Project) -> None:
    database = _database(project)
    _write_events(database, 10)  # frames in the log, to be folded in first
    frozen = frozen_sqlite(database)
    assert frozen is not None
    try:
        before = _sha(database)
        _write_events(database, 200)  # committed, and a checkpoint tried, during the hold
        assert _sha(database) == before
        assert frozen.execute("SELECT count(*) FROM scratch_rows").fetchone() == (10,)
    finally:
        frozen.close()
    # Once let go, a checkpoint writes the new rows into the file.
    _write_events(database, 1)
    assert _sha(database) != before


def test_a_busy_log_falls_back_to_a_copy(project: Project) -> None:
    database = _database(project)
    _write_events(database, 5)
    reader = sqlite3.connect(database, isolation_level=None)
    try:
        # A reader inside the log keeps it from being emptied: the file alone is not the store.
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM scratch_rows").fetchone()
        _write_events(database, 5)
        assert frozen_sqlite(database) is None
        made = api.backup_create(project, name="busy")
    finally:
        reader.close()
    assert made.backup.manifest["store"]["kind"] == "sqlite-backup-api"
    assert api.backup_verify(project, made.backup.id).ok


@pytest.mark.parametrize("busy", [False, True])
def test_either_way_the_restore_gives_back_the_store_as_backed_up(
    project: Project, busy: bool
) -> None:
    database = _database(project)
    _write_events(database, 3)
    reader = sqlite3.connect(database, isolation_level=None)
    if busy:
        reader.execute("BEGIN")
        reader.execute("SELECT count(*) FROM scratch_rows").fetchone()
        _write_events(database, 2)
    try:
        made = api.backup_create(project, name="either")
    finally:
        reader.close()
    kind = made.backup.manifest["store"]["kind"]
    assert kind == ("sqlite-backup-api" if busy else "sqlite-file")
    history = api.history_entries(project, limit=100)
    _write_events(database, 50)  # what happens after the backup is undone by the restore
    shutil.rmtree(project.root / ".claude")
    api.backup_restore(project, made.backup.id, force=True)
    with sqlite3.connect(database) as connection:
        assert connection.execute("SELECT count(*) FROM scratch_rows").fetchone() == (
            5 if busy else 3,
        )
    restored = api.history_entries(project, limit=100)
    assert [e for e in restored if e["kind"] != "restore"] == history
    assert (project.root / ".claude/skills/alpha/SKILL.md").is_file()
