"""The loader over HTTP (`Loader(url=...)`, runtime/remote.py) against a real uvicorn server on
loopback, beside a local loader on the same project (SQLite and PostgreSQL): the serialised table
routes as the store's does, both loaders resolve and load alike during a rollout, a promotion and
a kill switch reach the remote one within a couple of refresh intervals, records land once
(a batch sent again after a timeout included), a server away leaves the last table serving
(stale) until a server is back on the same port, and paths out of a copy are refused."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.runtime import Loader
from skillstage.runtime.remote import RemoteLoader, ServerError
from skillstage.runtime.routing import RoutingTable, build_table
from skillstage.server import create_app, runtime_routes
from skillstage.store import Store
from tests.runtime.test_loader import _make_store_unreadable, promote_version, stage_version
from tests.server.conftest import serving

REFRESH_MS = 250
# "A couple of refresh intervals": the server's loader polls the store every interval (SQLite;
# PostgreSQL announces a change at once), and the remote loader's long poll hears of it then.
SEEN_WITHIN = 3 * REFRESH_MS / 1000
SUBJECTS = [f"user-{i}" for i in range(300)]
CONTEXTS: list[dict[str, Any] | None] = [None, {"tier": "internal"}, {"tier": "public"}]


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


def app_for(project: Project, *, auth: bool = False) -> FastAPI:
    """The server's app with the remote loader's routes (included here until app.py does)."""
    app = create_app(project, auth=auth)
    if not any(getattr(r, "path", None) == "/v1/routing/table" for r in app.routes):
        app.include_router(runtime_routes.router, prefix="/v1")
    return app


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@contextmanager
def loaders(
    project: Project, app: Any | None = None, **options: Any
) -> Iterator[tuple[Loader, RemoteLoader, str]]:
    """A local loader and a remote one (through a server on loopback) on `project`."""
    with (
        serving(app or app_for(project), free_port()) as url,
        Loader(project, refresh_ms=REFRESH_MS) as local,
        RemoteLoader(url=url, refresh_ms=REFRESH_MS, **options) as remote,
    ):
        yield local, remote, url


def within(predicate: Callable[[], bool], timeout: float = 5.0) -> float:
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not seen within {timeout} s", pytrace=False)
        time.sleep(0.005)
    return time.monotonic() - started


def settled(project: Project, *loaders: Loader) -> None:
    """Until every loader's table is at the store's generation (a change may move it twice)."""
    within(
        lambda: {loader.table.generation for loader in loaders} == {api.routing_generation(project)}
    )


def start_rollout(project: Project, version: str, steps: list[int], segments: list[str]) -> str:
    digest = stage_version(project, version)
    outcome = api.rollout_start(
        project,
        "auth-v2",
        steps=steps,
        segments=segments,
        step_min_duration="0s",
        step_min_executions=1,
        actor="tester",
    )
    assert outcome.success, outcome.error
    return digest


def answers(loader: Loader) -> list[tuple[str, str, str, int | None]]:
    found = []
    for subject in SUBJECTS:
        for context in CONTEXTS:
            got = loader.resolve("auth-v2", subject, context)
            found.append((got.version, got.digest, got.arm, got.bucket))
    return found


def executions(project: Project) -> int:
    with Store.open(project.database_url) as store, store.reading() as tx:
        return int(tx.scalar("SELECT COUNT(*) FROM execution"))


# -- the table, serialised ----------------------------------------------------------------------


def test_a_table_round_trips_equal_and_resolves_alike(project: Project) -> None:
    promote_version(project, "1.0.0")
    promote_version(project, "1.1.0")  # 1.0.0 becomes the fallback
    promote_version(project, "2.0.0", name="billing")
    start_rollout(project, "1.2.0", steps=[30, 100], segments=["tier=internal"])
    api.switch(project, "billing", kind="disabled", on=True, actor="tester", reason="x")
    with Store.open(project.database_url) as store, store.reading() as tx:
        table = build_table(project, tx, built_at=dt.datetime.now(dt.UTC))
    route = table.route("auth-v2", "production")
    assert route.candidate is not None and route.fallback is not None and route.rollout
    assert route.segments == {"tier": ["internal"]}
    assert table.route("billing", "production").disabled

    again = RoutingTable.from_dict(table.to_dict())
    assert again == table
    for name in ("auth-v2", "billing"):
        for subject in SUBJECTS:
            for context in CONTEXTS:
                assert again.resolve(name, "production", subject, context) == table.resolve(
                    name, "production", subject, context
                )


# -- remote and local alike -----------------------------------------------------------------


def test_remote_and_local_resolve_alike_during_a_rollout(project: Project) -> None:
    live = promote_version(project, "1.0.0")
    with loaders(project) as (local, remote, _):
        with Loader(url=remote.url) as plain:  # what hosts write: the same class, chosen by url
            assert isinstance(plain, RemoteLoader)
            assert answers(plain) == answers(local)
        assert answers(remote) == answers(local)
        candidate = start_rollout(project, "1.1.0", steps=[20, 60, 100], segments=["tier=internal"])
        settled(project, local, remote)
        assert remote.resolve("auth-v2", "user-1").rollout_id is not None
        for step in range(2):
            split = answers(remote)
            assert split == answers(local)
            served = {digest for _, digest, _, _ in split}
            assert served == {live, candidate}
            # Outside the segment, or with no context, nobody gets the candidate.
            assert all(
                remote.resolve("auth-v2", s, c).digest == live
                for s in SUBJECTS
                for c in (None, {"tier": "public"})
            )
            if step == 0:
                outcome = api.rollout_change(
                    project, "advance", "auth-v2", actor="tester", force=True, reason="test"
                )
                assert outcome.success, outcome.error
                settled(project, local, remote)
        # The catalog, the levels and the table's stage rules are the local loader's too.
        assert [e.to_dict() for e in remote.catalog(subject="user-3")] == [
            e.to_dict() for e in local.catalog(subject="user-3")
        ]
        assert remote.stage == local.stage == "production"
        with pytest.raises(Exception, match="no skill named 'nope'"):
            remote.resolve("nope", "user-1")


def test_remote_loads_the_same_content_once_per_digest(project: Project) -> None:
    promote_version(project, "1.0.0")
    with loaders(project) as (local, remote, _):
        resolution = remote.resolve("auth-v2", "user-1")
        assert resolution == local.resolve("auth-v2", "user-1")
        assert remote.load(resolution) == local.load(resolution)
        for relpath in remote.load(resolution).files:
            assert remote.read(resolution, relpath) == local.read(resolution, relpath)
        stats = remote.stats()
        assert (stats["misses"], stats["cached_digests"]) == (1, 1)
        again = remote.load(remote.resolve("auth-v2", "user-2"))
        assert again.body == "# Skill\n\nDoes things.\n"
        assert remote.stats()["misses"] == 1  # a hit: no second request
        assert (
            remote.stats()["levels"] == local.stats()["levels"] == {"production/auth-v2": "files"}
        )
        with pytest.raises(Exception, match="has no file"):
            remote.read(resolution, "../x")


def _times_to_see(
    local: Loader, remote: Loader, change: Callable[[], None], seen: Callable[[Loader], bool]
) -> tuple[float, float]:
    """Seconds from `change()` returning until each loader shows it."""
    change()
    started = time.monotonic()
    times: dict[str, float] = {}
    while len(times) < 2:
        for name, loader in (("local", local), ("remote", remote)):
            if name not in times and seen(loader):
                times[name] = time.monotonic() - started
        if time.monotonic() - started > 5:
            pytest.fail(f"not seen within 5 s: {times}", pytrace=False)
        time.sleep(0.002)
    return times["local"], times["remote"]


def test_a_promotion_and_a_kill_switch_reach_the_remote_loader_quickly(
    project: Project,
) -> None:
    promote_version(project, "1.0.0")
    with loaders(project) as (local, remote, _):
        newer = stage_version(project, "1.1.0")

        def promote() -> None:
            (result,) = api.promote(project, ["auth-v2"], to="production", overwrite=True)
            assert result.success, result.error

        promoted = _times_to_see(
            local, remote, promote, lambda seer: seer.resolve("auth-v2", "user-1").digest == newer
        )

        def kill() -> None:
            api.switch(project, "auth-v2", kind="disabled", on=True, actor="tester", reason="x")

        killed = _times_to_see(
            local, remote, kill, lambda seer: seer.resolve("auth-v2", "user-1").arm == "disabled"
        )
        print(
            f"\nseen (local, remote): promotion {promoted[0] * 1000:.0f}, "
            f"{promoted[1] * 1000:.0f} ms; kill switch {killed[0] * 1000:.0f}, "
            f"{killed[1] * 1000:.0f} ms"
        )
        for what, (_, by_remote) in (("promotion", promoted), ("kill switch", killed)):
            assert by_remote < SEEN_WITHIN, f"the {what} took {by_remote:.3f} s"
        assert remote.catalog() == [] == local.catalog()
        with pytest.raises(Exception, match="switched off"):
            remote.load(remote.resolve("auth-v2", "user-1"))


def test_resolve_costs_the_same_remote_as_local(project: Project) -> None:
    promote_version(project, "1.0.0")
    start_rollout(project, "1.1.0", steps=[50, 100], segments=[])
    with loaders(project) as (local, remote, _):
        settled(project, local, remote)
        timings = {}
        for name, loader in (("local", local), ("remote", remote)):
            started = time.perf_counter()
            for i in range(20_000):
                loader.resolve("auth-v2", f"user-{i}")
            timings[name] = (time.perf_counter() - started) / 20_000 * 1e6
        print(f"\nresolve: local {timings['local']:.2f} µs, remote {timings['remote']:.2f} µs")
        assert timings["remote"] < 3 * timings["local"] + 5


# -- records --------------------------------------------------------------------------------


def test_records_land_once(project: Project) -> None:
    promote_version(project, "1.0.0")
    with loaders(project, flush_ms=20, batch_max=50) as (_, remote, _url):
        for i in range(120):
            resolution = remote.resolve("auth-v2", f"user-{i}")
            remote.record(resolution, pattern_fidelity=0.9, execution_time_ms=10.0 + i)
        assert remote.flush(10)
        stats = remote.stats()
        assert (stats["records_sent"], stats["records_dropped"], stats["records_queued"]) == (
            120,
            0,
            0,
        )
        assert executions(project) == 120
        with Store.open(project.database_url) as store, store.reading() as tx:
            tags = tx.query("SELECT tags FROM execution LIMIT 1")[0][0]
            assert tx.dialect.read_json(tags)["arm"] == "stable"
        # An invalid record is refused at once, as by the local loader.
        with pytest.raises(Exception, match="not a valid execution record"):
            remote.record(remote.resolve("auth-v2", "u"), pattern_fidelity=2.0)


class _LoseFirstAnswers:
    """An ASGI wrapper that lets the app store the first `count` posted batches and then keeps
    their answers back until the client gave up: a batch that timed out after it was stored."""

    def __init__(self, app: FastAPI, count: int) -> None:
        self.app, self.left, self.lost = app, count, 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/v1/executions" and self.left > 0:
            self.left -= 1

            async def swallow(message: Any) -> None:
                return None

            await self.app(scope, receive, swallow)
            self.lost += 1
            await asyncio.sleep(3)  # the client's timeout (1 s) passes first
            return
        await self.app(scope, receive, send)


def test_a_batch_sent_again_after_a_timeout_adds_nothing(project: Project) -> None:
    promote_version(project, "1.0.0")
    wrapped = _LoseFirstAnswers(app_for(project), count=1)
    with loaders(project, app=wrapped, flush_ms=20, timeout_s=1.0) as (_, remote, _url):
        for i in range(30):
            remote.record(remote.resolve("auth-v2", f"user-{i}"), outcome_quality=1.0)
        assert remote.flush(15)
        stats = remote.stats()
        assert wrapped.lost == 1
        assert stats["record_retries"] >= 1
        assert stats["records_sent"] == 30
        assert stats["records_duplicates"] == 30  # the resend: every id already stored
        assert executions(project) == 30


def test_a_full_queue_drops_and_counts(project: Project) -> None:
    promote_version(project, "1.0.0")
    port = free_port()
    with serving(app_for(project), port) as url:
        remote = RemoteLoader(url=url, queue_max=5, refresh_ms=REFRESH_MS)
    try:  # the server gone: nothing is sent, the queue fills
        for i in range(8):
            remote.record(remote.resolve("auth-v2", f"user-{i}"))
        stats = remote.stats()
        assert (stats["records_dropped"], stats["records_queued"]) == (3, 5)
        with serving(app_for(project), port):
            assert remote.flush(15)
            assert executions(project) == 5
    finally:
        remote.close()


# -- the server away ------------------------------------------------------------------------


def test_a_server_away_leaves_the_last_table_serving_until_it_is_back(
    project: Project, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="skillstage.runtime")
    live = promote_version(project, "1.0.0")
    port = free_port()
    with serving(app_for(project), port) as url:
        remote = RemoteLoader(url=url, refresh_ms=REFRESH_MS, flush_ms=20)
        loaded = remote.load(remote.resolve("auth-v2", "user-1"))
        assert remote.stats()["stale"] is False
    try:
        within(lambda: remote.stats()["stale"])
        stats = remote.stats()
        assert stats["stale_since"] is not None
        assert stats["last_error"]
        assert remote.resolve("auth-v2", "user-1").digest == live
        assert remote.load(remote.resolve("auth-v2", "user-2")) == loaded  # from the cache
        assert remote.refresh() is False
        remote.record(remote.resolve("auth-v2", "user-1"), pattern_fidelity=1.0)
        assert remote.flush(0.5) is False  # queued until the server is back
        newer = promote_version(project, "1.1.0")  # while the server is away
        time.sleep(3 * REFRESH_MS / 1000)
        assert remote.resolve("auth-v2", "user-1").digest == live
        errors = remote.stats()["refresh_errors"]
        assert errors >= 2

        with serving(app_for(project), port):
            within(lambda: remote.resolve("auth-v2", "user-1").digest == newer)
            within(lambda: not remote.stats()["stale"])
            stats = remote.stats()
            assert (stats["stale_since"], stats["last_error"]) == (None, None)
            assert remote.flush(10)
            assert executions(project) == 1
            # Warned once when it went, once when it came back.
            messages = [r.message for r in caplog.records if r.name == "skillstage.runtime"]
            assert sum("cannot be reached" in m for m in messages) == 1, messages
            assert sum("answers again" in m for m in messages) == 1, messages
            remote.close()  # before the server stops, or its going is warned of again
    finally:
        remote.close()


def test_a_server_that_cannot_read_its_store_makes_the_remote_loader_stale(
    project: Project,
) -> None:
    live = promote_version(project, "1.0.0")
    with loaders(project) as (_, remote, _url):
        put_back = _make_store_unreadable(project.database_url)
        try:
            within(lambda: remote.stats()["stale"])
            assert "cannot read its store" in remote.stats()["last_error"]
            assert remote.resolve("auth-v2", "user-1").digest == live
        finally:
            put_back()
        # The server's loader reads its store again: the wait ends, no long poll to sit out.
        took = within(lambda: not remote.stats()["stale"], timeout=2 * REFRESH_MS / 1000 + 1)
        assert remote.stats()["last_error"] is None
        newer = promote_version(project, "1.1.0")
        within(lambda: remote.resolve("auth-v2", "user-1").digest == newer)
        print(f"\nfresh again {took * 1000:.0f} ms after the server's store came back")


def test_a_server_that_cannot_be_reached_or_refuses_is_an_error(project: Project) -> None:
    promote_version(project, "1.0.0")
    with pytest.raises(ServerError, match="cannot reach the skillstage server"):
        Loader(url=f"http://127.0.0.1:{free_port()}")
    with serving(app_for(project, auth=True), free_port()) as url:
        with pytest.raises(ServerError, match="refused the routing table") as raised:
            Loader(url=url, token="not-a-token")
        assert raised.value.hint and "recorder" in raised.value.hint


# -- content endpoints ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "relpath",
    [
        "%2e%2e/%2e%2e/%2e%2e/etc/passwd",
        "..%2fSKILL.md",
        "references/%2e%2e/%2e%2e/x",
        "%2Fetc%2Fpasswd",
        "/etc/passwd",
        "escape",
        "missing.md",
        "SKILL.md%00",
    ],
)
def test_paths_out_of_a_copy_are_refused(project: Project, relpath: str) -> None:
    live = promote_version(project, "1.0.0")
    os.symlink("/etc/passwd", project.stage_path("production", "auth-v2") / "escape")
    with serving(app_for(project), free_port()) as url, httpx.Client(base_url=url) as client:
        ok = client.get(f"/v1/content/{live}/files/execute.sh")
        assert ok.status_code == 200, ok.text
        assert ok.content == b"#!/bin/bash\necho ok\n"
        assert ok.headers["etag"] == f'"{live}"'
        assert "immutable" in ok.headers["cache-control"]
        again = client.get(
            f"/v1/content/{live}/files/execute.sh", headers={"If-None-Match": ok.headers["etag"]}
        )
        assert again.status_code == 304
        refused = client.get(f"/v1/content/{live}/files/{relpath}")
        assert 400 <= refused.status_code < 500, (refused.status_code, refused.text)
        assert b"root:" not in refused.content
        assert "error" in refused.json()


def test_content_of_an_unknown_or_malformed_digest_is_refused(project: Project) -> None:
    live = promote_version(project, "1.0.0")
    with serving(app_for(project), free_port()) as url, httpx.Client(base_url=url) as client:
        found = client.get(f"/v1/content/{live}")
        assert found.status_code == 200
        assert found.json()["files"] and found.json()["version"] == "1.0.0"
        assert client.get(f"/v1/content/{'0' * 64}").status_code == 404
        assert client.get("/v1/content/not-a-digest").status_code == 400


def test_the_feed_waits_and_says_unchanged(project: Project) -> None:
    promote_version(project, "1.0.0")
    with serving(app_for(project), free_port()) as url, httpx.Client(base_url=url) as client:
        first = client.get("/v1/routing/table").json()
        assert first["changed"] is True and first["stale"] is False
        generation = first["generation"]
        started = time.monotonic()
        unchanged = client.get(
            "/v1/routing/table", params={"since": generation, "wait": 0.3}
        ).json()
        assert time.monotonic() - started >= 0.3
        assert unchanged == {
            "changed": False,
            "generation": generation,
            "stale": False,
            "stale_since": None,
        }


def test_importing_the_runtime_imports_no_http_client() -> None:
    code = (
        "import sys, skillstage.runtime, skillstage.runtime.loader, skillstage.runtime.routing;"
        "bad = sorted(m for m in ('httpx', 'fastapi', 'starlette') if m in sys.modules);"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


# -- breakers and forks -----------------------------------------------------------------------


def test_a_remote_breaker_falls_back_and_its_events_reach_the_store(project: Project) -> None:
    before = promote_version(project, "1.0.0")
    broken = promote_version(project, "1.1.0")
    with loaders(project, breaker_fail_max=2, breaker_reset_seconds=60) as (_, remote, _url):
        resolution = remote.resolve("auth-v2", "user-1")
        assert resolution.digest == broken
        remote.record(resolution, exception=True)
        remote.record(resolution, exception=True)
        instead = remote.resolve("auth-v2", "user-1")
        assert (instead.digest, instead.arm) == (before, "fallback")
        remote.record(instead, pattern_fidelity=1.0)
        assert remote.flush(10)
        [breaker] = remote.stats()["breakers"]
        assert (breaker["state"], breaker["digest"]) == ("open", broken)

        def opened() -> list[dict[str, Any]]:
            entries = api.history_entries(project, "auth-v2")
            return [e for e in entries if "breaker_open" in str(e.values())]

        within(lambda: bool(opened()))
        [event] = opened()
        assert event["version"] == "1.1.0"
        assert remote.stats()["breaker_event_errors"] == 0
    with Store.open(project.database_url) as store, store.reading() as tx:
        rows = tx.query("SELECT digest, tags FROM execution ORDER BY timestamp, execution_id")
        tags = [tx.dialect.read_json(t).get("breaker") for _, t in rows]
        assert [(d, t) for (d, _), t in zip(rows, tags, strict=True)] == [
            (broken, None),
            (broken, None),
            (before, "open"),
        ]


def test_a_forked_child_has_its_own_wire(project: Project) -> None:
    live = promote_version(project, "1.0.0")
    with loaders(project, flush_ms=20) as (_, remote, _url):
        remote.record(remote.resolve("auth-v2", "parent"), pattern_fidelity=1.0)
        newer = stage_version(project, "1.1.0")
        reader, writer = os.pipe()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(reader)
                deadline = time.monotonic() + 10
                while (
                    remote.resolve("auth-v2", "user-1").digest != newer
                    and time.monotonic() < deadline
                ):
                    time.sleep(0.01)
                remote.record(remote.resolve("auth-v2", "child"), pattern_fidelity=1.0)
                sent = remote.flush(10)
                seen = remote.resolve("auth-v2", "user-1").digest
                os.write(writer, f"{seen} {sent}".encode())
                code = 0
            finally:
                os._exit(code)
        os.close(writer)
        try:
            (result,) = api.promote(project, ["auth-v2"], to="production", overwrite=True)
            assert result.success, result.error
            _, status = os.waitpid(pid, 0)
            report = os.read(reader, 1000).decode()
        finally:
            os.close(reader)
        assert os.waitstatus_to_exitcode(status) == 0
        assert report == f"{newer} True"
        assert remote.flush(10)
        within(lambda: remote.resolve("auth-v2", "user-1").digest == newer)
    assert live != newer
    with Store.open(project.database_url) as store, store.reading() as tx:
        subjects = sorted(row[0] for row in tx.query("SELECT subject FROM execution"))
    assert subjects == ["child", "parent"]  # each sent once, by its own process


def test_breaker_events_name_a_routed_skill_and_a_storable_event(project: Project) -> None:
    live = promote_version(project, "1.0.0")
    event = {
        "kind": "breaker_open",
        "name": "auth-v2",
        "version": "1.0.0",
        "digest": live,
        "stage": "production",
        "at": "2026-12-07T10:00:00Z",
        "reason": "2 failed executions in a row",
        "consecutive_failures": 2,
    }
    with serving(app_for(project), free_port()) as url, httpx.Client(base_url=url) as client:

        def post(**changes: Any) -> httpx.Response:
            return client.post(
                "/v1/breaker-events", json={"host": "h:1", "events": [{**event, **changes}]}
            )

        assert post(name="nobody-serves-it").status_code == 404
        assert post(stage="canary").status_code == 400
        assert post(at="2026-12-07T10:00:00").status_code == 422
        assert post(reason="a\x00b").status_code == 422
        assert post(kind="promotion").status_code == 422
        with pytest.raises(UsageError, match="no skill named"):  # not registered by it
            api.history_entries(project, "nobody-serves-it")
        written = post()
        assert written.status_code == 200, written.text
        assert written.json() == {"written": 1}
    kinds = [str(e.values()) for e in api.history_entries(project, "auth-v2")]
    assert sum("breaker_open" in k for k in kinds) == 1


def test_every_waiting_host_is_woken_by_one_change(project: Project) -> None:
    promote_version(project, "1.0.0")
    newer = stage_version(project, "1.1.0")
    with serving(app_for(project), free_port()) as url:
        generation = httpx.get(f"{url}/v1/routing/table").json()["generation"]

        async def hosts() -> list[tuple[float, dict[str, Any]]]:
            async with httpx.AsyncClient(base_url=url, timeout=30) as client:

                async def wait() -> tuple[float, dict[str, Any]]:
                    answer = await client.get(
                        "/v1/routing/table", params={"since": generation, "wait": 20}
                    )
                    return time.monotonic(), answer.json()

                waiting = [asyncio.create_task(wait()) for _ in range(30)]
                await asyncio.sleep(0.5)
                assert not any(task.done() for task in waiting)
                (result,) = await asyncio.to_thread(
                    api.promote, project, ["auth-v2"], to="production", overwrite=True
                )
                assert result.success, result.error
                promoted = time.monotonic()
                done = await asyncio.gather(*waiting)
                return [(at - promoted, answer) for at, answer in done]

        for after, answer in asyncio.run(hosts()):
            assert answer["changed"] is True
            assert after < SEEN_WITHIN
            table = RoutingTable.from_dict(answer["document"]["table"])
            assert table.resolve("auth-v2", "production", "user-1").digest == newer


def test_a_recorder_token_routes_records_and_is_the_breaker_events_actor(
    project: Project,
) -> None:
    from skillstage.tokens import create_token

    promote_version(project, "1.0.0")
    broken = promote_version(project, "1.1.0")
    recorder = create_token(project, name="agent-host-7", role="recorder").token
    viewer = create_token(project, name="grafana", role="viewer").token
    with serving(app_for(project, auth=True), free_port()) as url:
        with pytest.raises(ServerError, match="HTTP 403") as raised:
            Loader(url=url, token=viewer)
        assert raised.value.hint and "recorder" in raised.value.hint
        with RemoteLoader(url=url, token=recorder, breaker_fail_max=1, flush_ms=20) as remote:
            resolution = remote.resolve("auth-v2", "user-1")
            assert resolution.digest == broken
            assert remote.load(resolution).version == "1.1.0"
            remote.record(resolution, exception=True)  # opens the breaker (fail_max 1)
            assert remote.flush(10)
            assert executions(project) == 1

            def opened() -> list[dict[str, Any]]:
                entries = api.history_entries(project, "auth-v2")
                return [e for e in entries if "breaker_open" in str(e.values())]

            within(lambda: bool(opened()))
            assert "agent-host-7" in str(opened()[0].values())
