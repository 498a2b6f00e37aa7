"""Shared fixtures.

Store fixtures: every test that asks for `store_url` or `store` runs twice, against SQLite (a real
file under tmp_path) and against the real PostgreSQL server, in a schema of its own.

The server comes from SKILLSTAGE_TEST_POSTGRES_URL, else the local default below. When it cannot
be reached, the PostgreSQL half is skipped with the reason, unless CI is set or the URL was given
explicitly: then the tests fail, so a CI run without PostgreSQL never passes by skipping.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from skillstage.store import Store

POSTGRES_URL_ENV = "SKILLSTAGE_TEST_POSTGRES_URL"
DEFAULT_POSTGRES_URL = "postgresql+psycopg://skillstage:skillstage@localhost:5432/skillstage_test"


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="session")
def postgres_admin() -> Iterator[Engine]:
    """An autocommit engine on the test server's database, for creating and dropping schemas."""
    explicit = os.environ.get(POSTGRES_URL_ENV)
    url = make_url(explicit or DEFAULT_POSTGRES_URL)
    engine = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    try:
        with engine.connect():
            pass
    except DBAPIError as exc:
        engine.dispose()
        reason = str(exc.orig).strip().splitlines()[0]
        where = url.render_as_string(hide_password=True)
        message = f"PostgreSQL at {where} is unreachable ({reason})"
        if explicit or _in_ci():
            pytest.fail(
                f"{message}; {POSTGRES_URL_ENV} is set or CI is, so the tests may not skip it",
                pytrace=False,
            )
        print(f"\nskipping the PostgreSQL store tests: {message}")
        pytest.skip(f"{message}; set {POSTGRES_URL_ENV} to run the PostgreSQL store tests")
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_url(postgres_admin: Engine) -> Iterator[str]:
    """A store URL on the test server whose search_path is a fresh schema, dropped afterwards.

    The schema travels in the URL (libpq `options=-csearch_path=…`), so every engine the code
    under test creates from it — the store's, Alembic's, a subprocess's — lands in the same place.
    """
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with postgres_admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    url = postgres_admin.url.update_query_dict({"options": f"-csearch_path={schema}"})
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with postgres_admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A SQLite store URL for a file that does not exist yet (in a directory that does not
    either)."""
    return f"sqlite:///{tmp_path / 'state' / 'state.db'}"


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def store_url(request: pytest.FixtureRequest) -> str:
    """The URL of an empty store, once on SQLite and once on PostgreSQL."""
    fixture = "sqlite_url" if request.param == "sqlite" else "postgres_url"
    url: str = request.getfixturevalue(fixture)
    return url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    """A new, opened store on each dialect."""
    with Store.open(store_url) as opened:
        yield opened


@pytest.fixture
def receiver() -> Iterator[tuple[str, list[dict[str, object]]]]:
    """A real HTTP server on 127.0.0.1 collecting the JSON bodies it receives, and an Apprise
    json:// URL that reaches it."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer

    received: list[dict[str, object]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", 0))
            received.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"json://127.0.0.1:{server.server_port}/hook", received
    server.shutdown()
