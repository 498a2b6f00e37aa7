"""The JSON API against a real uvicorn server on loopback: each read answers what the CLI's
`--json` prints, each write records what the CLI command records, executions posted over HTTP
are stored exactly once, and the routing feed waits for a change."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from skillstage import api
from skillstage.config import Project
from skillstage.server import create_app
from skillstage.store import Store
from tests.server.conftest import Live
from tests.skilltree import write_skill


def _skill(project: Project, name: str, version: str = "1.0.0") -> Path:
    return write_skill(
        project.stage_path("prototype", name).parent,
        name,
        extra={"version": version, "metadata": {"version": version}},
    )


def _cli(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    environment["SKILLSTAGE_DATABASE_URL"] = project.database_url
    return subprocess.run(
        [sys.executable, "-m", "skillstage", *args],
        cwd=project.root,
        env=environment,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _cli_json(project: Project, *args: str) -> Any:
    done = _cli(project, *args, "--json")
    assert done.returncode in (0, 1), done.stderr
    return json.loads(done.stdout)


def _without(value: Any, keys: set[str]) -> Any:
    """`value` without the keys that change from one call to the next (ages, timings)."""
    if isinstance(value, dict):
        return {k: _without(v, keys) for k, v in value.items() if k not in keys}
    if isinstance(value, list):
        return [_without(v, keys) for v in value]
    return value


VOLATILE = {"age_hours", "seconds", "generated_at", "now", "age_seconds", "checked_at"}


@pytest.fixture
def promoted(project: Project) -> Project:
    """`notes` 1.0.0 promoted to staged, `draft` 0.1.0 in prototype."""
    _skill(project, "notes")
    _skill(project, "draft", "0.1.0")
    (result,) = api.promote(project, ["notes"], actor="alice")
    assert result.success, result.to_dict()
    api.list_skills(project)  # registers `draft`: later listings register nothing
    return project


def test_reads_answer_what_the_cli_prints(promoted: Project, live: Live) -> None:
    pairs = {
        "/v1/skills": ("list",),
        "/v1/history": ("history",),
        "/v1/history?name=notes&limit=5": ("history", "notes", "--limit", "5"),
        "/v1/skills/notes/status": ("status", "notes"),
        "/v1/sla": ("sla", "check"),
        "/v1/stats": ("stats",),
        "/v1/rollouts": ("rollout", "status"),
        "/v1/outbox": ("outbox",),
        "/v1/metrics/lag": ("metrics", "lag"),
        "/v1/switches": ("hold", "list"),
    }
    with live(create_app(promoted, auth=False)) as url:
        for path, command in pairs.items():
            expected = _cli_json(promoted, *command)
            answer = httpx.get(url + path, timeout=30)
            assert answer.status_code == 200, (path, answer.text)
            got = answer.json()
            if path == "/v1/stats":  # (when the figures were computed)
                got.pop("at"), expected.pop("at")
            assert _without(got, VOLATILE) == _without(expected, VOLATILE), path


def test_one_skill_holds_its_stages_and_history(promoted: Project, live: Live) -> None:
    with live(create_app(promoted, auth=False)) as url:
        skill = httpx.get(f"{url}/v1/skills/notes").json()
        unknown = httpx.get(f"{url}/v1/skills/nothing-here")
    assert [entry["stage"] for entry in skill["stages"]] == ["staged"]
    assert [event["kind"] for event in skill["history"]][:1] == ["promote"]
    assert unknown.status_code == 400
    assert "no skill named 'nothing-here'" in unknown.json()["error"]["message"]
    assert unknown.json()["error"]["hint"]


def test_metrics_compare_and_the_registry(promoted: Project, live: Live) -> None:
    _skill(promoted, "notes", "1.1.0")
    (second,) = api.promote(promoted, ["notes"], actor="alice", overwrite=True)
    assert second.success
    with live(create_app(promoted, auth=False)) as url:
        posted = httpx.post(
            f"{url}/v1/executions",
            json=[_record(f"m{n}", pattern_fidelity=0.5 + n / 100) for n in range(20)],
        )
        assert posted.json()["inserted"] == 20
        summary = httpx.get(f"{url}/v1/skills/notes/metrics", params={"version": "1.0.0"}).json()
        compared = httpx.get(
            f"{url}/v1/skills/notes/compare", params={"a": "1.0.0", "b": "1.1.0"}
        ).json()
        registry = httpx.get(f"{url}/v1/registry").json()
    assert summary == api.skill_metrics(promoted, "notes", version="1.0.0").to_dict()
    assert summary["count"] == 20
    assert summary["pattern_fidelity"] == pytest.approx(sum(0.5 + n / 100 for n in range(20)) / 20)
    assert compared == _cli_json(promoted, "compare", "notes", "1.0.0", "1.1.0")
    assert registry == json.loads(promoted.registry_file.read_text())


def _events(project: Project) -> list[dict[str, Any]]:
    """The store's events without what differs between two runs of the same change."""
    drop = {"id", "at", "digest", "path", "force_event_id", "promotion_event_id", "details"}
    found = [
        _without({k: v for k, v in event.items() if k not in drop}, {"at"})
        for event in api.history_entries(project, limit=100)
    ]
    # (paths name the project's directory, which differs between the two)
    return list(json.loads(json.dumps(found).replace(str(project.root), "<root>")))


