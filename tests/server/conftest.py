"""A real uvicorn server on loopback for the server tests, and a project to serve.

`live(app)` starts uvicorn in a thread on 127.0.0.1 (a free port), waits until it accepts
connections and yields its base URL; on leaving, the server is told to exit and joined. The server
also stops by itself after `MAX_REQUESTS` requests, so a test that forgets it cannot leave it
running.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from skillstage import api
from skillstage.config import Project, load_config_file

MAX_REQUESTS = 20_000
START_TIMEOUT_S = 15

Live = Callable[[FastAPI], AbstractContextManager[str]]


@contextmanager
def serving(app: FastAPI, port: int = 0) -> Iterator[str]:
    """`app` on uvicorn at 127.0.0.1:`port` (0: a free one), stopped on leaving."""
    # (IPPROTO_TCP named: asyncio turns Nagle off only on sockets that say so; without it each
    # request waited ~40 ms for a delayed ACK)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    port = listener.getsockname()[1]
    config = uvicorn.Config(
        app,
        log_level="warning",
        limit_max_requests=MAX_REQUESTS,
        timeout_graceful_shutdown=2,
        lifespan="on",
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [listener]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + START_TIMEOUT_S
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
        listener.close()


@pytest.fixture
def live() -> Live:
    """`with live(app) as url:` — the app served by a real uvicorn on loopback."""
    return serving


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")
