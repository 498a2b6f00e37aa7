"""Seed 002's commands as a user runs them, in real subprocesses on a real project: eval,
status, signoff template, approve, promote with a ticket, compare, demote-check, history."""

from __future__ import annotations

import datetime as dt
import functools
import json
import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import yaml

from skillstage import api
from skillstage.config import Project, load_config_file
from tests.cli.conftest import Run
from tests.lifecycle.test_readiness import (
    CASES,
    NAME,
    PRODUCTION,
    PRODUCTION_REVIEW,
    PROTOTYPE,
    REVIEW,
    STAGING,
    configure,
    spam_filter,
)


def ok(result: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def seed002_project(run_cli: Run, root: Path) -> Project:
    """`skillstage init`, then the demo's seed 002 configuration (gates + metrics, approval;
    approvers alice and carol)."""
    ok(run_cli("init"))
    return configure(load_config_file(root / "skillstage.toml"))


def gates(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {g["gate"]: g for g in status["gates"]}


def status(run_cli: Run, *args: str) -> tuple[int, dict[str, Any]]:
    result = run_cli("status", NAME, "--json", *args)
    assert result.returncode in (0, 1), result.stderr
    return result.returncode, json.loads(result.stdout)


def yes(template: str) -> str:
    return template.replace(": NO  #", ": YES  #")


def test_the_seed_002_flow_from_prototype_to_production(run_cli: Run, tmp_path: Path) -> None:
    project = seed002_project(run_cli, tmp_path)
    spam_filter(project)  # by carol
    ok(run_cli("list", "--stage", "prototype"))  # its prototype stay starts now

    evaluated = json.loads(ok(run_cli("eval", NAME, "--json")).stdout)
    assert evaluated["summary"]["pass_rate"] == 1.0
    assert evaluated["summary"]["cases_total"] == len(CASES)
    assert Path(evaluated["results_path"]).is_file()

    code, evals = status(run_cli)
    assert (code, evals["ready"], evals["from_stage"], evals["to_stage"]) == (
        1,
        False,
        "prototype",
        "staged",
    )
    assert {name: g["status"] for name, g in gates(evals).items()} == {
        "structure": "pass",
        "schema": "pass",
        "spec": "pass",
        "tests": "pass",
        "conflicts": "pass",
        "dependencies": "pass",
        "security": "pass",
        "metrics": "pass",
        "approval": "fail",
    }
    assert [(c["name"], c["actual"], c["passed"]) for c in gates(evals)["metrics"]["criteria"]] == [
        ("benchmark cases executed", "10/10", True),
        ("pattern fidelity", 1.0, True),
        ("outcome quality", 1.0, True),
        ("critical false negatives", 0, True),
        ("false positive rate", 0.0, True),
    ]
    text = run_cli("status", NAME)
    assert text.returncode == 1
    assert "       ✓ benchmark cases executed: 10/10 (required all)" in text.stdout
    assert "  FAIL approval: no sign-off of spam-filter 1.0.0" in text.stdout
    assert text.stdout.endswith("NOT READY for staged\n")

    template = ok(
        run_cli(
            "signoff", "template", NAME, "--to", "staged", "--by", "alice", "--ticket", "APPR_1"
        )
    ).stdout
    form = yaml.safe_load(template)
    as_json = run_cli(
        "signoff", "template", NAME, "--to", "staged", "--by", "alice", "--ticket", "APPR_1",
        "--json",
    )  # fmt: skip
    assert {**json.loads(ok(as_json).stdout), "date": None, "timestamp": None} == {
        **form, "date": None, "timestamp": None
    }  # fmt: skip
    assert (form["approval_ticket"], form["approver"], form["promotion"]) == (
        "APPR_1",
        "alice",
        "prototype → staged",
    )
    assert form["automated_checks"] == {
        "pattern_fidelity": 1.0,
        "outcome_quality": 1.0,
        "execution_count": 10,  # the benchmark cases, recorded as executions
        "test_pass_rate": 1.0,
        "false_positive_rate": 0.0,
        "false_negative_count": 0,
    }
    assert list(form["human_review"]) == REVIEW
    assert set(form["human_review"].values()) == {False}  # every item starts as NO
    assert form["approval_decision"] == "APPROVED"
    checklist = tmp_path / "signoff.yaml"
    checklist.write_text(yes(template))

    def approve(by: str, ticket: str, *extra: str) -> subprocess.CompletedProcess[str]:
        return run_cli("approve", NAME, "--to", "staged", "--by", by, "--ticket", ticket, *extra)

    author = approve("carol", "APPR_1", "--decision", "approved", "--checklist", str(checklist))
    assert author.returncode == 1
    assert "carol is the skill's author and cannot approve it (four-eyes rule)" in author.stderr

    rejected = ok(approve("alice", "APPR_1", "--decision", "rejected", "--notes", "more cases"))
    assert rejected.stdout.startswith("REJECTED: spam-filter 1.0.0 (")
    # The form names its ticket: a form filled in for APPR_1 is not APPR_2's.
    other = approve("alice", "APPR_2", "--decision", "approved", "--checklist", str(checklist))
    assert other.returncode == 1
    assert "approval_ticket is 'APPR_1' in the form, 'APPR_2' here" in other.stderr
    checklist.write_text(yes(template).replace("APPR_1", "APPR_2"))
    approved = json.loads(
        ok(
            approve(
                "alice", "APPR_2", "--decision", "approved", "--checklist", str(checklist), "--json"
            )
        ).stdout
    )
    assert (approved["approval_decision"], approved["approval_ticket"]) == ("APPROVED", "APPR_2")
    assert approved["checklist"] == dict.fromkeys(REVIEW, "YES")
    code, ready = status(run_cli)
    assert (code, ready["ready"]) == (0, True)
    assert gates(ready)["approval"]["message"].startswith("approved by alice (APPR_2, ")

    wrong = run_cli("promote", NAME, "--yes", "--approver", "alice", "--approval-ticket", "APPR_1")
    assert wrong.returncode == 1
    assert "ticket APPR_1 is not the recorded sign-off (APPR_2)" in wrong.stdout + wrong.stderr
    assert (tmp_path / PROTOTYPE / NAME).is_dir()
    ok(run_cli("promote", NAME, "--yes", "--approver", "alice", "--approval-ticket", "APPR_2"))
    assert (tmp_path / STAGING / NAME).is_dir() and not (tmp_path / PROTOTYPE / NAME).exists()

    # Live traffic in staging, as the agent runtime records it (ingested on demand by compare).
    start = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=1)
    for i in range(120):
        api.record_execution(
            project,
            NAME,
            version="1.0.0",
            timestamp=start + dt.timedelta(seconds=i),
            subject=f"user-{i % 17}",
            pattern_fidelity=0.67 if i % 10 == 3 else 1.0,
            outcome_quality=0.0 if i % 20 == 7 else 1.0,
            execution_time_ms=0.5 + (i % 5) * 0.1,  # faster than a benchmark case
        )

    compared = json.loads(ok(run_cli("compare", NAME, "prototype", "staged", "--json")).stdout)
    assert (compared["count_a"], compared["count_b"]) == (10, 120)
    assert compared["a"]["label"] == "prototype (1.0.0)" and compared["b"]["until"] is None
    assert compared["a"]["until"] == compared["b"]["since"]
    assert compared["regressions"] == [] and compared["insufficient"] is False
    fidelity = {m["metric"]: m for m in compared["metrics"]}["pattern_fidelity"]
    assert (fidelity["a"], fidelity["b"], fidelity["test"]) == (1.0, 0.967, "mann-whitney-u")

    code, production = status(run_cli)
    assert (code, production["to_stage"]) == (1, "production")
    metrics = gates(production)["metrics"]
    assert metrics["status"] == "pass", metrics["message"]
    live = {c["name"]: c for c in metrics["criteria"]}
    assert live["no regression against the prototype baseline"]["actual"] == "none worse"
    assert gates(production)["approval"]["message"].endswith("for staged → production")

    template = ok(
        run_cli(
            "signoff", "template", NAME, "--to", "production", "--by", "alice", "--ticket", "APPR_3"
        )
    ).stdout
    form = yaml.safe_load(template)
    assert form["promotion"] == "staged → production"
    assert list(form["human_review"]) == REVIEW + PRODUCTION_REVIEW
    checks = form["automated_checks"]
    assert checks["execution_count"] == live["executions"]["actual"]
    assert checks["pattern_fidelity"] == round(live["pattern fidelity"]["actual"], 2)
    assert checks["test_pass_rate"] == 1.0  # from the benchmark run of this content

    partial = tmp_path / "signoff-production-partial.yaml"  # only the staged items answered
    partial.write_text(
        functools.reduce(
            lambda t, i: t.replace(f"  {i}: NO  #", f"  {i}: YES  #"), REVIEW, template
        )
    )
    short = run_cli(
        "approve", NAME, "--to", "production", "--by", "alice", "--ticket", "APPR_3",
        "--decision", "approved", "--checklist", str(partial),
    )  # fmt: skip
    assert short.returncode == 1
    assert "not YES: " + ", ".join(PRODUCTION_REVIEW) in short.stderr
    full = tmp_path / "signoff-production.yaml"
    full.write_text(yes(template))
    ok(
        run_cli(
            "approve", NAME, "--to", "production", "--by", "alice", "--ticket", "APPR_3",
            "--decision", "approved", "--checklist", str(full),
        )
    )  # fmt: skip
    ok(run_cli("promote", NAME, "--yes", "--approver", "alice", "--approval-ticket", "APPR_3"))
    assert (tmp_path / PRODUCTION / NAME / "SKILL.md").is_file()

    events = json.loads(ok(run_cli("history", NAME, "--json")).stdout)
    signoffs = [
        (e["approval_ticket"], e["approver"], e["from_stage"], e["to_stage"], e["success"])
        for e in events
        if e["kind"] == "approval"
    ]
    assert signoffs == [
        ("APPR_3", "alice", "staged", "production", True),
        ("APPR_2", "alice", "prototype", "staged", True),
        ("APPR_1", "alice", "prototype", "staged", False),
    ]
    promotions = [
        (e["approval_ticket"], e["to_stage"], e["success"])
        for e in events
        if e["kind"] == "promote"
    ]
    assert promotions == [
        ("APPR_3", "production", True),
        ("APPR_2", "staged", True),
        ("APPR_1", "staged", False),  # refused: the ticket was not the sign-off's
    ]
    lines = ok(run_cli("history", NAME)).stdout.splitlines()
    assert any(
        line.endswith("approval  spam-filter 1.0.0  prototype → staged  by alice") for line in lines
    )
    assert any(
        line.endswith("1.0.0  (not approved)  prototype → staged  by alice") for line in lines
    )
    assert "    reason: REJECTED: more cases" in lines


def test_eval_and_status_report_a_missed_critical_case(run_cli: Run, tmp_path: Path) -> None:
    project = seed002_project(run_cli, tmp_path)
    spam_filter(project, cases=[*CASES[:9], ("cheap pills, cheap pills", "spam", True)])
    evaluated = run_cli("eval", NAME)
    assert evaluated.returncode == 1
    assert "  FAIL case-10: expected spam, got allow" in evaluated.stdout
    assert "critical false negatives 1 (10/10 cases executed)" in evaluated.stdout
    code, result = status(run_cli)
    assert code == 1
    metrics = gates(result)["metrics"]
    assert metrics["message"] == "1 of 5 criteria not met: critical false negatives 1"
    assert [c["name"] for c in metrics["criteria"] if not c["passed"]] == [
        "critical false negatives"
    ]


def test_eval_shows_what_a_skill_printed_with_its_control_characters_escaped(
    run_cli: Run, tmp_path: Path
) -> None:
    project = seed002_project(run_cli, tmp_path)
    path = spam_filter(project, cases=CASES[:1])
    (path / "execute.sh").write_text(
        '#!/bin/bash\ncat >/dev/null\nprintf \'{"decision": "spam\\\\r  ok  \\\\u001b[2K"}\'\n'
    )
    evaluated = run_cli("eval", NAME)
    assert "got spam\\x0d  ok  \\x1b[2K" in evaluated.stdout, evaluated.stdout
    assert "\r" not in evaluated.stdout and "\x1b" not in evaluated.stdout


def test_demote_check_lists_and_demotes_a_stale_staged_version(
    run_cli: Run, tmp_path: Path
) -> None:
    project = seed002_project(run_cli, tmp_path)
    spam_filter(project, STAGING)
    ok(run_cli("list", "--stage", "staged"))
    fresh = json.loads(ok(run_cli("demote-check", "--json")).stdout)
    assert fresh == {"checked": 1, "demotions": []}

    # It entered staging eight days ago, and nobody has run it since.
    database = tmp_path / ".skillstage" / "state.db"
    eight_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=8)
    with sqlite3.connect(database) as db:
        changed = db.execute(
            "UPDATE stage_assignment SET entered_at = ? WHERE stage = 'staged' AND left_at IS NULL",
            (eight_days_ago.replace(tzinfo=None).strftime("%Y-%m-%d %H:%M:%S.%f"),),
        ).rowcount
    assert changed == 1

    found = run_cli("demote-check", "--json")
    assert found.returncode == 1  # something to do
    (demotion,) = json.loads(found.stdout)["demotions"]
    rule = "unable to reach 100 executions within 7 days (0/100 after 8.0 days)"
    assert {k: demotion[k] for k in ("name", "version", "stage", "to_stage", "applied")} == {
        "name": NAME,
        "version": "1.0.0",
        "stage": "staged",
        "to_stage": "prototype",
        "applied": False,
    }
    assert demotion["rules"] == [rule]
    listed = run_cli("demote-check")
    assert listed.returncode == 1
    assert listed.stdout.splitlines() == [
        "spam-filter 1.0.0 in staged: would go back to prototype (--apply)",
        f"    {rule}",
    ]
    assert (tmp_path / STAGING / NAME).is_dir()  # listing moves nothing

    applied = json.loads(ok(run_cli("demote-check", "--apply", "--by", "cron", "--json")).stdout)
    assert [(d["applied"], d["error"]) for d in applied["demotions"]] == [(True, None)]
    assert not (tmp_path / STAGING / NAME).exists()
    assert (tmp_path / PROTOTYPE / NAME / "execute.sh").is_file()
    latest = ok(run_cli("history", NAME)).stdout.splitlines()
    assert latest[0].endswith("rollback  spam-filter 1.0.0  staged → prototype  by cron")
    assert latest[1] == f"    reason: demotion: {rule}"
    with sqlite3.connect(database) as db:
        open_stays = db.execute(
            "SELECT stage FROM stage_assignment WHERE left_at IS NULL"
        ).fetchall()
    assert open_stays == [("prototype",)]
    assert json.loads(ok(run_cli("demote-check", "--json")).stdout) == {
        "checked": 0,
        "demotions": [],
    }


