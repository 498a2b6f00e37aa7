"""The schema: created on first open, kept in step with the migrations, refused when out of date."""

from __future__ import annotations

import datetime as dt
import re
import subprocess
import sys
import threading

import pytest
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from skillstage.errors import SchemaOutdatedError, StoreError
from skillstage.store import SCHEMA_REVISION, Store, upgrade_schema
from skillstage.store.engine import create_store_engine
from skillstage.store.schema import MIGRATIONS_DIR
from skillstage.store.tables import SEED_VIEWS, metadata

TABLES = {
    "skill",
    "skill_version",
    "stage_assignment",
    "event",
    "approval",
    "execution",
    "journal",
    "outbox",
    "ingest_checkpoint",
    "ingest_quarantine",
    "eval_run",
    "rollout",
    "routing_generation",
    "skill_control",
    "alert_episode",
    "action_step",
    "token",
    "token_event",
}


def _script() -> ScriptDirectory:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    return ScriptDirectory.from_config(config)


def _execute(url: str, sql: str) -> None:
    engine = create_store_engine(url)
    try:
        with engine.begin() as connection:
            connection.execute(text(sql))
    finally:
        engine.dispose()


def test_schema_revision_is_the_alembic_head() -> None:
    assert _script().get_heads() == [SCHEMA_REVISION]


def test_revisions_are_numbered_in_order() -> None:
    # The store compares revisions as numbers without loading Alembic; that needs 0001, 0002, …
    revisions = sorted(script.revision for script in _script().walk_revisions())
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert revisions[-1] == SCHEMA_REVISION


def test_opening_an_empty_database_creates_the_schema(store_url: str) -> None:
    with Store.open(store_url):
        pass
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as connection:
            inspector = inspect(connection)
            assert TABLES | {"alembic_version"} == set(inspector.get_table_names())
            assert set(SEED_VIEWS) == set(inspector.get_view_names())
            revision = connection.execute(text("SELECT version_num FROM alembic_version"))
            assert revision.scalar_one() == SCHEMA_REVISION
    finally:
        engine.dispose()


