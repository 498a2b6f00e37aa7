"""The loader agent hosts call (`skillstage.runtime.Loader`), on real projects and real stores
(SQLite and PostgreSQL): disclosure levels and the digest cache, refusals, promotions seen within
the refresh interval, drift served from the archive, a store that cannot be read, recording, and
a forked child."""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import SkillstageError, UsageError
from skillstage.lifecycle.doctor import run_doctor
from skillstage.metrics.record import inbox_file
from skillstage.runtime import Loader, UnknownSkillError
from skillstage.runtime.routing import archive_entry
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store.db import parse_url
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
SEEN_WITHIN = 1.0  # seconds: a loader polls every 250 ms (PostgreSQL also LISTENs)
POLL_FOR = 2.0  # how long a test waits before it calls a change unseen


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@pytest.fixture
def live(project: Project) -> str:
    """auth-v2 1.0.0 promoted to production; its digest."""
    return promote_version(project, "1.0.0")


@pytest.fixture
def loader(project: Project, live: str) -> Iterator[Loader]:
    with Loader(project) as opened:
        yield opened


def stage_version(project: Project, version: str, name: str = "auth-v2") -> str:
    """`name` at `version` in staging; its digest."""
    directory = write_skill(project.root / STAGING, name, extra={"version": version})
    return read_skill(directory).digest


def promote_version(project: Project, version: str, name: str = "auth-v2") -> str:
    """`name` at `version` staged and promoted to production over what is live; its digest."""
    digest = stage_version(project, version, name)
    (result,) = api.promote(project, [name], to="production", overwrite=True, actor="tester")
    assert result.success, result.error
    return digest


def start_rollout(project: Project, version: str, steps: list[int]) -> str:
    """A rollout of auth-v2 `version` (staged now) beside the live version; its digest."""
    digest = stage_version(project, version)
    outcome = api.rollout_start(
        project,
        "auth-v2",
        steps=steps,
        step_min_duration="0s",
        step_min_executions=5,
        actor="tester",
    )
    assert outcome.success, outcome.error
    return digest