@pytest.fixture
def second_url(store_url: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[str]:
    """A second, empty store of the same kind as `store_url` (dropped afterwards)."""
    if store_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'second' / 'state.db'}"
        return
    from sqlalchemy import text

    admin = request.getfixturevalue("postgres_admin")
    schema = f"test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield admin.url.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(
            hide_password=False
        )
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))


def _live_with_history(project: Project) -> None:
    """`notes` 1.0.0 then 1.1.0 promoted into staged (so a rollback has a version to restore)."""
    _skill(project, "notes")
    (first,) = api.promote(project, ["notes"], actor="alice")
    _skill(project, "notes", "1.1.0")
    (second,) = api.promote(project, ["notes"], actor="alice", overwrite=True)
    assert first.success and second.success, second.to_dict()


def _rollout_ready(project: Project) -> None:
    """`notes` 1.0.0 live in production, 1.1.0 waiting in staging."""
    staging = project.stage_path("staged", "notes").parent
    write_skill(staging, "notes")
    (live,) = api.promote(project, ["notes"], to="production", actor="alice")
    assert live.success, live.error
    write_skill(staging, "notes", extra={"version": "1.1.0"})


def _rollout_open(project: Project) -> None:
    _rollout_ready(project)
    api.rollout_start(project, "notes", step_min_duration="0s", actor="alice")


# (CLI arguments, HTTP path, HTTP body): the same change made on each face.
WRITES = {
    "rollout start": (
        ("rollout", "start", "notes", "--step-min-duration", "0s"),
        "/v1/rollouts",
        {"name": "notes", "step_min_duration": "0s"},
    ),
    "rollout abort": (
        ("rollout", "abort", "notes", "--reason", "errors up"),
        "/v1/rollouts/notes/abort",
        {"reason": "errors up"},
    ),
    "promote": (
        ("promote", "notes", "--yes", "--reason", "ready"),
        "/v1/skills/notes/promote",
        {"reason": "ready"},
    ),
    "rollback": (
        ("rollback", "notes", "--stage", "staged", "--yes", "--reason", "errors up"),
        "/v1/skills/notes/rollback",
        {"reason": "errors up", "stage": "staged"},
    ),
    "hold": (
        ("hold", "set", "notes", "--stage", "staged", "--reason", "investigating"),
        "/v1/skills/notes/hold",
        {"reason": "investigating", "stage": "staged"},
    ),
    "disable": (
        ("disable", "notes", "--reason", "leaks data"),
        "/v1/skills/notes/disabled",
        {"reason": "leaks data"},
    ),
}