def test_migrations_create_exactly_the_tables_the_code_uses(store_url: str) -> None:
    with Store.open(store_url):
        pass
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_open_stops_at_an_older_schema_and_names_the_upgrade_command(store_url: str) -> None:
    with Store.open(store_url):
        pass
    _execute(store_url, "UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(SchemaOutdatedError) as caught:
        Store.open(store_url)
    message = str(caught.value)
    assert f"is at schema 0000, this skillstage needs {SCHEMA_REVISION}" in message
    assert "run `skillstage db upgrade`" in message
    assert caught.value.exit_code == 2


@pytest.mark.parametrize("revision", [f"{int(SCHEMA_REVISION) + 1:04d}", "f00dcafe"])
def test_open_stops_at_a_newer_schema_and_says_to_upgrade_skillstage(
    store_url: str, revision: str
) -> None:
    with Store.open(store_url):
        pass
    _execute(store_url, f"UPDATE alembic_version SET version_num = '{revision}'")
    for attempt in (lambda: Store.open(store_url), lambda: upgrade_schema(store_url)):
        with pytest.raises(SchemaOutdatedError) as caught:
            attempt()
        assert f"is at schema {revision}" in str(caught.value)
        assert "upgrade skillstage" in str(caught.value)
        assert "db upgrade" not in str(caught.value)


def test_a_database_with_other_tables_is_not_taken_over(store_url: str) -> None:
    _execute(store_url, "CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    for attempt in (lambda: Store.open(store_url), lambda: upgrade_schema(store_url)):
        with pytest.raises(StoreError, match="holds tables but no skillstage schema revision"):
            attempt()
    engine = create_store_engine(store_url)
    try:
        with engine.connect() as connection:
            assert inspect(connection).get_table_names() == ["invoices"]
    finally:
        engine.dispose()


def test_upgrade_schema_reports_from_and_to(store_url: str) -> None:
    assert upgrade_schema(store_url) == (None, SCHEMA_REVISION)
    assert upgrade_schema(store_url) == (SCHEMA_REVISION, SCHEMA_REVISION)
    with Store.open(store_url) as store:
        assert store.current_assignments() == []


def test_upgrade_from_an_unknown_old_revision_fails_cleanly(store_url: str) -> None:
    with Store.open(store_url):
        pass
    _execute(store_url, "UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(StoreError, match=r"cannot upgrade the store at .*0000"):
        upgrade_schema(store_url)


def test_two_processes_creating_one_store_do_not_collide(store_url: str) -> None:
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def open_store() -> None:
        barrier.wait()
        try:
            with Store.open(store_url) as store:
                store.ensure_version("race", "1.0.0", "a" * 64, path="/x", frontmatter={})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=open_store) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert upgrade_schema(store_url) == (SCHEMA_REVISION, SCHEMA_REVISION)


def test_opening_a_current_store_does_not_load_alembic(store_url: str) -> None:
    with Store.open(store_url):
        pass
    code = (
        "import sys\n"
        "from skillstage.store import Store\n"
        "Store.open(sys.argv[1]).close()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, store_url], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]"


def test_the_views_are_created_on_each_dialect_with_the_seed_columns(store: Store) -> None:
    expected = {
        "staged_skills": ["name", "created_at", "promoted", "version", "path"],
        "skill_promotions": [
            "id",
            "skill_name",
            "promoted_at",
            "promoted_by",
            "production_path",
            "success",
        ],
        "skills": [
            "skill_id",
            "skill_name",
            "promotion_state",
            "primary_agent",
            "intent_type",
            "created_at",
            "last_promoted_at",
            "version",
        ],
        "execution_metrics": [
            "execution_id",
            "skill_id",
            "timestamp",
            "pattern_fidelity",
            "outcome_quality",
            "execution_time_ms",
            "patterns_followed",
            "patterns_missed",
            "exception",
        ],
        "promotion_events": [
            "event_id",
            "skill_id",
            "from_state",
            "to_state",
            "approver",
            "approval_ticket",
            "timestamp",
            "reason",
        ],
        "rollback_events": [
            "event_id",
            "skill_id",
            "from_state",
            "to_state",
            "trigger_reason",
            "trigger_metric",
            "timestamp",
        ],
    }
    with store.atomic() as tx:
        for view, columns in expected.items():
            cursor = tx.connection.execute(f"SELECT * FROM {view}")
            found = [column[0] for column in cursor.description]
            assert found[: len(columns)] == columns, view


def test_the_sqlite_store_is_a_file_with_wal_and_foreign_keys(sqlite_url: str) -> None:
    with Store.open(sqlite_url) as store, store.atomic() as tx:
        assert tx.scalar("PRAGMA journal_mode") == "wal"
        assert tx.scalar("PRAGMA foreign_keys") == 1
        assert tx.scalar("PRAGMA busy_timeout") >= 5000
    path = sqlite_url.removeprefix("sqlite:///")
    assert re.search(r"/state/state\.db$", path)


def test_version_window_queries_over_executions_use_the_index(store: Store) -> None:
    query = (
        "SELECT AVG(pattern_fidelity) FROM execution "
        'WHERE skill_id = 1 AND digest = :digest AND "timestamp" >= :since'
    )
    with store.atomic() as tx:
        if store.dialect == "postgresql":
            # An empty table is cheapest to scan; ask what the planner does when scanning is dear.
            tx.execute("SET LOCAL enable_seqscan = off")
            plan = tx.query(f"EXPLAIN {query}", {"digest": "a" * 64, "since": "2025-01-01"})
        else:
            plan = tx.query(
                f"EXPLAIN QUERY PLAN {query}", {"digest": "a" * 64, "since": "2025-01-01"}
            )
        lines = " ".join(str(value) for row in plan for value in row)
    assert "ix_execution_sample" in lines


def test_a_store_at_0001_with_data_upgrades_to_the_current_schema(store_url: str) -> None:
    engine = create_store_engine(store_url)
    try:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.set_main_option("path_separator", "os")
        from alembic import command

        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0001")
            connection.execute(
                text("INSERT INTO skill (name, created_at) VALUES ('kept', '2026-01-01 00:00:00')")
            )
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutdatedError):
        Store.open(store_url)
    assert upgrade_schema(store_url) == ("0001", SCHEMA_REVISION)
    with Store.open(store_url) as store, store.reading() as tx:
        assert tx.skill_id("kept") is not None
        assert tx.scalar("SELECT COUNT(*) FROM ingest_checkpoint") == 0


def test_upgrading_to_0004_marks_the_benchmark_runs_eval_recorded(store_url: str) -> None:
    from alembic import command

    with Store.open(store_url) as store:
        store.ensure_version("spam", "1.0.0", "a" * 64, path="/x", frontmatter={})
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.set_main_option("path_separator", "os")
            config.attributes["connection"] = connection
            command.downgrade(config, "0003")
            assert "benchmark" not in {
                c["name"] for c in inspect(connection).get_columns("execution")
            }
            connection.execute(
                text(
                    "INSERT INTO execution (execution_id, skill_id, timestamp, exception,"
                    " false_positive, false_negative, critical, tags) SELECT :id, id,"
                    " '2026-12-01 10:00:00', FALSE, FALSE, FALSE, FALSE, :tags FROM skill"
                ),
                [
                    {"id": "eval-1", "tags": '{"source": "eval", "case": "c1"}'},
                    {"id": "live-1", "tags": '{"source": "agent"}'},
                    {"id": "live-2", "tags": None},
                    {"id": "live-3", "tags": '["eval"]'},
                ],
            )
    finally:
        engine.dispose()

    assert upgrade_schema(store_url) == ("0003", SCHEMA_REVISION)
    with Store.open(store_url) as store, store.reading() as tx:
        marked = dict(tx.query("SELECT execution_id, benchmark FROM execution"))
    assert {key: bool(value) for key, value in marked.items()} == {
        "eval-1": True,
        "live-1": False,
        "live-2": False,
        "live-3": False,
    }


def test_a_store_at_0006_upgrades_to_0007_and_keeps_tokens_apart(store_url: str) -> None:
    from alembic import command

    from skillstage.store import tokens as store_tokens

    with Store.open(store_url) as store:
        store.ensure_version("spam", "1.0.0", "a" * 64, path="/x", frontmatter={})
    engine = create_store_engine(store_url)
    try:
        with engine.begin() as connection:
            config = Config()
            config.set_main_option("script_location", str(MIGRATIONS_DIR))
            config.set_main_option("path_separator", "os")
            config.attributes["connection"] = connection
            command.downgrade(config, "0006")
            assert not {"token", "token_event"} & set(inspect(connection).get_table_names())
    finally:
        engine.dispose()
    with pytest.raises(SchemaOutdatedError, match="run `skillstage db upgrade`"):
        Store.open(store_url)

    assert upgrade_schema(store_url) == ("0006", SCHEMA_REVISION)
    at = dt.datetime(2026, 12, 7, 12, 0, tzinfo=dt.UTC)
    with Store.open(store_url) as store:
        assert store.find_version("spam", "1.0.0") is not None
        with store.atomic() as tx:
            made = store_tokens.insert_token(
                tx,
                token_id="0" * 16,
                name="alice",
                role="viewer",
                salt="00" * 16,
                digest="d" * 64,
                actor="root",
                at=at,
            )
            again = store_tokens.insert_token(
                tx,
                token_id="1" * 16,
                name="alice",
                role="admin",
                salt="00" * 16,
                digest="d" * 64,
                actor="root",
                at=at,
            )
        with store.reading() as tx:
            found = store_tokens.credential(tx, "0" * 16)
    assert made is not None and made.created_at == at
    assert again is None  # one live token per name: the partial unique index
    assert found is not None and (found.name, found.role, found.revoked) == (
        "alice",
        "viewer",
        False,
    )