def test_out_of_bounds_records_and_empty_breadcrumb_logs_are_refused(
    run_cli: Run, tmp_path: Path
) -> None:
    project = seed002_project(run_cli, tmp_path)
    spam_filter(project)
    ok(run_cli("list"))
    digest = api.readiness(project, NAME).digest

    for option, value, why in [
        ("--time-ms", "inf", "Expected `float` <= 31622400000.0"),
        ("--time-ms", "1e308", "Expected `float` <= 31622400000.0"),
        ("--timestamp", "2099-01-01T00:00:00+0000", "is in the future (after "),
        ("--timestamp", "0001-01-01T00:00:00+0530", "is before 1970: check the writer's clock"),
    ]:
        refused = run_cli("metrics", "record", "--skill", NAME, option, value, "--json")
        assert refused.returncode == 2, refused.stderr
        assert why in json.loads(refused.stdout)["error"]["message"]
        assert why in refused.stderr and "Traceback" not in refused.stderr
    assert not (project.metrics_inbox / f"{NAME}_executions.jsonl").exists()

    # Lines other writers left: a count SQLite cannot hold, a record from 2099, then good ones
    # (a digest given is what ran, even if the version says otherwise). Those two are stored.
    line = '{"execution_id": "%s", "timestamp": "%s", "version": "1.0.0"%s}\n'
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    project.metrics_inbox.mkdir(parents=True, exist_ok=True)
    (project.metrics_inbox / f"{NAME}_executions.jsonl").write_text(
        line % ("huge", now, ', "patterns_followed": 100000000000000000000000')
        + line % ("future", "2099-01-01T00:00:00Z", "")
        + line % ("year-one", "0001-01-01T00:00:00+05:30", "")
        + line % ("year-one-utc", "0001-01-01T00:00:00Z", "")
        + line % ("other-content", now, f', "digest": "{"f" * 64}"')
        + line % ("good", now, f', "digest": "{digest}"')
    )
    counts = json.loads(ok(run_cli("metrics", "ingest", "--json")).stdout)
    assert (counts["read"], counts["inserted"], counts["quarantined"]) == (6, 2, 4)
    reasons = [
        q["reason"] for q in json.loads(ok(run_cli("metrics", "quarantine", "--json")).stdout)
    ]
    assert len(reasons) == 4
    assert "Expected `int` <= 1000000" in reasons[3]
    assert "timestamp 2099-01-01T00:00:00+00:00 is in the future (after " in reasons[2]
    assert reasons[:2] == [
        "timestamp 0001-01-01T00:00:00+00:00 is before 1970: check the writer's clock",
        "timestamp 0001-01-01T00:00:00+05:30 is before 1970: check the writer's clock",
    ]

    # A breadcrumb log is scored and recorded; an empty one records nothing.
    log = tmp_path / "run.jsonl"
    log.write_text('{"event": "checked_blocklist"}\n{"event": "decided"}\n')
    scored = json.loads(ok(run_cli("metrics", "score", str(log), "--skill", NAME, "--json")).stdout)
    assert (scored["followed"], scored["missed"]) == (["blocklist", "decision"], ["links"])
    log.write_text("\n")
    empty = run_cli("metrics", "score", str(log), "--skill", NAME)
    assert empty.returncode == 2 and "the breadcrumb log holds no events" in empty.stderr
    lines = (project.metrics_inbox / f"{NAME}_executions.jsonl").read_text().splitlines()
    assert len(lines) == 7  # the six written above and the scored run


