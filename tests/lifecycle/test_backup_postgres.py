"""Backups of a PostgreSQL store on the real server: pg_dump of the store's own schema when a
usable pg_dump is on PATH (restored by psql in one transaction), the logical export otherwise."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle.backup import BackupError
from skillstage.store import Store
from tests.skilltree import write_skill

pytestmark = pytest.mark.parametrize(
    "store_url", [pytest.param("postgresql", marks=pytest.mark.postgres)], indirect=True
)

STAGING = Path(".claude/skills/staging")


def _populate(project: Project) -> None:
    for name in ("alpha", "beta"):
        write_skill(project.root / STAGING, name)
        (result,) = api.promote(project, [name], actor="tester")
        assert result.success, result.error


def _schema(project: Project) -> str:
    with Store.open(project.database_url) as store, store.reading() as tx:
        return str(tx.scalar("SELECT current_schema()"))


def _lose_the_store(project: Project) -> None:
    with Store.open(project.database_url) as store, store.atomic() as tx:
        tx.execute("DELETE FROM stage_assignment")
        tx.execute("DELETE FROM event")


def _history(project: Project) -> list[dict[str, object]]:
    return [e for e in api.history_entries(project, limit=100) if e["kind"] != "restore"]


def _fake_tool(directory: Path, name: str, version: str) -> None:
    directory.mkdir(exist_ok=True)
    tool = directory / name
    tool.write_text(f"#!/bin/sh\necho '{name} (PostgreSQL) {version}'\n")
    tool.chmod(0o755)


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="needs the PostgreSQL client")
def test_pg_dump_of_the_stores_schema_only(project: Project) -> None:
    _populate(project)
    history = _history(project)
    made = api.backup_create(project)
    store = made.backup.manifest["store"]
    assert store["kind"] == "pg_dump"
    assert store["schema"] == _schema(project)
    assert store["tool"].startswith("pg_dump (PostgreSQL)")
    # The dump holds this schema's tables and nothing of the other tests' schemas.
    extract = project.root / "extract"
    api.backup_verify(project, made.backup.id)
    from skillstage.lifecycle.backup import verify_backup

    assert verify_backup(made.backup.path, extract_to=extract).ok
    dump = (extract / "store/pg_dump.sql").read_text()
    copies = [line.split()[1] for line in dump.splitlines() if line.startswith("COPY ")]
    assert f"{store['schema']}.event" in copies
    assert all(c.startswith(store["schema"] + ".") for c in copies), copies

    _lose_the_store(project)
    assert _history(project) == []
    result = api.backup_restore(project, made.backup.id, force=True)
    assert _history(project) == history
    # The sequences were restored too: the next promotion's rows get fresh ids.
    write_skill(project.root / STAGING, "gamma")
    (promoted,) = api.promote(project, ["gamma"], actor="tester")
    assert promoted.success, promoted.error
    assert promoted.event_id is not None
    assert promoted.event_id > max(int(str(e["id"])) for e in history)
    assert result.pre_restore_backup is not None


def test_an_old_pg_dump_falls_back_to_the_logical_export(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _populate(project)
    history = _history(project)
    old = tmp_path / "old-client"
    _fake_tool(old, "pg_dump", "9.6.24")
    monkeypatch.setenv("PATH", f"{old}:{Path(shutil.which('sh') or '/bin/sh').parent}")
    made = api.backup_create(project)
    assert made.backup.manifest["store"]["kind"] == "logical-export"
    assert made.backup.manifest["store"]["member"] == "store/export.jsonl"
    _lose_the_store(project)
    api.backup_restore(project, made.backup.id, force=True)
    assert _history(project) == history


@pytest.mark.skipif(shutil.which("pg_dump") is None, reason="needs the PostgreSQL client")
def test_a_pg_dump_backup_without_psql_is_refused_before_anything_changes(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _populate(project)
    made = api.backup_create(project)
    assert made.backup.manifest["store"]["kind"] == "pg_dump"
    _lose_the_store(project)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(BackupError, match="psql is not on PATH"):
        api.backup_restore(project, made.backup.id, force=True)
    assert len(api.backup_list(project)) == 1  # not even the backup taken first
    assert _history(project) == []
