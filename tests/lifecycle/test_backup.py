"""Backups and restore (seed 003 §4) on real trees and real stores (SQLite and PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle.backup import BackupCorruptedError, BackupError, backups_dir
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")


def _fingerprint(project: Project) -> dict[str, tuple[str, int]]:
    """Every file under the skill trees and the archive: its sha256 and mode."""
    found: dict[str, tuple[str, int]] = {}
    for top in (project.root / ".claude", project.state_dir / "archive"):
        for directory, _dirs, files in os.walk(top):
            for name in files:
                path = Path(directory) / name
                found[str(path.relative_to(project.root))] = (
                    hashlib.sha256(path.read_bytes()).hexdigest(),
                    path.stat().st_mode & 0o777,
                )
    return found


def _history(project: Project) -> list[dict[str, object]]:
    return api.history_entries(project, limit=1000)


def _populate(project: Project) -> None:
    """Three skills: two promoted to production (one twice, so the archive has two versions),
    one staged."""
    for name in ("alpha", "beta"):
        write_skill(project.root / STAGING, name, files={"notes.md": f"{name} notes\n"})
        (result,) = api.promote(project, [name], actor="tester")
        assert result.success, result.error
    write_skill(project.root / STAGING, "alpha", extra={"version": "1.1.0"})
    (result,) = api.promote(project, ["alpha"], actor="tester", overwrite=True)
    assert result.success, result.error
    write_skill(project.root / STAGING, "gamma", files={"data/big.bin": os.urandom(4096)})


def _flip_byte(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0x01
    path.write_bytes(bytes(data))


def test_restore_after_losing_the_tree_and_the_store(project: Project) -> None:
    _populate(project)
    before, history = _fingerprint(project), _history(project)
    created = api.backup_create(project, name="good", actor="ops")
    kind = created.backup.manifest["store"]["kind"]
    if project.database_url.startswith("sqlite"):
        assert kind == "sqlite-file"  # the live file, read in a transaction that freezes it
    else:
        assert kind == ("pg_dump" if shutil.which("pg_dump") else "logical-export")
    assert api.backup_verify(project, created.backup.id).ok

    # Disaster: the whole tree and the archive gone, the store's bytes overwritten (SQLite) or
    # its rows deleted (PostgreSQL: the server keeps the files).
    shutil.rmtree(project.root / ".claude")
    shutil.rmtree(project.state_dir / "archive", onerror=_force_remove)
    if project.database_url.startswith("sqlite"):
        database = Path(project.database_url.removeprefix("sqlite:///"))
        with open(database, "r+b") as db:
            db.write(b"\xde\xad" * 4096)
    else:
        from skillstage.store import Store

        with Store.open(project.database_url) as store, store.atomic() as tx:
            tx.execute("DELETE FROM stage_assignment")
            tx.execute("DELETE FROM event")

    result = api.backup_restore(project, created.backup.id, actor="ops")
    assert result.pre_restore_backup is not None
    assert _fingerprint(project) == before
    after = [e for e in _history(project) if e["kind"] != "restore"]
    assert after == history
    restored = [e for e in _history(project) if e["kind"] == "restore"]
    assert {e["skill_name"] for e in restored} == {"alpha", "beta", "gamma"}
    assert all(e["actor"] == "ops" for e in restored)
    # Nothing left to do a second time (over its own restore events: forced).
    again = api.backup_restore(project, created.backup.id, dry_run=True, force=True)
    assert [c.kind for c in again.changes] == ["store"]


def _force_remove(function, path, _excinfo):  # type: ignore[no-untyped-def]
    os.chmod(os.path.dirname(path), 0o700)
    if os.path.isdir(path):
        os.chmod(path, 0o700)
    function(path)


@pytest.mark.parametrize("where", ["middle", "header"])
def test_a_damaged_backup_is_refused(project: Project, where: str) -> None:
    _populate(project)
    created = api.backup_create(project)
    path = created.backup.path
    _flip_byte(path, path.stat().st_size // 2 if where == "middle" else 5)  # 5: the gzip mtime
    verification = api.backup_verify(project, created.backup.id)
    assert not verification.ok
    assert "checksum does not match" in verification.problems[0]
    before = _fingerprint(project)
    shutil.rmtree(project.root / STAGING / "gamma")
    with pytest.raises(BackupCorruptedError, match="damaged; nothing was restored"):
        api.backup_restore(project, created.backup.id)
    assert not (project.root / STAGING / "gamma").exists()
    assert len(api.backup_list(project)) == 1  # no pre-restore backup either
    del before


def test_restore_one_skill_leaves_the_others_alone(project: Project) -> None:
    _populate(project)
    created = api.backup_create(project)
    alpha = project.root / PRODUCTION / "alpha"
    beta = project.root / PRODUCTION / "beta"
    kept_alpha = (alpha / "SKILL.md").read_bytes()
    # Afterwards: alpha is damaged by hand, beta changes legitimately.
    (alpha / "SKILL.md").write_text("broken\n")
    (alpha / "extra.txt").write_text("litter\n")
    (beta / "notes.md").write_text("beta edited\n")
    history = _history(project)

    dry = api.backup_restore(project, created.backup.id, skill="alpha", dry_run=True)
    assert [(c.kind, c.name, c.stage) for c in dry.changes] == [("restore", "alpha", "production")]
    assert (alpha / "SKILL.md").read_text() == "broken\n"

    result = api.backup_restore(project, created.backup.id, skill="alpha", actor="ops")
    assert (alpha / "SKILL.md").read_bytes() == kept_alpha
    assert not (alpha / "extra.txt").exists()
    assert (beta / "notes.md").read_text() == "beta edited\n"
    (event,) = [e for e in _history(project) if e["kind"] == "restore"]
    assert event["skill_name"] == "alpha" and event["version"] == "1.1.0"
    assert [e for e in _history(project) if e["kind"] != "restore"] == history
    assert result.pre_restore_backup is not None
    with pytest.raises(api.UsageError, match="no skill named 'nope'"):
        api.backup_restore(project, created.backup.id, skill="nope")


def test_restore_over_a_newer_store_needs_force(project: Project) -> None:
    _populate(project)
    created = api.backup_create(project, name="old")
    (result,) = api.promote(project, ["gamma"], actor="tester")
    assert result.success
    with pytest.raises(BackupError, match="newer than the backup") as refused:
        api.backup_restore(project, created.backup.id)
    assert refused.value.code == "BACKUP_OLDER_THAN_STORE"
    assert len(api.backup_list(project)) == 1
    gamma = project.root / PRODUCTION / "gamma"
    assert gamma.is_dir()

    done = api.backup_restore(project, created.backup.id, force=True, actor="ops")
    assert done.warnings and "forced over a newer store" in done.warnings[0]
    assert not gamma.exists() and (project.root / STAGING / "gamma").is_dir()
    # The state before it is kept: restoring the pre-restore backup brings gamma back.
    assert done.pre_restore_backup is not None
    assert any(b.id == done.pre_restore_backup for b in api.backup_list(project))
    api.backup_restore(project, done.pre_restore_backup, force=True)
    assert gamma.is_dir()


def test_retention_keeps_the_newest(project: Project) -> None:
    (project.root / "skillstage.toml").write_text(
        (project.root / "skillstage.toml").read_text().replace("keep = 10", "keep = 2")
    )
    from skillstage.config import load_config_file

    project = load_config_file(project.root / "skillstage.toml")
    ids = [api.backup_create(project, name=f"n{i}").backup.id for i in range(4)]
    assert [b.id for b in api.backup_list(project)] == ids[:1:-1]
    assert sorted(p.name for p in backups_dir(project).iterdir()) == [
        f"{i}.tar.gz" for i in ids[2:]
    ]
    # A restore's own backup counts, and the backup it restored from stays however old.
    restored = api.backup_restore(project, ids[2], force=True)
    kept = [b.id for b in api.backup_list(project)]
    assert kept == [restored.pre_restore_backup, ids[3], ids[2]]


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_cli(project: Project) -> None:
    _populate(project)
    environment = {**os.environ, "NO_COLOR": "1"}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "skillstage", "backup", *args],
            cwd=project.root,
            env=environment,
            capture_output=True,
            text=True,
            timeout=120,
        )

    made = run("create", "--name", "cli", "--json")
    assert made.returncode == 0, made.stderr
    backup_id = json.loads(made.stdout)["id"]
    listed = run("list", "--json")
    assert [b["id"] for b in json.loads(listed.stdout)] == [backup_id]
    assert run("verify", backup_id).returncode == 0
    shutil.rmtree(project.root / PRODUCTION / "beta")
    dry = run("restore", "cli", "--dry-run")  # by its name
    assert dry.returncode == 0, dry.stderr
    assert "would restore beta 1.0.0 in production (missing)" in dry.stdout
    assert not (project.root / PRODUCTION / "beta").exists()
    done = run("restore", backup_id, "--skill", "beta")
    assert done.returncode == 0, done.stderr
    assert (project.root / PRODUCTION / "beta" / "SKILL.md").is_file()
    _flip_byte(backups_dir(project) / f"{backup_id}.tar.gz", 200)
    bad = run("verify", backup_id, "--json")
    assert bad.returncode == 1 and not json.loads(bad.stdout)["ok"]
    refused = run("restore", backup_id, "--json")
    assert refused.returncode == 1
    assert json.loads(refused.stdout)["error"]["code"] == "BACKUP_CORRUPTED"
    missing = run("verify", "nope")
    assert missing.returncode == 2 and "no backup 'nope'" in missing.stderr
