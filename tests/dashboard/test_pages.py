"""The dashboard's pages rendered as functions, and `skillstage report NAME --html`, on real
stores: every section shows what the CLI's commands say, the charts carry the store's figures,
a read-only page offers no action, and the static report loads nothing from elsewhere."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from markupsafe import escape

from skillstage import api
from skillstage.dashboard import ActionContext, render_overview, render_skill
from skillstage.errors import SkillstageError
from skillstage.lifecycle import stats
from skillstage.runtime import Loader
from skillstage.tokens import APPROVE, OPERATE
from skillstage.watch.report import failure_report
from tests.dashboard.charts_read import read_charts
from tests.dashboard.conftest import NAME, WAITING, Team

EVERYTHING = ActionContext("token-123", frozenset({OPERATE, APPROVE}))


def _row(html: str, attribute: str, value: str) -> str:
    """The <tr> whose `attribute` is `value`."""
    match = re.search(rf'<tr[^>]*{attribute}="{re.escape(value)}"[^>]*>.*?</tr>', html, re.S)
    assert match, f"no row with {attribute}={value}"
    return match.group(0)


def test_overview_shows_stages_sla_breaches_metrics_rollouts_and_holds(team: Team) -> None:
    html = render_overview(team.project)
    waiting = _row(html, "data-skill", WAITING)
    assert 'class="breach"' in waiting and "SLA breach" in waiting and "held" in waiting
    live = re.search(r'<tr class="" data-skill="auth-v2" data-version="1.0.0".*?</tr>', html, re.S)
    assert live and "rollout 10%" in live.group(0)
    # The key metrics table says what `skillstage stats` says, with targets and thresholds.
    for metric in stats.collect(team.project).metrics:
        row = _row(html, "data-metric", metric.objective.key)
        assert f'data-status="{metric.status}"' in row
        assert f">{metric.objective.target}<" in row.replace("&lt;", "<").replace("&gt;", ">")
        assert f">{metric.objective.alert}<" in row.replace("&lt;", "<").replace("&gt;", ">")
    assert 'data-status="warn"' in _row(html, "data-metric", "sla_breach_count")
    (status,) = api.rollout_status(team.project)
    rollout = _row(html, "data-rollout", str(status.rollout.id))
    assert 'data-weight="10"' in rollout and f'data-verdict="{status.verdict.outcome}"' in rollout
    assert "waiting for review" in _row(html, "data-control", "hold")
    assert 'data-event-kind="rollout_start"' in html
    assert "<form" not in html  # nothing to act on from the overview


def test_skill_page_charts_carry_the_store_figures(team: Team) -> None:
    html = render_skill(team.project, NAME, actions=EVERYTHING)
    charts = read_charts(html)
    assert set(charts) >= {"version-fidelity", "version-quality", "version-exceptions"}
    for version in (team.stable, team.candidate):
        figures = api.skill_metrics(team.project, NAME, timeframe="all", version=version)
        for chart, value in (
            ("version-fidelity", figures.pattern_fidelity),
            ("version-quality", figures.outcome_quality),
            ("version-exceptions", figures.exception_rate),
        ):
            series = charts[chart][version]
            assert series.count == figures.count
            assert series.mean is not None and value is not None
            assert math.isclose(series.mean, value, rel_tol=1e-5), (chart, series.mean, value)
            # The buckets hold every execution once.
            assert sum(count for _, _, count in series.points) == figures.count
        for percentile, value in (("p50", figures.p50_ms), ("p95", figures.p95_ms)):
            series = charts["version-time"][f"{version} {percentile}"]
            assert series.mean == pytest.approx(value)
    # Per arm of the rollout: the executions the loader tagged with it.
    (status,) = api.rollout_status(team.project)
    arms = charts["arm-fidelity"]
    assert arms[f"{team.candidate} (candidate)"].count == status.verdict.candidate.count
    assert arms[f"{team.stable} (stable)"].count == status.verdict.stable.count


def test_skill_page_shows_timeline_gates_rollout_and_actions(team: Team) -> None:
    html = render_skill(team.project, NAME, actions=EVERYTHING)
    assert 'data-stage="production" data-version="1.0.0"' in html  # the timeline's bar
    # Its marks: both sign-offs and the promotion into production, the rollout's start.
    marks = re.findall(r'<g class="mark" data-kind="(\w+)" data-stage="(\w+)"', html)
    assert sorted(marks) == [
        ("approval", "production"),
        ("approval", "production"),
        ("promote", "production"),
        ("rollout_start", "production"),
    ]
    assert html.count('data-stay-stage="staged"') == 2  # 1.0.0 then 1.1.0 waited in staging
    assert 'data-event-kind="approval"' in html and "APPROVAL_TEST_002" in html
    # `status NAME` refuses while a rollout runs; the page says so, as the command does.
    assert "has an active rollout in production" in html
    # The gates the rollout's start ran, as its event recorded them (`history --json`).
    (started,) = [e for e in api.history(team.project, NAME) if e.kind == "rollout_start"]
    recorded = re.search(r'<section class="card" id="recorded-gates".*?</section>', html, re.S)
    assert recorded and f'data-event-id="{started.id}"' in recorded.group(0)
    gates = (started.details or {})["gates"]
    assert len(gates) >= 7
    for gate in gates:
        assert f'data-gate="{gate["gate"]}" data-status="{gate["status"]}"' in recorded.group(0)
    assert 'action="/skills/auth-v2/abort"' in html
    assert 'action="/skills/auth-v2/rollback"' in html
    assert 'name="csrf_token" value="token-123"' in html
    assert "No automated rollback or rollout abort on record." in html


def test_read_only_page_offers_no_action(team: Team) -> None:
    html = render_skill(team.project, NAME, actions=None)
    assert "<form" not in html and "csrf_token" not in html
    viewer = render_skill(team.project, NAME, actions=ActionContext("t", frozenset()))
    assert "<form" not in viewer


def test_failure_report_after_an_automated_abort(team: Team) -> None:
    with Loader(team.project) as loader:
        for i in range(300):
            served = loader.resolve(NAME, subject=f"user-{i}")
            fidelity = 0.5 if served.arm == "candidate" else 0.95
            loader.record(
                served, pattern_fidelity=fidelity, outcome_quality=0.9, execution_time_ms=3.0
            )
    api.ingest_metrics(team.project)
    (outcome,) = api.rollout_tick(team.project)
    assert outcome.action == "aborted"
    report = failure_report(team.project, NAME).document
    html = render_skill(team.project, NAME)
    facts = re.search(r'<dl class="facts" id="failure-facts".*?</dl>', html, re.S)
    assert facts, "no failure report on the page"
    assert f'data-event-id="{report["event_id"]}"' in facts.group(0)
    assert report["trigger"]["reason"] in facts.group(0)
    assert report["trigger"]["metric"] in facts.group(0)
    assert 'data-event-kind="rollout_abort"' in html
    assert "arm-fidelity" in html  # the ended rollout's arms are still charted


def test_unknown_skill_is_refused_with_its_name(team: Team) -> None:
    from skillstage.runtime.routing import UnknownSkillError

    with pytest.raises(UnknownSkillError, match="no-such-skill"):
        render_skill(team.project, "no-such-skill")


def _environment() -> dict[str, str]:
    keep = {k: v for k, v in os.environ.items() if not k.startswith("SKILLSTAGE_")}
    keep["SKILLSTAGE_DATABASE_URL"] = os.environ["SKILLSTAGE_DATABASE_URL"]
    return keep


def test_report_html_writes_one_self_contained_page(team: Team, tmp_path: Path) -> None:
    target = tmp_path / "out" / "workflow_dashboard_auth-v2.html"
    target.parent.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "skillstage", "report", NAME, "--html", str(target)],
        cwd=team.project.root,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"wrote {target}\n"
    html = target.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    assert "<form" not in html and 'href="/' not in html  # no actions, no links to a server
    # Nothing is loaded from elsewhere: no script, image or frame at all, no link but the empty
    # inline icon (so a browser asks for no favicon), and the only URL is the SVG namespace.
    assert not re.search(r"<(script|img|iframe|object|embed)\b", html)
    assert re.findall(r"<link\b[^>]*>", html) == ['<link rel="icon" href="data:,">']
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    charts = read_charts(html)
    figures = api.skill_metrics(team.project, NAME, timeframe="all", version=team.stable)
    assert charts["version-fidelity"][team.stable].count == figures.count


def test_report_html_refuses_other_report_options(team: Team, tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "skillstage", "report", NAME, "--html", "x.html", "--failure"],
        cwd=team.project.root,
        env=_environment(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--html writes the whole page" in done.stderr
    assert not (team.project.root / "x.html").exists()


def test_a_skill_with_no_executions_and_no_rollout(team: Team) -> None:
    html = render_skill(team.project, WAITING, actions=EVERYTHING)
    charts = read_charts(html)
    assert charts["version-fidelity"] == {}
    assert html.count("no executions recorded") == 4
    assert 'id="arm-charts"' not in html and 'id="rollouts"' not in html
    assert "Held" in html and "waiting for review" in html
    # `skillstage status` refuses a held skill, saying why; so does the page, in the gates' place.
    with pytest.raises(SkillstageError) as refused:
        api.readiness(team.project, WAITING)
    gates = re.search(r'<section class="card" id="gates">.*?</section>', html, re.S)
    assert gates and escape(refused.value.message) in gates.group(0)
    assert "data-gate=" not in gates.group(0)
