"""Opening a store: URLs, unreachable servers and unusable files become `StoreError`s."""

from __future__ import annotations

import socket
from dataclasses import replace
from pathlib import Path

import pytest

from skillstage.errors import StoreError
from skillstage.store import Store, upgrade_schema


def _closed_port() -> int:
    # A port nothing listens on: bind one, then release it.
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("not a url", "not a database URL: 'not a url'"),
        ("mysql://user:secret@db/skills", "unsupported database 'mysql'"),
        ("postgresql+asyncpg://user:secret@db/skills", "unsupported database"),
    ],
)
def test_a_bad_url_is_a_store_error_with_a_hint(url: str, expected: str) -> None:
    with pytest.raises(StoreError) as caught:
        Store.open(url)
    assert expected in caught.value.message
    assert "secret" not in str(caught.value)
    assert caught.value.hint is not None and "postgresql+psycopg://" in caught.value.hint


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "postgresql", "postgres"])
def test_an_unreachable_server_is_a_store_error_without_the_password(scheme: str) -> None:
    port = _closed_port()
    url = f"{scheme}://skillstage:hunter2@127.0.0.1:{port}/skills"
    for attempt in (lambda: Store.open(url), lambda: upgrade_schema(url)):
        with pytest.raises(StoreError) as caught:
            attempt()
        text = str(caught.value)
        assert text.startswith(
            "cannot connect to the store at postgresql+psycopg://skillstage:***@"
        )
        assert f'connection to server at "127.0.0.1", port {port} failed' in text
        assert "hunter2" not in text
        assert "\n  hint: check that the database server is running" in text


@pytest.mark.postgres
def test_wrong_credentials_are_a_store_error(postgres_url: str) -> None:
    url = postgres_url.replace("skillstage:skillstage@", "skillstage:wrong-password@", 1)
    if url == postgres_url:
        pytest.skip("the test server's URL does not use the default credentials")
    with pytest.raises(StoreError, match="password authentication failed"):
        Store.open(url)


def test_the_sqlite_directory_is_created(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    with Store.open(f"sqlite:///{path}") as store:
        assert store.dialect == "sqlite"
        assert store.url == str(path)
    assert path.is_file()


def test_a_file_that_is_not_a_database_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is a text file, not SQLite\n" * 200)
    with pytest.raises(
        StoreError, match=rf"cannot open the store at {path}: file is not a database"
    ):
        Store.open(f"sqlite:///{path}")


def test_a_sqlite_path_that_cannot_be_created_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(StoreError, match="cannot create the directory for the store"):
        Store.open(f"sqlite:///{blocker / 'sub' / 'state.db'}")


def test_an_in_memory_store_works_within_one_handle() -> None:
    with Store.open("sqlite://") as store:
        record = store.ensure_version("mem", "1.0.0", "c" * 64, path="/m", frontmatter={})
        assert store.find_version("mem", "1.0.0") == replace(record, is_new=False)