def within(predicate: Callable[[], bool], timeout: float = POLL_FOR) -> float:
    """Seconds until `predicate()` held (polled every 10 ms); fails after `timeout`."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout:
            pytest.fail(f"not seen within {timeout} s", pytrace=False)
        time.sleep(0.01)
    return time.monotonic() - started


# -- levels and the cache ---------------------------------------------------------------------


def test_catalog_lists_production_skills_and_reads_no_file(project: Project, live: str) -> None:
    billing = promote_version(project, "2.3.0", name="billing")
    stage_version(project, "0.1.0", name="draft")  # only staged: not in the catalog
    with Loader(project) as loader:
        # With the whole skill tree gone (live copies and staging alike) the catalog still
        # answers: it comes from the store's table, not from the disk.
        away = project.root.parent / f"{project.root.name}-skills-away"
        os.rename(project.root / ".claude", away)
        try:
            entries = {entry.name: entry for entry in loader.catalog()}
        finally:
            os.rename(away, project.root / ".claude")
        assert set(entries) == {"auth-v2", "billing"}
        auth = entries["auth-v2"]
        assert (auth.version, auth.digest, auth.arm) == ("1.0.0", live, "stable")
        assert auth.description == "The auth-v2 skill. Use it when testing."
        assert (entries["billing"].version, entries["billing"].digest) == ("2.3.0", billing)
        levels = loader.stats()["levels"]
        assert levels == {"production/auth-v2": "catalog", "production/billing": "catalog"}

        resolution = loader.resolve("auth-v2", subject="user-1")
        skill = loader.load(resolution)
        assert skill.body == "# Skill\n\nDoes things.\n"
        assert set(skill.files) >= {"SKILL.md", "execute.sh", "test.sh"}
        assert skill.path == project.root / PRODUCTION / "auth-v2"
        assert loader.stats()["levels"]["production/auth-v2"] == "body"

        assert loader.read(resolution, "execute.sh") == b"#!/bin/bash\necho ok\n"
        levels = loader.stats()["levels"]
        assert levels == {"production/auth-v2": "files", "production/billing": "catalog"}
        # A later catalog does not lower a level already reached.
        loader.catalog()
        assert loader.stats()["levels"]["production/auth-v2"] == "files"


def test_second_load_of_a_digest_is_a_hit_and_reads_no_file(
    project: Project, live: str, loader: Loader
) -> None:
    first = loader.load(loader.resolve("auth-v2", subject="user-1"))
    script = loader.read(loader.resolve("auth-v2"), "execute.sh")
    assert loader.stats()["misses"] == 1
    # Both copies of the digest gone: a second load that went to the disk would fail.
    shutil.rmtree(project.root / PRODUCTION / "auth-v2")
    entry = archive_entry(project, "auth-v2", "1.0.0", live)
    os.rename(entry, entry.with_name(entry.name + "-away"))

    again = loader.load(loader.resolve("auth-v2", subject="user-2"))
    assert again.body == first.body
    assert again.digest == live
    assert loader.read(loader.resolve("auth-v2"), "execute.sh") == script
    stats = loader.stats()
    # The first load is the only miss; each later load is a hit, and so is each read (a read
    # loads first): load, read, load, read = 1 miss and 3 hits.
    assert (stats["misses"], stats["hits"]) == (1, 3)
    assert (stats["cached_digests"], stats["cached_files"]) == (1, 1)
    assert stats["drift"] == {}


# -- refusals -----------------------------------------------------------------------------------


def test_unknown_skill_is_refused_with_a_hint(loader: Loader) -> None:
    with pytest.raises(UnknownSkillError) as raised:
        loader.resolve("no-such-skill", subject="user-1")
    assert isinstance(raised.value, SkillstageError)
    assert "no-such-skill" in str(raised.value)
    assert raised.value.hint and "skillstage list" in raised.value.hint
    # The same skill asked for in a stage it does not serve in: the hint names where it does.
    with pytest.raises(UnknownSkillError) as raised:
        loader.resolve("auth-v2", stage="staged")
    assert raised.value.hint == "auth-v2 serves in production: ask for that stage"


def test_unknown_stage_is_refused(project: Project, live: str) -> None:
    with pytest.raises(UsageError, match="unknown stage 'canary'"):
        Loader(project, stage="canary")


@pytest.mark.parametrize(
    "relpath",
    ["../x", "../auth-v2/SKILL.md", "references/../SKILL.md", "/etc/passwd", "missing.md"],
)
def test_read_refuses_a_path_not_in_the_file_list(loader: Loader, relpath: str) -> None:
    resolution = loader.resolve("auth-v2")
    with pytest.raises(UsageError, match="has no file") as raised:
        loader.read(resolution, relpath)
    assert raised.value.hint and "execute.sh" in raised.value.hint
    assert loader.stats()["cached_files"] == 0


# -- changes are seen within the refresh interval --------------------------------------------


def test_a_promotion_is_seen_within_a_second(project: Project, loader: Loader) -> None:
    newer = stage_version(project, "1.1.0")
    started = time.monotonic()
    (result,) = api.promote(project, ["auth-v2"], to="production", overwrite=True)
    assert result.success, result.error
    within(lambda: loader.resolve("auth-v2", subject="user-1").digest == newer)
    elapsed = time.monotonic() - started
    assert elapsed < SEEN_WITHIN, f"the promotion took {elapsed:.2f} s to be seen"
    assert loader.resolve("auth-v2").version == "1.1.0"
    assert loader.stats()["refreshes"] >= 1


def test_a_rollback_is_seen_within_a_second(project: Project, live: str, loader: Loader) -> None:
    newer = promote_version(project, "1.1.0")
    within(lambda: loader.resolve("auth-v2").digest == newer)
    started = time.monotonic()
    result = api.rollback(project, "auth-v2", reason="x", actor="tester")
    assert result.success, result.error
    within(lambda: loader.resolve("auth-v2", subject="user-1").digest == live)
    elapsed = time.monotonic() - started
    assert elapsed < SEEN_WITHIN, f"the rollback took {elapsed:.2f} s to be seen"


def test_a_rollout_abort_puts_every_subject_back_on_stable(
    project: Project, live: str, loader: Loader
) -> None:
    subjects = [f"user-{i}" for i in range(200)]
    candidate = start_rollout(project, "1.1.0", steps=[50, 100])

    def arms() -> dict[str, int]:
        found: dict[str, int] = {}
        for subject in subjects:
            resolution = loader.resolve("auth-v2", subject=subject)
            found[resolution.digest] = found.get(resolution.digest, 0) + 1
        return found

    within(lambda: candidate in arms())
    split = arms()
    assert set(split) == {live, candidate}, split  # about half each, by sticky bucket
    started = time.monotonic()
    outcome = api.rollout_change(project, "abort", "auth-v2", reason="x", actor="tester")
    assert outcome.success, outcome.error
    within(lambda: arms() == {live: len(subjects)})
    elapsed = time.monotonic() - started
    assert elapsed < SEEN_WITHIN, f"the abort took {elapsed:.2f} s to be seen"
    resolution = loader.resolve("auth-v2", subject="user-1")
    assert (resolution.arm, resolution.rollout_id, resolution.bucket) == ("stable", None, None)


# -- drift --------------------------------------------------------------------------------------


def _doctor_findings(project: Project) -> list[dict[str, object]]:
    completed = subprocess.run(
        [sys.executable, "-m", "skillstage", "doctor", "--json"],
        cwd=project.root,
        env={**os.environ, "NO_COLOR": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 1, completed.stderr  # 1: drift found
    report = json.loads(completed.stdout)
    findings: list[dict[str, object]] = report["findings"]
    return findings


@pytest.mark.parametrize(
    ("damage", "kind"), [("edited", "edited_live_dir"), ("deleted", "missing_live_dir")]
)
def test_drift_serves_the_archive_copy_and_is_reported_once(
    project: Project,
    live: str,
    loader: Loader,
    caplog: pytest.LogCaptureFixture,
    damage: str,
    kind: str,
) -> None:
    directory = project.root / PRODUCTION / "auth-v2"
    if damage == "edited":
        with (directory / "SKILL.md").open("a", encoding="utf-8") as skill_md:
            skill_md.write("An edit made in place.\n")
    else:
        shutil.rmtree(directory)

    with caplog.at_level(logging.WARNING, logger="skillstage.runtime"):
        loaded = [loader.load(loader.resolve("auth-v2", subject=f"user-{i}")) for i in range(3)]
    skill = loaded[0]
    assert skill.digest == live
    assert skill.body == "# Skill\n\nDoes things.\n"  # the stored digest's body, not the edit
    assert skill.path == archive_entry(project, "auth-v2", "1.0.0", live)
    assert skill.path.is_relative_to(project.state_dir / "archive")
    assert all(other is skill for other in loaded)
    drift = loader.stats()["drift"]
    assert list(drift) == [live]
    assert str(directory) in drift[live]
    warnings = [r for r in caplog.records if "not the version the store names" in r.message]
    assert len(warnings) == 1, [r.message for r in caplog.records]
    assert "auth-v2 1.0.0" in warnings[0].message
    # The archive's copy serves the files too.
    assert loader.read(loader.resolve("auth-v2"), "execute.sh") == b"#!/bin/bash\necho ok\n"

    found = [f for f in _doctor_findings(project) if f["skill"] == "auth-v2"]
    assert [f["kind"] for f in found] == [kind], found


def test_a_resolution_from_before_a_promotion_loads_its_version(
    project: Project, live: str, loader: Loader
) -> None:
    # A request resolved just before the promotion, loaded after it: the live directory holds
    # the new version now, so the resolved one comes from the archive, whole.
    before = loader.resolve("auth-v2", subject="user-1")
    newer = promote_version(project, "1.1.0")
    within(lambda: loader.resolve("auth-v2").digest == newer)
    skill = loader.load(before)
    assert (skill.version, skill.digest) == ("1.0.0", live)
    assert skill.path == archive_entry(project, "auth-v2", "1.0.0", live)
    assert loader.load(loader.resolve("auth-v2")).path == project.root / PRODUCTION / "auth-v2"
    assert run_doctor(project).findings == []  # nothing drifted


def test_a_version_that_stopped_serving_is_not_reported_as_drift(
    project: Project, live: str, loader: Loader, caplog: pytest.LogCaptureFixture
) -> None:
    before = loader.resolve("auth-v2", subject="user-1")
    newer = promote_version(project, "1.1.0")
    within(lambda: loader.resolve("auth-v2").digest == newer)
    with caplog.at_level(logging.WARNING, logger="skillstage.runtime"):
        assert loader.load(before).digest == live
    assert [r.message for r in caplog.records] == []
    assert loader.stats()["drift"] == {}


def test_no_intact_copy_is_an_error_naming_the_skill(
    project: Project, live: str, loader: Loader
) -> None:
    for directory in (
        project.root / PRODUCTION / "auth-v2",
        archive_entry(project, "auth-v2", "1.0.0", live),
    ):
        skill_md = directory / "SKILL.md"
        skill_md.chmod(0o644)
        with skill_md.open("a", encoding="utf-8") as handle:
            handle.write("Broken.\n")
    with pytest.raises(SkillstageError) as raised:
        loader.load(loader.resolve("auth-v2"))
    assert not isinstance(raised.value, UnknownSkillError)
    assert "no intact copy of auth-v2 1.0.0" in str(raised.value)
    assert raised.value.hint and "doctor" in raised.value.hint
    assert loader.stats()["cached_digests"] == 0


# -- the store going away -----------------------------------------------------------------------


def _schema(url: str) -> str:
    options = parse_qs(urlsplit(url).query)["options"][0]
    assert options.startswith("-csearch_path="), options
    return options.removeprefix("-csearch_path=")


def _make_store_unreadable(url: str) -> Callable[[], None]:
    """Make the store at `url` unreadable to the loader's open connections, for real; returns
    what puts it back.

    Renaming the SQLite file away is not enough: SQLite connections read the file they opened
    (see test_a_sqlite_store_moved_away_is_stale); chmod neither (it guards opening, and the tests
    may run as root). So the store is changed under the loader instead: on PostgreSQL its schema
    is renamed, so that nothing is at the search_path any more (the store is gone for every
    connection, open or new); on SQLite the table a refresh reads first is renamed."""
    parsed = parse_url(url)
    if parsed.backend == "sqlite":
        assert parsed.database is not None
        database = parsed.database

        def rename(old: str, new: str) -> None:
            with sqlite3.connect(database, isolation_level=None) as connection:
                connection.execute(f"ALTER TABLE {old} RENAME TO {new}")
            connection.close()

        rename("routing_generation", "routing_generation_away")
        return lambda: rename("routing_generation_away", "routing_generation")
    import psycopg

    schema = _schema(url)

    def rename_schema(old: str, new: str) -> None:
        with psycopg.connect(parsed.conninfo, autocommit=True) as connection:
            connection.execute(f'ALTER SCHEMA "{old}" RENAME TO "{new}"')

    rename_schema(schema, schema + "_away")
    return lambda: rename_schema(schema + "_away", schema)


def test_an_unreadable_store_keeps_the_last_table_serving(
    project: Project, live: str, loader: Loader, caplog: pytest.LogCaptureFixture
) -> None:
    assert loader.stats()["stale"] is False
    with caplog.at_level(logging.WARNING, logger="skillstage.runtime"):
        put_back = _make_store_unreadable(project.database_url)
        try:
            assert loader.refresh() is False
            stats = loader.stats()
            assert stats["stale"] is True
            assert stats["stale_since"] is not None
            assert "StoreError" in stats["last_error"]
            assert "routing_generation" in stats["last_error"]
            resolution = loader.resolve("auth-v2", subject="user-1")
            assert (resolution.digest, resolution.version) == (live, "1.0.0")
            assert [e.digest for e in loader.catalog()] == [live]
            assert loader.load(resolution).digest == live  # content comes from the disk
            # The background refresher fails too, and stays quiet after the first warning.
            within(lambda: loader.stats()["refresh_errors"] >= 3)
        finally:
            put_back()
        assert loader.refresh() is False  # nothing changed meanwhile: no rebuild
    stats = loader.stats()
    assert (stats["stale"], stats["stale_since"], stats["last_error"]) == (False, None, None)
    messages = [r.message for r in caplog.records]
    assert sum("cannot be read" in m for m in messages) == 1, messages
    assert sum("can be read again" in m for m in messages) == 1, messages
    # And changes are seen again.
    newer = promote_version(project, "1.1.0")
    within(lambda: loader.resolve("auth-v2").digest == newer)


def test_a_sqlite_store_moved_away_is_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sqlite_url: str
) -> None:
    # SQLite only: a file moved away is SQLite's way for the store to go (PostgreSQL's is in
    # test_an_unreadable_store_keeps_the_last_table_serving).
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", sqlite_url)
    api.init(tmp_path)
    project = load_config_file(tmp_path / "skillstage.toml")
    live = promote_version(project, "1.0.0")
    database = Path(sqlite_url.removeprefix("sqlite:///"))
    moved = database.with_name("moved-away.db")
    with Loader(project) as loader:
        database.rename(moved)
        try:
            loader.refresh()
            assert loader.resolve("auth-v2").digest == live
            assert loader.stats()["stale"] is True
        finally:
            moved.rename(database)


# -- recording ----------------------------------------------------------------------------------


def test_record_tags_the_arm_and_ingests(project: Project, live: str, loader: Loader) -> None:
    candidate = start_rollout(project, "1.1.0", steps=[50, 100])
    within(lambda: loader.resolve("auth-v2", subject="user-0").rollout_id is not None)
    resolutions = [loader.resolve("auth-v2", subject=f"user-{i}") for i in range(100)]
    resolution = next(r for r in resolutions if r.arm == "candidate")
    assert resolution.digest == candidate

    loader.record(resolution, pattern_fidelity=0.9, tags={"host": "test"})
    lines = inbox_file(project.metrics_inbox, "auth-v2").read_text().splitlines()
    assert len(lines) == 1
    written = json.loads(lines[0])
    assert written["skill"] == "auth-v2"
    assert (written["version"], written["digest"]) == ("1.1.0", candidate)
    assert written["subject"] == resolution.subject
    assert written["pattern_fidelity"] == 0.9
    assert written["tags"] == {
        "host": "test",
        "arm": "candidate",
        "stage": "production",
        "rollout_id": resolution.rollout_id,
        "bucket": resolution.bucket,
    }

    result = api.ingest_metrics(project)
    assert (result.inserted, result.quarantined) == (1, 0), result
    with Store.open(project.database_url) as store, store.reading() as tx:
        rows = tx.query(
            "SELECT e.version, e.digest, e.subject, e.pattern_fidelity, e.tags"
            " FROM execution e JOIN skill s ON s.id = e.skill_id WHERE s.name = :name",
            {"name": "auth-v2"},
        )
        assert len(rows) == 1
        version, digest, subject, fidelity, tags = rows[0]
        assert (version, digest, subject, fidelity) == ("1.1.0", candidate, resolution.subject, 0.9)
        assert tx.dialect.read_json(tags)["arm"] == "candidate"


# -- fork ----------------------------------------------------------------------------------------


_reaped: dict[int, int] = {}


def _wait(pid: int, timeout: float) -> int | None:
    """The exit code of child `pid` once it ended (waiting up to `timeout` s), else None."""
    deadline = time.monotonic() + timeout
    while pid not in _reaped:
        finished, status = os.waitpid(pid, os.WNOHANG)
        if finished:
            _reaped[pid] = os.waitstatus_to_exitcode(status)
        elif time.monotonic() >= deadline:
            return None
        else:
            time.sleep(0.01)
    return _reaped[pid]


def test_a_forked_child_resolves_and_sees_a_later_promotion(
    project: Project, live: str, loader: Loader
) -> None:
    newer = stage_version(project, "1.1.0")
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it resolves, then leave without pytest's teardown
        code = 1
        try:
            os.close(reader)
            first = loader.resolve("auth-v2", subject="user-1").digest
            deadline = time.monotonic() + 10
            latest = first
            while latest != newer and time.monotonic() < deadline:
                time.sleep(0.01)
                latest = loader.resolve("auth-v2", subject="user-1").digest
            body = loader.load(loader.resolve("auth-v2")).body
            report = {"first": first, "latest": latest, "body": body, "stats": loader.stats()}
            os.write(writer, json.dumps(report).encode())
            code = 0
        except BaseException as exc:
            os.write(writer, json.dumps({"error": repr(exc)}).encode())
        finally:
            os._exit(code)
    os.close(writer)
    try:
        (result,) = api.promote(project, ["auth-v2"], to="production", overwrite=True)
        assert result.success, result.error
        chunks = []
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            ready, _, _ = select.select([reader], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                break
            chunk = os.read(reader, 1 << 16)
            if not chunk:
                break
            chunks.append(chunk)
        report = json.loads(b"".join(chunks) or b'{"error": "no answer from the child"}')
        status = _wait(pid, deadline - time.monotonic())
    finally:
        os.close(reader)
        if _wait(pid, 0) is None:  # still running (or hung): it must not outlive the test
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
    assert "error" not in report, report["error"]
    assert status == 0
    assert (report["first"], report["latest"]) == (live, newer)
    assert report["body"] == "# Skill\n\nDoes things.\n"
    assert report["stats"]["stale"] is False
    # The parent's loader was not disturbed by the child's connections.
    within(lambda: loader.resolve("auth-v2").digest == newer)
    assert loader.refresh() is False
    assert loader.stats()["stale"] is False
    assert loader.stats()["refresh_errors"] == 0
