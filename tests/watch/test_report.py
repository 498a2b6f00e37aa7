"""The failure analysis report after an automated rollback or rollout abort, on real projects and
real stores (SQLite and PostgreSQL): two versions promoted through the real API, executions
recorded to the inbox and ingested, the rollback made by the promoter as the watcher makes it (the
alert delivered to a real HTTP receiver, the re-index hook run), then the report written and read
back, and `skillstage report NAME --failure` run as a user runs it."""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_config_file
from skillstage.errors import UsageError
from skillstage.lifecycle.promote import rollback
from skillstage.rollout import engine, steering
from skillstage.skill.model import SkillVersion
from skillstage.skill.read import read_skill
from skillstage.store import Store
from skillstage.store import controls as store_controls
from skillstage.watch.report import (
    NoFailureReportError,
    failure_events_without_report,
    failure_report,
    latest_failure,
    report_paths,
    write_failure_report,
)
from tests.skilltree import write_skill

NAME = "auth-v2"
STAGING = Path(".claude/skills/staging")
PRODUCTION = Path(".claude/skills")
WATCHER = "skillstage-watch"
PATTERNS = """\
- id: check-blocklist
  description: Looks the sender up in the blocklist before scoring
  keywords: [blocklist, checked]
  order: 1
- id: score
  description: Scores the message
  regex: scored
  order: 2
"""