RECORDED = {
    "promote": "promote",
    "rollback": "rollback",
    "hold": "hold_set",
    "disable": "disable",
    "rollout start": "rollout_start",
    "rollout abort": "rollout_abort",
}


@pytest.mark.parametrize("change", list(WRITES))
def test_a_write_over_http_records_what_the_cli_records(
    change: str,
    tmp_path: Path,
    store_url: str,
    second_url: str,
    monkeypatch: pytest.MonkeyPatch,
    live: Live,
) -> None:
    from skillstage.config import load_config_file

    projects = []
    for side, url in (("cli", store_url), ("http", second_url)):
        root = tmp_path / side
        root.mkdir()
        monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", url)
        api.init(root)
        project = load_config_file(root / "skillstage.toml")
        if change == "promote":
            _skill(project, "notes")
        elif change.startswith("rollout"):
            (_rollout_ready if change == "rollout start" else _rollout_open)(project)
        else:
            _live_with_history(project)
        projects.append((project, url))
    (cli_project, cli_url), (http_project, http_url) = projects
    arguments, path, body = WRITES[change]

    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", cli_url)
    done = _cli(cli_project, *arguments, "--by", "ops-bot")
    assert done.returncode == 0, done.stderr
    cli_events = _events(cli_project)

    monkeypatch.setenv("SKILLSTAGE_DATABASE_URL", http_url)
    with live(create_app(http_project, auth=False, actor="ops-bot")) as url:
        answer = httpx.post(url + path, json=body, timeout=60)
    assert answer.status_code == 200, answer.text
    http_events = _events(http_project)
    assert http_events == cli_events
    assert http_events[0]["actor"] == "ops-bot"
    assert http_events[0]["kind"] == RECORDED[change]


def test_refused_writes_answer_in_the_error_shape(promoted: Project, live: Live) -> None:
    with live(create_app(promoted, auth=False)) as url:
        no_reason = httpx.post(f"{url}/v1/skills/notes/rollback", json={})
        unknown_field = httpx.post(f"{url}/v1/skills/notes/promote", json={"too": "staged"})
        bad_action = httpx.post(f"{url}/v1/rollouts/notes/explode", json={})
    assert no_reason.status_code == 422
    assert no_reason.json()["error"]["code"] == "INVALID_REQUEST"
    assert "reason" in no_reason.json()["error"]["message"]
    assert unknown_field.status_code == 422
    assert bad_action.status_code == 400
    assert "advance" in bad_action.json()["error"]["hint"]


def _record(execution_id: str, **fields: Any) -> dict[str, Any]:
    return {
        "execution_id": execution_id,
        "timestamp": dt.datetime.now(dt.UTC).isoformat(),
        "skill": "notes",
        "version": "1.0.0",
        "pattern_fidelity": 0.9,
        "outcome_quality": 0.8,
        "execution_time_ms": 120.0,
        **fields,
    }


def _stored(project: Project) -> int:
    with Store.open(project.database_url) as store, store.reading() as tx:
        return int(tx.connection.execute("SELECT count(*) FROM execution").fetchone()[0])


def test_posted_executions_are_stored_exactly_once(promoted: Project, live: Live) -> None:
    batch = [_record(f"run-{n}") for n in range(50)]
    ndjson = "\n".join(json.dumps(_record(f"line-{n}")) for n in range(10)) + "\n"
    with live(create_app(promoted, auth=False)) as url:
        first = httpx.post(f"{url}/v1/executions", json=batch).json()
        again = httpx.post(f"{url}/v1/executions", json=batch).json()  # a client's retry
        lines = httpx.post(f"{url}/v1/executions", content=ndjson).json()
        one = httpx.post(f"{url}/v1/executions", json=_record("single")).json()
        mixed = httpx.post(
            f"{url}/v1/executions",
            json=[_record("good"), _record("future", timestamp="2999-01-01T00:00:00Z"), {"x": 1}],
        ).json()
        empty = httpx.post(f"{url}/v1/executions", content=b"  ")
    assert (first["inserted"], first["duplicates"]) == (50, 0)
    assert (again["inserted"], again["duplicates"]) == (0, 50)
    assert lines["inserted"] == 10 and one["inserted"] == 1
    assert (mixed["inserted"], mixed["quarantined"]) == (1, 2)
    assert [p["record"] for p in mixed["problems"]] == [2, 3]
    assert empty.status_code == 400 and empty.json()["error"]["code"] == "USAGE"
    assert _stored(promoted) == 50 + 10 + 1 + 1
    with Store.open(promoted.database_url) as store:
        from skillstage.store.executions import quarantined

        kept = quarantined(store)
    assert {line.path for line in kept} == {"http:local@127.0.0.1"} or all(
        line.path.startswith("http:") for line in kept
    )
    assert len(kept) == 2


