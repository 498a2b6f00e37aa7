"""The driver layer under the store: URLs, parameter styles, connections kept per thread and
process, a PostgreSQL connection the server dropped."""

from __future__ import annotations

import multiprocessing
import threading
from dataclasses import replace
from pathlib import Path

import pytest

from skillstage.errors import StoreError
from skillstage.store import Store
from skillstage.store.db import POSTGRESQL, SQLITE, parse_url

DIGEST = "d" * 64


@pytest.mark.parametrize(
    ("url", "backend", "database", "display"),
    [
        ("sqlite:////var/lib/state.db", "sqlite", "/var/lib/state.db", "/var/lib/state.db"),
        ("sqlite:///relative/state.db", "sqlite", "relative/state.db", "relative/state.db"),
        ("sqlite+pysqlite:////tmp/s.db", "sqlite", "/tmp/s.db", "/tmp/s.db"),
        ("sqlite://", "sqlite", None, ":memory:"),
        ("sqlite:///:memory:", "sqlite", None, ":memory:"),
        (
            "postgres://u:secret@db:5433/skills?sslmode=require",
            "postgresql",
            None,
            "postgresql+psycopg://u:***@db:5433/skills?sslmode=require",
        ),
        ("postgresql://db/skills", "postgresql", None, "postgresql+psycopg://db/skills"),
    ],
)
def test_urls_parse_and_display_without_the_password(
    url: str, backend: str, database: str | None, display: str
) -> None:
    parsed = parse_url(url)
    assert (parsed.backend, parsed.database, parsed.display) == (backend, database, display)


def test_libpq_gets_a_postgresql_uri() -> None:
    parsed = parse_url("postgresql+psycopg://u:p@h/db?options=-csearch_path%3Dx")
    assert parsed.conninfo == "postgresql://u:p@h/db?options=-csearch_path%3Dx"


def test_sqlite_url_options_are_refused_not_ignored() -> None:
    with pytest.raises(StoreError, match="options in a SQLite store URL are not supported"):
        parse_url("sqlite:////tmp/state.db?mode=ro")


def test_named_parameters_become_psycopg_style_and_percent_signs_are_kept() -> None:
    sql = "SELECT x::text FROM t WHERE a = :a AND b LIKE '10%' AND c = :c_2"
    assert POSTGRESQL.sql(sql) == (
        "SELECT x::text FROM t WHERE a = %(a)s AND b LIKE '10%%' AND c = %(c_2)s"
    )
    assert SQLITE.sql(sql) == sql


def test_each_thread_uses_its_own_connection(tmp_path: Path) -> None:
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        seen: list[object] = []

        def work(index: int) -> None:
            store.ensure_version(f"s{index}", "1.0.0", DIGEST, path="/s", frontmatter={})
            with store.reading() as tx:
                seen.append(tx.connection)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len({id(connection) for connection in seen}) == 4
        assert len(store.current_assignments()) == 0
        with store.reading() as tx:
            assert tx.scalar("SELECT COUNT(*) FROM skill") == 4


def _register_in_child(store: Store, queue: multiprocessing.Queue[object]) -> None:
    try:
        record = store.ensure_version("child", "1.0.0", DIGEST, path="/c", frontmatter={})
        queue.put(record.version_id)
    except BaseException as exc:  # reported to the parent, which fails the test
        queue.put(repr(exc))


def test_a_forked_child_opens_its_own_connection(tmp_path: Path) -> None:
    # A connection inherited across fork must not be used by both processes.
    with Store.open(f"sqlite:///{tmp_path / 'state.db'}") as store:
        store.ensure_version("parent", "1.0.0", DIGEST, path="/p", frontmatter={})
        context = multiprocessing.get_context("fork")
        queue: multiprocessing.Queue[object] = context.Queue()
        child = context.Process(target=_register_in_child, args=(store, queue))
        child.start()
        child.join(30)
        assert child.exitcode == 0
        assert isinstance(queue.get(timeout=5), int)
        assert store.find_version("child", "1.0.0") is not None
        assert store.find_version("parent", "1.0.0") is not None


@pytest.mark.postgres
def test_a_connection_the_server_dropped_is_replaced(postgres_url: str) -> None:
    with Store.open(postgres_url) as store, Store.open(postgres_url) as admin:
        store.ensure_version("before", "1.0.0", DIGEST, path="/b", frontmatter={})
        with store.reading() as tx:
            pid = tx.scalar("SELECT pg_backend_pid()")
        with admin.reading() as tx:
            assert tx.scalar("SELECT pg_terminate_backend(:pid)", {"pid": pid}) is True
        # The first statement on the dead connection fails; the store reconnects and goes on.
        record = store.ensure_version("after", "1.0.0", DIGEST, path="/a", frontmatter={})
        assert store.find_version("after", "1.0.0") == replace(record, is_new=False)
        with store.reading() as tx:
            assert tx.scalar("SELECT pg_backend_pid()") != pid
