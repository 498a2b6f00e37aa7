"""`skillstage serve` as a user runs it: real server processes on loopback, and two of them on
one PostgreSQL store acting as one (no write lost or doubled)."""

from __future__ import annotations

import datetime as dt
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from skillstage import api
from skillstage.config import load_config_file
from skillstage.store import Store
from tests.skilltree import write_skill

MAX_REQUESTS = 5_000  # each server stops by itself after this many


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def serving(root: Path, store_url: str, *extra: str) -> Iterator[str]:
    """`skillstage serve --insecure-no-auth` in `root`, until the block ends."""
    port = _free_port()
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    environment["SKILLSTAGE_DATABASE_URL"] = store_url
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "skillstage",
            "serve",
            "--port",
            str(port),
            "--insecure-no-auth",
            "--max-requests",
            str(MAX_REQUESTS),
            "--log-level",
            "warning",
            *extra,
        ],
        cwd=root,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                _, errors = server.communicate(timeout=5)
                raise AssertionError(f"the server did not start: {errors}")
            time.sleep(0.05)
        yield url
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _project(root: Path, store_url: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(root)
    project = load_config_file(root / "skillstage.toml")
    for name in ("notes", "digest"):
        write_skill(project.stage_path("prototype", name).parent, name)
    return root


def test_serve_answers_and_stops_on_ctrl_c(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path, sqlite_url, monkeypatch)
    with serving(root, sqlite_url, "--workers", "2") as url:
        listed = httpx.get(f"{url}/v1/skills", timeout=30).json()
        document = httpx.get(f"{url}/v1/openapi.json").json()
    assert {skill["name"] for skill in listed["skills"]} == {"notes", "digest"}
    assert "/v1/executions" in document["paths"]


def _records(prefix: str, count: int) -> list[dict[str, object]]:
    now = dt.datetime.now(dt.UTC).isoformat()
    return [
        {"execution_id": f"{prefix}-{n}", "timestamp": now, "skill": "notes", "version": "1.0.0"}
        for n in range(count)
    ]


@pytest.mark.postgres
def test_two_servers_on_one_store_act_as_one(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path, postgres_url, monkeypatch)
    with serving(root, postgres_url) as first, serving(root, postgres_url) as second:
        servers = [first, second]
        batches = [_records(f"batch{b}", 100) for b in range(20)]

        def post(index: int) -> dict[str, int]:
            # Every batch goes to one server, then again to the other (a client's retry through
            # the load balancer): each record must be stored once.
            batch = batches[index]
            answers = [
                httpx.post(f"{servers[(index + turn) % 2]}/v1/executions", json=batch, timeout=60)
                for turn in range(2)
            ]
            assert all(answer.status_code == 200 for answer in answers), answers[-1].text
            return {
                "inserted": sum(a.json()["inserted"] for a in answers),
                "duplicates": sum(a.json()["duplicates"] for a in answers),
            }

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(post, range(len(batches))))
        promoted = httpx.post(f"{first}/v1/skills/notes/promote", json={}, timeout=60)
        held = httpx.post(
            f"{second}/v1/skills/notes/hold", json={"reason": "look", "stage": "staged"}
        )
        seen_by_first = httpx.get(f"{first}/v1/history", params={"name": "notes"}).json()
    assert promoted.status_code == 200, promoted.text
    assert held.status_code == 200, held.text
    assert sum(r["inserted"] for r in results) == 2_000
    assert sum(r["duplicates"] for r in results) == 2_000
    with Store.open(postgres_url) as store, store.reading() as tx:
        stored = tx.connection.execute("SELECT count(*) FROM execution").fetchone()[0]
    assert stored == 2_000
    kinds = [event["kind"] for event in seen_by_first]
    assert kinds.count("promote") == 1 and kinds.count("hold_set") == 1