def test_resolve_and_the_routing_feed(promoted: Project, live: Live) -> None:
    with live(create_app(promoted, auth=False)) as url:
        served = httpx.get(f"{url}/v1/resolve/notes", params={"subject": "u1", "stage": "staged"})
        assert served.status_code == 200, served.text
        assert served.json()["version"] == "1.0.0"
        assert served.json()["arm"] == "stable"
        missing = httpx.get(f"{url}/v1/resolve/nothing", params={"stage": "staged"})
        assert missing.status_code == 404

        now = httpx.get(f"{url}/v1/routing").json()
        assert now["changed"] is True and "notes" in now["skills"]
        quiet = httpx.get(
            f"{url}/v1/routing", params={"since": now["generation"], "wait": 0.3}, timeout=10
        ).json()
        assert quiet == {"changed": False, "generation": now["generation"]}
        (result,) = api.promote(promoted, ["draft"], actor="alice")
        assert result.success
        moved = httpx.get(
            f"{url}/v1/routing", params={"since": now["generation"], "wait": 5}, timeout=10
        ).json()
    assert moved["changed"] is True and moved["generation"] > now["generation"]
    assert "draft" in moved["skills"]


def test_serve_refuses_no_auth_off_loopback(tmp_path: Path) -> None:
    api.init(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "skillstage", "serve", "--host", "0.0.0.0", "--insecure-no-auth"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "other machines can reach" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_sign_off_over_http_with_the_checklist_as_text_or_as_answers(
    project: Project, live: Live
) -> None:
    import yaml

    from tests.lifecycle.test_readiness import NAME, configure, spam_filter

    signing = configure(project, approvers=("bob",))
    spam_filter(signing)  # written by carol
    with live(create_app(signing, auth=False, actor="bob")) as url:
        form = httpx.get(
            f"{url}/v1/skills/{NAME}/signoff", params={"to_stage": "staged"}, timeout=30
        ).json()["template"]
        filled = form.replace(": NO  #", ": YES  #")
        ticket = yaml.safe_load(filled)["approval_ticket"]
        as_text = httpx.post(
            f"{url}/v1/skills/{NAME}/approve",
            json={
                "to_stage": "staged",
                "ticket": ticket,
                "decision": "approved",
                "checklist": filled,
            },
            timeout=30,
        )
        items = yaml.safe_load(filled)["human_review"]
        one_no = {**dict.fromkeys(items, "YES"), next(iter(items)): "NO"}
        refused = httpx.post(
            f"{url}/v1/skills/{NAME}/approve",
            json={
                "to_stage": "staged",
                "ticket": "T-2",
                "decision": "approved",
                "checklist": one_no,
            },
            timeout=30,
        )
        as_answers = httpx.post(
            f"{url}/v1/skills/{NAME}/approve",
            json={
                "to_stage": "staged",
                "ticket": "T-3",
                "decision": "approved",
                "checklist": dict.fromkeys(items, "YES"),
            },
            timeout=30,
        )
    assert as_text.status_code == 200, as_text.text
    assert (as_text.json()["approver"], as_text.json()["approval_decision"]) == ("bob", "APPROVED")
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"]
    assert as_answers.status_code == 200, as_answers.text
    kinds = [e["kind"] for e in api.history_entries(signing, NAME)]
    assert kinds.count("approval") >= 2