@dataclass
class Receiver:
    """A webhook endpoint on 127.0.0.1 that records each request and answers 200."""

    port: int
    requests: list[dict[str, Any]] = field(default_factory=list)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    state = Receiver(port=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            state.requests.append(json.loads(self.rfile.read(length)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass  # keep the test output clean

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, store_url: str) -> Project:
    """A fresh project on SQLite and on PostgreSQL (via SKILLSTAGE_DATABASE_URL)."""
    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", store_url)
    api.init(tmp_path)
    return load_config_file(tmp_path / "skillstage.toml")


@pytest.fixture
def alerting(project: Project, receiver: Receiver) -> Project:
    """`project` with a notification target (the receiver) and a re-index hook, so that a
    rollback's alert and re-index record their steps of its timeline."""
    config = project.root / "skillstage.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("urls = []", f'urls = ["json://127.0.0.1:{receiver.port}/hook"]', 1)
    text = text.replace("[hooks]\n", '[hooks]\nreindex = "true"\n', 1)
    config.write_text(text, encoding="utf-8")
    return load_config_file(config)


def stage(project: Project, version: str) -> SkillVersion:
    """auth-v2 at `version` (with its patterns.yaml) waiting in staging."""
    directory = write_skill(
        project.root / STAGING,
        NAME,
        extra={"version": version},
        files={"patterns.yaml": PATTERNS},
    )
    return read_skill(directory)


def promote(project: Project, version: str) -> SkillVersion:
    """auth-v2 at `version` staged, then promoted to production over what is live."""
    skill = stage(project, version)
    (result,) = api.promote(project, [NAME], to="production", overwrite=True, actor="tester")
    assert result.success, result.error
    return skill


def record(project: Project, skill: SkillVersion, execution_id: str, **fields: Any) -> None:
    fields.setdefault("pattern_fidelity", 0.95)
    fields.setdefault("outcome_quality", 0.9)
    fields.setdefault("execution_time_ms", 3.0)
    api.record_execution(
        project,
        NAME,
        execution_id=execution_id,
        version=skill.version,
        digest=skill.digest,
        **fields,
    )


def bad_run(i: int) -> dict[str, Any]:
    """The i-th execution of the failing version: fidelity 0.62; even ones name the pattern
    they missed in a tag, odd ones carry breadcrumbs that follow none; every 5th raised, every
    7th was a false positive."""
    tags: dict[str, Any] = (
        {"patterns_missed": ["check-blocklist"]} if i % 2 == 0 else {"breadcrumbs": ["started"]}
    )
    if i % 5 == 0:
        tags["exception"] = "KeyError: 'sender'"
    return {
        "pattern_fidelity": 0.62,
        "outcome_quality": 0.7,
        "patterns_missed": 1 if i % 2 == 0 else 2,
        "patterns_followed": 1 if i % 2 == 0 else 0,
        "exception": i % 5 == 0,
        "false_positive": i % 7 == 0,
        "subject": f"user-{i}",
        "tags": tags,
    }


@dataclass
class RolledBack:
    project: Project
    stable: SkillVersion
    failed: SkillVersion
    event_id: int


def roll_back(project: Project) -> RolledBack:
    """1.0.0 live with 20 good executions; 1.1.0 recorded 3 times in staging, promoted, 25 bad
    executions in production and 2 benchmark runs; then the watcher's rollback, and one more
    execution of 1.1.0 after it."""
    stable = promote(project, "1.0.0")
    for i in range(20):
        record(project, stable, f"good-{i:02d}")
    failed = stage(project, "1.1.0")
    for i in range(3):
        record(project, failed, f"early-{i}", **bad_run(1))
    (result,) = api.promote(project, [NAME], to="production", overwrite=True, actor="tester")
    assert result.success, result.error
    for i in range(25):
        record(project, failed, f"bad-{i:02d}", **bad_run(i))
    for i in range(2):
        record(project, failed, f"bench-{i}", pattern_fidelity=0.99, tags={"source": "eval"})
    api.ingest_metrics(project)
    with Store.open(project.database_url) as store:
        done = rollback(
            project,
            store,
            NAME,
            reason="pattern_fidelity_drop_below_85",
            trigger_metric="fidelity=0.62",
            actor=WATCHER,
            hold=True,
            only_if_live=failed.digest,
        )
    assert done.success and not done.unchanged, done.error
    assert done.event_id is not None
    record(project, failed, "late-0", **bad_run(0))  # after the rollback: not in the window
    api.ingest_metrics(project)
    return RolledBack(project, stable, failed, done.event_id)


@pytest.fixture
def rolled_back(alerting: Project) -> RolledBack:
    return roll_back(alerting)


def report_steps(project: Project, event_id: int) -> list[store_controls.Step]:
    with Store.open(project.database_url) as store, store.reading() as tx:
        return store_controls.steps(tx, [event_id]).get(event_id, [])


# -- the rollback's report ---------------------------------------------------------------------


def test_the_report_of_an_automated_rollback_says_what_tripped_it(
    rolled_back: RolledBack,
) -> None:
    project, event_id = rolled_back.project, rolled_back.event_id
    with Store.open(project.database_url) as store:
        assert failure_events_without_report(store) == [event_id]
        path = write_failure_report(project, store, event_id)
        assert failure_events_without_report(store) == []
    markdown_path, json_path = report_paths(project, NAME, event_id)
    assert path == markdown_path == project.state_dir / "reports" / f"{NAME}-{event_id}-failure.md"
    document = json.loads(json_path.read_text(encoding="utf-8"))

    assert document["skill"] == NAME
    assert (document["kind"], document["what"]) == ("rollback", "automated rollback")
    assert (document["stage"], document["actor"]) == ("production", WATCHER)
    assert document["trigger"] == {
        "reason": "pattern_fidelity_drop_below_85",
        "metric": "fidelity=0.62",
    }
    assert document["failed"] == {"version": "1.1.0", "digest": rolled_back.failed.digest}
    assert document["restored"] == {
        "version": "1.0.0",
        "digest": rolled_back.stable.digest,
        "stage": "production",
    }
    assert document["hold"]["stage"] == "production"
    assert document["hold"]["cleared_at"] is None

    # The newest 20 (max(window 10, rate window 20)) of its executions in production before
    # the rollback: not those in staging, not the benchmark runs, not the one after.
    window = document["window"]
    assert (window["size"], window["score_window"], window["rate_window"]) == (20, 10, 20)
    assert window["count"] == 20
    assert window["execution_ids"] == [f"bad-{i:02d}" for i in range(24, 4, -1)]
    assert window["mean_fidelity"] == pytest.approx(0.62)
    assert window["score_window_mean_fidelity"] == pytest.approx(0.62)
    assert window["mean_quality"] == pytest.approx(0.7)
    assert window["exceptions"] == 4  # bad-05, 10, 15, 20
    assert window["false_positives"] == 3  # bad-07, 14, 21

    # Failed (B) against restored (A), on their executions before the rollback.
    comparison = document["comparison"]
    assert comparison["a"]["version"] == "1.0.0"
    assert comparison["b"]["version"] == "1.1.0"
    assert comparison["count_a"] == 20
    assert comparison["count_b"] == 28  # 3 in staging and 25 in production
    assert "pattern_fidelity" in comparison["regressions"]

    # Even runs name check-blocklist; odd runs' breadcrumbs, scored against 1.1.0's
    # patterns.yaml, follow neither pattern.
    patterns = document["patterns_missed"]
    assert patterns["executions_naming_them"] == 20
    assert patterns["executions_with_a_miss"] == 20
    assert patterns["missed_total"] == 30
    assert patterns["most_missed"] == [
        {
            "id": "check-blocklist",
            "description": "Looks the sender up in the blocklist before scoring",
            "missed": 20,
            "of": 20,
        },
        {"id": "score", "description": "Scores the message", "missed": 10, "of": 20},
    ]

    exceptions = document["exceptions"]
    assert (exceptions["count"], exceptions["in_window"]) == (5, 4)
    assert [e["execution_id"] for e in exceptions["newest"]] == [
        "bad-20",
        "bad-15",
        "bad-10",
        "bad-05",
        "bad-00",
    ]
    assert exceptions["newest"][0]["subject"] == "user-20"
    assert exceptions["newest"][0]["text"] == "exception: KeyError: 'sender'"

    # Every step of seed 002's sequence, within its target.
    timeline = {entry["step"]: entry for entry in document["timeline"]}
    assert list(timeline) == ["switched", "alert_sent", "archived", "reindexed", "report_written"]
    for name, target in (
        ("switched", 60),
        ("alert_sent", 60),
        ("archived", 300),
        ("reindexed", 600),
        ("report_written", 3600),
    ):
        assert timeline[name]["status"] == "met", timeline[name]
        assert timeline[name]["target_seconds"] == target
        assert 0 <= timeline[name]["delay_seconds"] < 60
    assert timeline["report_written"]["at"] == document["written_at"]
    (step,) = [s for s in report_steps(project, event_id) if s.step == "report_written"]
    assert step.at.isoformat() == document["written_at"]
    assert step.detail == str(markdown_path)

    commands = [entry["command"] for entry in document["commands"]]
    assert commands == [
        f"skillstage history {NAME}",
        f"skillstage compare {NAME} 1.0.0 1.1.0",
        f'skillstage hold clear {NAME} --stage production --by YOU --reason "…"',
        f"skillstage promote {NAME} --to production",
        f"skillstage rollout start {NAME} --stage production",
    ]

    markdown = markdown_path.read_text(encoding="utf-8")
    assert markdown.startswith("# Failure analysis: auth-v2 1.1.0 rolled back in production\n")
    assert "`pattern_fidelity_drop_below_85`, metric `fidelity=0.62`" in markdown
    assert f"was taken out of production and 1.0.0 ({rolled_back.stable.digest[:12]})" in markdown
    assert "`bad-24`, `bad-23`" in markdown
    assert "| `check-blocklist` | 20 of 20 | Looks the sender up" in markdown
    assert "| pattern_fidelity | 0.620 | 0.950 |" in markdown
    assert "exception: KeyError: 'sender'" in markdown
    assert "| alert_sent |" in markdown and "| within 1 min | met |" in markdown
    for command in commands:
        assert f"`{command}`" in markdown


def test_writing_it_again_rewrites_the_same_files_and_keeps_one_step(
    rolled_back: RolledBack,
) -> None:
    project, event_id = rolled_back.project, rolled_back.event_id
    markdown_path, json_path = report_paths(project, NAME, event_id)
    with Store.open(project.database_url) as store:
        write_failure_report(project, store, event_id)
        first = (markdown_path.read_bytes(), json_path.read_bytes())
        # New executions of the restored version since do not change the report.
        record(project, rolled_back.stable, "after-0", pattern_fidelity=0.1)
        api.ingest_metrics(project)
        assert write_failure_report(project, store, event_id) == markdown_path
    assert (markdown_path.read_bytes(), json_path.read_bytes()) == first
    assert [s.step for s in report_steps(project, event_id)].count("report_written") == 1
    leftovers = [p.name for p in markdown_path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_latest_failure_writes_the_report_a_killed_watcher_left_unwritten(
    rolled_back: RolledBack,
) -> None:
    project, event_id = rolled_back.project, rolled_back.event_id
    markdown_path, json_path = report_paths(project, NAME, event_id)
    with Store.open(project.database_url) as store:
        assert not markdown_path.exists()
        document = latest_failure(project, store, NAME)
        assert document is not None
        assert document["event_id"] == event_id
        assert markdown_path.exists() and json_path.exists()
        assert failure_events_without_report(store) == []
        # Removed since: written again, with the time of the step already recorded.
        markdown_path.unlink()
        again = latest_failure(project, store, NAME)
        assert again == document
        assert markdown_path.exists()
        assert latest_failure(project, store, "billing") is None


def test_an_alert_not_delivered_yet_is_pending_within_its_minute(project: Project) -> None:
    """A notification target that does not answer: the alert waits in the outbox, and the report
    written at once says it is still within its minute."""
    with socket.socket() as probe:  # bound then released: nothing listens there
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    config = project.root / "skillstage.toml"
    text = config.read_text(encoding="utf-8")
    text = text.replace("urls = []", f'urls = ["json://127.0.0.1:{port}/hook"]', 1)
    text = text.replace("retries = 3", "retries = 0", 1)
    config.write_text(text, encoding="utf-8")
    rolled = roll_back(load_config_file(config))
    with Store.open(rolled.project.database_url) as store:
        write_failure_report(rolled.project, store, rolled.event_id)
    _, json_path = report_paths(rolled.project, NAME, rolled.event_id)
    timeline = {e["step"]: e for e in json.loads(json_path.read_text())["timeline"]}
    assert timeline["alert_sent"]["status"] == "pending"
    assert timeline["alert_sent"]["at"] is None
    assert "`skillstage outbox`" in timeline["alert_sent"]["detail"]


def test_only_automated_rollbacks_and_aborts_get_a_report(project: Project) -> None:
    promote(project, "1.0.0")
    promote(project, "1.1.0")
    result = api.rollback(project, NAME, reason="looked wrong", actor="alice")
    assert result.success and result.event_id is not None
    with Store.open(project.database_url) as store:
        assert failure_events_without_report(store) == []
        assert latest_failure(project, store, NAME) is None
        with pytest.raises(UsageError, match="is not an automated rollback or rollout abort"):
            write_failure_report(project, store, result.event_id)
    with pytest.raises(NoFailureReportError, match="no automated rollback or abort of auth-v2"):
        failure_report(project, NAME)


def test_the_timeline_says_which_targets_were_missed(project: Project) -> None:
    """A rollback two hours old whose archive note came late, whose re-index failed and whose
    alert never went out, reported only now (a watcher that was down)."""
    at = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    with Store.open(project.database_url) as store:
        with store.atomic() as tx:
            event_id = tx.append_event(
                "rollback",
                name=NAME,
                version="1.0.0",
                digest="a" * 64,
                from_stage="production",
                to_stage="production",
                actor=WATCHER,
                reason="exception_rate_above_5pct",
                trigger_metric="exception_rate=0.25",
                details={"failed_version": "1.1.0", "failed_digest": "b" * 64, "automated": True},
                at=at,
            )
            for step, after, ok in (("switched", 1, True), ("archived", 360, True)):
                store_controls.record_step(
                    tx, event_id, step, at=at + dt.timedelta(seconds=after), ok=ok
                )
            store_controls.record_step(
                tx, event_id, "reindexed", at=at + dt.timedelta(seconds=120), ok=False
            )
        assert failure_events_without_report(store) == [event_id]
        write_failure_report(project, store, event_id)
    document = json.loads(report_paths(project, NAME, event_id)[1].read_text(encoding="utf-8"))
    timeline = {entry["step"]: entry for entry in document["timeline"]}
    assert {name: entry["status"] for name, entry in timeline.items()} == {
        "switched": "met",
        "alert_sent": "missed",
        "archived": "missed",
        "reindexed": "failed",
        "report_written": "missed",
    }
    assert timeline["archived"]["delay_seconds"] == 360
    assert timeline["alert_sent"]["at"] is None
    assert "no notification target is configured" in timeline["alert_sent"]["detail"]
    assert timeline["report_written"]["delay_seconds"] > 3600
    # Versions the store never registered cannot be compared: the report says why instead.
    assert "is not a version, digest or stage" in document["comparison"]["error"]
    assert document["window"]["count"] == 0
    markdown = report_paths(project, NAME, event_id)[0].read_text(encoding="utf-8")
    assert "Not compared:" in markdown
    assert "| archived |" in markdown and "| 6 min 0 s | within 5 min | missed |" in markdown


# -- a rollout abort ---------------------------------------------------------------------------


def test_the_report_of_an_automated_rollout_abort(project: Project) -> None:
    stable = promote(project, "1.0.0")
    candidate = stage(project, "1.1.0")
    with Store.open(project.database_url) as store:
        started = engine.start(
            project, store, NAME, actor="tester", step_min_duration_s=0, step_min_executions=20
        )
        assert started.success, started.error
        assert started.rollout is not None
        for i in range(12):
            record(
                project,
                candidate,
                f"cand-{i:02d}",
                pattern_fidelity=0.7,
                tags={"stage": "production", "arm": "candidate"},
            )
        # Served in staging, where the same content also waits: not the rollout's.
        record(project, candidate, "staging-0", pattern_fidelity=0.7, tags={"stage": "staged"})
        api.ingest_metrics(project, store=store)
        aborted = steering.abort(
            project,
            store,
            NAME,
            actor=WATCHER,
            reason="pattern_fidelity_drop_below_90",
            trigger_metric="fidelity=0.70",
            hold=True,
        )
        assert aborted.event_id is not None
        event_id = aborted.event_id
        assert failure_events_without_report(store) == [event_id]
        write_failure_report(project, store, event_id)
    document = json.loads(report_paths(project, NAME, event_id)[1].read_text(encoding="utf-8"))
    assert (document["kind"], document["what"]) == ("rollout_abort", "automated rollout abort")
    assert document["stage"] == "production"
    assert document["trigger"] == {
        "reason": "pattern_fidelity_drop_below_90",
        "metric": "fidelity=0.70",
    }
    assert document["failed"] == {"version": "1.1.0", "digest": candidate.digest}
    assert document["restored"]["version"] == "1.0.0"
    assert document["restored"]["digest"] == stable.digest
    assert document["rollout"]["id"] == started.rollout.id
    assert document["rollout"]["share"] == 10
    assert document["window"]["execution_ids"] == [f"cand-{i:02d}" for i in range(11, -1, -1)]
    assert document["window"]["mean_fidelity"] == pytest.approx(0.7)
    timeline = {entry["step"]: entry for entry in document["timeline"]}
    assert list(timeline) == ["switched", "alert_sent", "archived", "report_written"]
    assert timeline["switched"]["status"] == "met"
    assert timeline["switched"]["delay_seconds"] == 0
    assert timeline["alert_sent"]["status"] == "missed"  # no notification target configured
    assert timeline["archived"]["status"] == "met"
    assert timeline["report_written"]["status"] == "met"
    commands = [entry["command"] for entry in document["commands"]]
    assert f"skillstage rollout retry {NAME}" in commands
    assert f'skillstage hold clear {NAME} --stage production --by YOU --reason "…"' in commands
    markdown = report_paths(project, NAME, event_id)[0].read_text(encoding="utf-8")
    assert markdown.startswith("# Failure analysis: auth-v2 1.1.0 rollout aborted in production")
    assert f"the rollout #{started.rollout.id} of 1.1.0" in markdown


# -- the command -------------------------------------------------------------------------------


def skillstage(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    env["NO_COLOR"] = "1"
    env["SKILLSTAGE_DATABASE_URL"] = project.database_url
    return subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=project.root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_report_failure_shows_the_latest_report(rolled_back: RolledBack) -> None:
    project, event_id = rolled_back.project, rolled_back.event_id
    shown = skillstage(project, "report", NAME, "--failure")
    assert shown.returncode == 0, shown.stderr
    markdown_path, json_path = report_paths(project, NAME, event_id)
    assert shown.stdout == markdown_path.read_text(encoding="utf-8")
    assert shown.stdout.startswith("# Failure analysis: auth-v2 1.1.0 rolled back in production")
    as_json = skillstage(project, "report", NAME, "--failure", "--json")
    assert as_json.returncode == 0, as_json.stderr
    document = json.loads(as_json.stdout)
    assert document == json.loads(json_path.read_text(encoding="utf-8"))
    assert document["event_id"] == event_id
    assert document["trigger"]["metric"] == "fidelity=0.62"


def test_report_failure_without_one_exits_1(project: Project) -> None:
    promote(project, "1.0.0")
    shown = skillstage(project, "report", NAME, "--failure")
    assert shown.returncode == 1
    assert shown.stdout == ""
    assert "error: no automated rollback or abort of auth-v2 on record" in shown.stderr
    assert f"`skillstage history {NAME}`" in shown.stderr
    as_json = skillstage(project, "report", NAME, "--failure", "--json")
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["error"]["code"] == "NO_FAILURE_REPORT"
    both = skillstage(project, "report", NAME, "--failure", "--run-tests")
    assert both.returncode == 2
    assert "--run-tests is for the promotion report" in both.stderr
