"""A store's records copied into a SQLite store (the rollback drill's scratch store), from SQLite
and from PostgreSQL: they read back as they do from the source."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from skillstage.store import Store
from skillstage.store.copy import copy_records

AT = dt.datetime(2026, 12, 1, 9, 30, 15, 123456, tzinfo=dt.UTC)


def test_records_read_back_from_the_copy_as_from_the_source(store: Store, tmp_path: Path) -> None:
    with store.atomic() as tx:
        first = tx.ensure_version(
            "auth-v2", "1.0.0", "a" * 64, path="/p/auth-v2", frontmatter={"name": "auth-v2"}, at=AT
        )
        tx.enter_stage(first.version_id, "staged", "/p/staging/auth-v2", at=AT)
        second = tx.ensure_version(
            "auth-v2",
            "1.1.0",
            "b" * 64,
            path="/p/auth-v2",
            frontmatter={"name": "auth-v2", "metadata": {"tags": ["x", "ü"]}},
            at=AT + dt.timedelta(hours=1),
        )
        tx.enter_stage(second.version_id, "production", "/p/auth-v2", at=AT + dt.timedelta(hours=2))
        tx.append_event(
            "promote",
            name="auth-v2",
            version="1.1.0",
            from_stage="staged",
            to_stage="production",
            actor="tester",
            details={"gates": [{"gate": "tests", "status": "pass"}], "n": 1.5},
            at=AT + dt.timedelta(hours=2),
        )
        tx.append_event(
            "promote", name="auth-v2", actor="tester", success=False, reason="gates failed", at=AT
        )
        tx.execute(
            'INSERT INTO execution (execution_id, skill_id, version, digest, "timestamp",'
            " exception, false_positive, false_negative, critical, benchmark)"
            " VALUES ('e1', :skill, '1.1.0', :digest, :at, :no, :no, :no, :no, :no)",
            {"skill": first.skill_id, "digest": "b" * 64, "at": tx.dialect.time(AT), "no": False},
        )
    with Store.open(f"sqlite:///{tmp_path / 'copy.db'}") as copy:
        counts = copy_records(store, copy, leave_out=("execution",))

        assert counts["event"] == 2 and counts["skill_version"] == 2
        assert "execution" not in counts
        assert copy.events(limit=10) == store.events(limit=10)
        assert copy.current_assignments() == store.current_assignments()
        assert copy.find_version("auth-v2", "1.1.0") == store.find_version("auth-v2", "1.1.0")
        with copy.reading() as tx:
            assert tx.scalar("SELECT count(*) FROM execution") == 0
            frontmatter = tx.scalar("SELECT frontmatter FROM skill_version WHERE version = '1.1.0'")
            assert tx.dialect.read_json(frontmatter)["metadata"]["tags"] == ["x", "ü"]
        # The copy is a store of its own: new records take new ids.
        new = copy.append_event("drill", name="auth-v2", actor="tester")
        assert new > max(e.id for e in store.events(limit=10))
        assert len(store.events(limit=10)) == 2  # the source is untouched