def test_messages_say_what_to_give(run_cli: Run, tmp_path: Path) -> None:
    project = seed002_project(run_cli, tmp_path)
    spam_filter(project, PRODUCTION)
    twice = run_cli("metrics", "record", "--skill", NAME, "--tag", "a=b", "--tag", "a=c")
    assert twice.returncode == 2 and "--tag a is given twice ('b' and 'c')" in twice.stderr
    ok(run_cli("list"))
    compared = run_cli("compare", NAME, "52", "1.0.0")
    assert compared.returncode == 2
    assert "or a digest (its first 7 or more hex digits)" in compared.stderr
    last = run_cli("status", NAME)
    assert last.returncode == 2
    assert "in a stage it can be promoted from: it is only in production" in last.stderr
    digest = run_cli("metrics", "record", "--skill", NAME, "--digest", "abc")
    assert digest.returncode == 2
    assert "digest must be the 64 lowercase hex digits of a sha256 content digest" in digest.stderr
    unknown = run_cli("compare", "nosuch", "1.0.0", "1.0.1")
    assert unknown.returncode == 2 and "`skillstage list` registers the skills" in unknown.stderr
    (tmp_path / "bad.yaml").write_text("human_review:\n  production_readiness: [\n")
    broken = run_cli(
        "approve", NAME, "--to", "production", "--ticket", "APPROVAL_20261202_001",
        "--decision", "approved", "--checklist", "bad.yaml",
    )  # fmt: skip
    assert broken.returncode == 2
    assert "bad.yaml:3: the checklist is not valid YAML: did not find expected node content" in (
        broken.stderr
    )
    assert "<unicode string>" not in broken.stderr
    (project.root / PRODUCTION / NAME / "patterns.yaml").unlink()
    log = tmp_path / "run.jsonl"
    log.write_text('{"event": "decided"}\n')
    unscored = run_cli("metrics", "score", str(log), "--skill", NAME)
    assert unscored.returncode == 2 and f"{NAME} has no patterns.yaml" in unscored.stderr
