"""The server under load, as agent hosts use it, next to its peers measured in the same run.

1. Ingestion over HTTP: 8 concurrent clients post batches of 1,000 execution records to
   `POST /v1/executions` of a real `skillstage serve` (one worker, SQLite, a recorder token);
   records/s against `skillstage metrics ingest` of as many records from the inbox (a process of
   its own). Goal: HTTP ≥ 0.5x of the inbox. Afterwards the store must hold every record once.
2. Resolve: 8 clients on keep-alive connections ask `GET /v1/resolve/NAME?subject=…` for
   `--seconds`; requests/s and p99 against a bare FastAPI app on uvicorn whose one route answers
   the same JSON (the framework's own ceiling). Goal: ≥ 0.8x of its requests/s. Our route answers
   bytes encoded by msgspec, skipping FastAPI's response encoding; so the same peer app also
   answers the same JSON as pre-encoded bytes (no work at all), and that ratio is shown too.

The load comes from one process of client threads (http.client, keep-alive), the same for both
contenders, which run one after the other and then again in the other order. On a 2-CPU machine
the clients take one core and the server the other. Reported, not asserted: exit status 0.

Run: `.venv/bin/python bench/server.py [--records N] [--seconds S] [--json]`.
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from skillstage import api, tokens
from skillstage.config import Project, load_config_file
from skillstage.store import Store

CLIENTS = 8
BATCH = 1000
INGEST_GOAL = 0.5
RESOLVE_GOAL = 0.8
SKILL = "release-notes"
BIN = Path(sys.executable).parent


def _port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _environment(project: Project) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    environment["SKILLSTAGE_DATABASE_URL"] = project.database_url
    return environment


@contextmanager
def running(
    argv: list[str], port: int, cwd: Path, env: dict[str, str], *, start_timeout: float = 30
) -> Iterator[None]:
    """A server process until the block ends, once it answers on `port`."""
    server = subprocess.Popen(argv, cwd=cwd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    server.kill()
                    message = f"the server did not start: {server.communicate()[1]}"
                    raise SystemExit(message) from None
                time.sleep(0.05)
        yield
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def make_project(root: Path) -> Project:
    project_root = root / "project"
    project_root.mkdir()
    os.environ.pop("SKILLSTAGE_DATABASE_URL", None)
    api.init(project_root)
    project = load_config_file(project_root / "skillstage.toml")
    skill = project.stage_path("prototype", SKILL)
    skill.mkdir(parents=True)
    (skill / "SKILL.md").write_text(
        f"---\nname: {SKILL}\ndescription: Drafts release notes. Use it when releasing.\n"
        "metadata:\n  version: 1.0.0\n---\n# Release notes\n\nRun it.\n"
    )
    for script in ("execute.sh", "test.sh"):
        (skill / script).write_text("#!/bin/bash\necho ok\n")
        (skill / script).chmod(0o755)
    (result,) = api.promote(project, [SKILL], actor="bench")
    assert result.success, result.to_dict()
    return project


def _records(prefix: str, count: int) -> list[bytes]:
    now = dt.datetime.now(dt.UTC).isoformat()
    return [
        json.dumps(
            {
                "execution_id": f"{prefix}-{n}",
                "timestamp": now,
                "skill": SKILL,
                "version": "1.0.0",
                "pattern_fidelity": 0.9,
                "outcome_quality": 0.85,
                "execution_time_ms": 120.0 + n % 50,
            }
        ).encode()
        for n in range(count)
    ]


def _clients(work: Callable[[http.client.HTTPConnection, int], None], port: int) -> float:
    """Run `work(connection, client)` in CLIENTS threads; the seconds until all are done."""
    errors: list[BaseException] = []

    def client(index: int) -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            work(connection, index)
        except BaseException as exc:  # reported after the run
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise SystemExit(f"a client failed: {errors[0]!r}")
    return time.perf_counter() - started


def ingest_http(project: Project, port: int, token: str, records: int) -> dict[str, Any]:
    batches = [_records(f"http{b}", BATCH) for b in range(records // BATCH)]
    bodies = [b"\n".join(batch) for batch in batches]
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/x-ndjson"}
    inserted = [0] * CLIENTS

    def work(connection: http.client.HTTPConnection, index: int) -> None:
        for body in bodies[index::CLIENTS]:
            connection.request("POST", "/v1/executions", body=body, headers=headers)
            answer = connection.getresponse()
            data = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{answer.status}: {data[:300]!r}")
            inserted[index] += json.loads(data)["inserted"]

    seconds = _clients(work, port)
    return {"records": records, "seconds": seconds, "inserted": sum(inserted)}


def ingest_inbox(project: Project, records: int) -> dict[str, Any]:
    inbox = project.metrics_inbox
    inbox.mkdir(parents=True, exist_ok=True)
    (inbox / f"{SKILL}_executions.jsonl").write_bytes(
        b"\n".join(_records("inbox", records)) + b"\n"
    )
    started = time.perf_counter()
    subprocess.run(
        [str(BIN / "skillstage"), "metrics", "ingest"],
        cwd=project.root,
        env=_environment(project),
        check=True,
        capture_output=True,
    )
    return {"records": records, "seconds": time.perf_counter() - started}


def _stored(project: Project, prefix: str) -> int:
    with Store.open(project.database_url) as store, store.reading() as tx:
        row = tx.connection.execute(
            "SELECT count(*) FROM execution WHERE execution_id LIKE ?", (f"{prefix}%",)
        ).fetchone()
        return int(row[0])


def load(
    port: int, path_of: Callable[[int, int], str], seconds: float, headers: dict[str, str]
) -> dict[str, Any]:
    """CLIENTS keep-alive clients for `seconds`: requests/s and latency percentiles."""
    latencies: list[list[float]] = [[] for _ in range(CLIENTS)]
    stop = time.perf_counter() + seconds

    def work(connection: http.client.HTTPConnection, index: int) -> None:
        n = 0
        mine = latencies[index]
        while time.perf_counter() < stop:
            started = time.perf_counter()
            connection.request("GET", path_of(index, n), headers=headers)
            answer = connection.getresponse()
            answer.read()
            if answer.status != 200:
                raise RuntimeError(f"{answer.status}")
            mine.append(time.perf_counter() - started)
            n += 1

    elapsed = _clients(work, port)
    every = sorted(x for client in latencies for x in client)
    return {
        "requests": len(every),
        "requests_per_second": len(every) / elapsed,
        "p50_ms": every[len(every) // 2] * 1000,
        "p99_ms": every[int(len(every) * 0.99)] * 1000,
    }


PEER_APP = textwrap.dedent(
    """
    import json, sys
    import uvicorn
    from fastapi import FastAPI, Response
    answer = json.loads(sys.argv[2])
    encoded = sys.argv[2].encode()
    app = FastAPI()
    @app.get("/v1/resolve/{name}")
    def resolve(name: str, subject: str | None = None) -> dict:
        return answer
    @app.get("/v1/raw/{name}")
    async def raw(name: str, subject: str | None = None) -> Response:
        return Response(encoded, media_type="application/json")
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
    """
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100_000, help="Records per ingestion.")
    parser.add_argument("--seconds", type=float, default=5.0, help="Seconds per resolve run.")
    parser.add_argument("--json", action="store_true", help="Print the figures as JSON.")
    options = parser.parse_args()
    records = max(BATCH, options.records // BATCH * BATCH)
    with tempfile.TemporaryDirectory(prefix="skillstage-bench-server-") as tmp:
        project = make_project(Path(tmp))
        os.environ["SKILLSTAGE_DATABASE_URL"] = project.database_url
        created = tokens.create_token(project, name="bench-host", role="recorder", actor="bench")
        secret = created.token
        port, peer_port = _port(), _port()
        serve = [str(BIN / "skillstage"), "serve", "--port", str(port), "--log-level", "warning"]
        env = _environment(project)
        inbox = ingest_inbox(project, records)
        with running(serve, port, project.root, env):
            posted = ingest_http(project, port, secret, records)
            headers = {"Authorization": f"Bearer {secret}"}
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            connection.request(
                "GET", f"/v1/resolve/{SKILL}?subject=u0&stage=staged", headers=headers
            )
            sample = connection.getresponse().read().decode()
            connection.close()
            stored_http, stored_inbox = _stored(project, "http"), _stored(project, "inbox")

            def resolve_path(client: int, n: int) -> str:
                return f"/v1/resolve/{SKILL}?subject=user-{client}-{n}&stage=staged"

            peer = [sys.executable, "-c", PEER_APP, str(peer_port), sample]

            def raw_path(client: int, n: int) -> str:
                return f"/v1/raw/{SKILL}?subject=user-{client}-{n}&stage=staged"

            runs: dict[str, list[dict[str, Any]]] = {"skillstage": [], "static": [], "raw": []}
            with running(peer, peer_port, project.root, env):
                for order in (("skillstage", "static", "raw"), ("raw", "static", "skillstage")):
                    for name in order:
                        target = port if name == "skillstage" else peer_port
                        path = raw_path if name == "raw" else resolve_path
                        runs[name].append(load(target, path, options.seconds, headers))
    http_rate = posted["records"] / posted["seconds"]
    inbox_rate = inbox["records"] / inbox["seconds"]
    ours = statistics.median(r["requests_per_second"] for r in runs["skillstage"])
    ceiling = statistics.median(r["requests_per_second"] for r in runs["static"])
    raw = statistics.median(r["requests_per_second"] for r in runs["raw"])
    figures = {
        "ingest": {
            "records": records,
            "http_records_per_second": round(http_rate),
            "inbox_records_per_second": round(inbox_rate),
            "ratio": round(http_rate / inbox_rate, 2),
            "goal": INGEST_GOAL,
            "stored_once": stored_http == records and stored_inbox == records,
            "stored": {"http": stored_http, "inbox": stored_inbox},
        },
        "resolve": {
            "clients": CLIENTS,
            "skillstage": runs["skillstage"],
            "static_route": runs["static"],
            "static_route_preencoded": runs["raw"],
            "ratio": round(ours / ceiling, 2),
            "ratio_to_preencoded": round(ours / raw, 2),
            "goal": RESOLVE_GOAL,
        },
    }
    if options.json:
        print(json.dumps(figures, indent=2))
        return
    ingest, resolve = figures["ingest"], figures["resolve"]
    print(f"Server, {CLIENTS} clients on loopback (one worker, SQLite, a recorder token)")
    mark = "met" if ingest["ratio"] >= INGEST_GOAL else "missed"
    print(
        f"  POST /v1/executions  {ingest['http_records_per_second']:>9,} records/s"
        f"   inbox ingest {ingest['inbox_records_per_second']:>9,} records/s"
        f"   {ingest['ratio']:.2f}x (goal ≥ {INGEST_GOAL}x: {mark})"
    )
    print(
        f"  every record stored once: {ingest['stored_once']} "
        f"(http {stored_http:,} of {records:,}, inbox {stored_inbox:,} of {records:,})"
    )
    mark = "met" if resolve["ratio"] >= RESOLVE_GOAL else "missed"
    labels = (
        ("skillstage", "GET /v1/resolve"),
        ("static", "static FastAPI route"),
        ("raw", "static, bytes answer"),
    )
    for name, label in labels:
        for run in runs[name]:
            print(
                f"  {label:<22} {run['requests_per_second']:>8,.0f} req/s"
                f"   p50 {run['p50_ms']:.2f} ms   p99 {run['p99_ms']:.2f} ms"
            )
    print(
        f"  resolve vs the static route: {resolve['ratio']:.2f}x (goal ≥ {RESOLVE_GOAL}x: {mark});"
        f" vs the static route answering pre-encoded bytes: {resolve['ratio_to_preencoded']:.2f}x"
    )


if __name__ == "__main__":
    main()
