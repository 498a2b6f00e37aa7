"""The dashboard in a real headless Chromium (Debian's), against a real uvicorn on loopback.

One browser for the module; each test gets a fresh page (its own cookies). The pages load with no
console error and no failed request, the charts the browser shows carry the store's figures, and
actions done by clicking (abort a rollout, sign off with the checklist) reach the store.

Skipped, saying why, only when /usr/bin/chromium is missing outside CI; in CI it must run.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.dashboard.routes import router
from skillstage.server import create_app
from tests.dashboard.conftest import APPROVER, NAME, WAITING, Team
from tests.server.conftest import Live

CHROMIUM = Path("/usr/bin/chromium")


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false", "no")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        if _in_ci():
            pytest.fail(f"{CHROMIUM} is missing and CI is set: install Debian's chromium package")
        pytest.skip(f"{CHROMIUM} is missing: `apt-get install chromium` to run the browser tests")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield launched
        launched.close()


@dataclass
class Watched:
    """A page, and every console error, page error and failed request it had."""

    page: Any
    problems: list[str] = field(default_factory=list)


@pytest.fixture
def tab(browser: Any) -> Iterator[Watched]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    page.set_default_timeout(15_000)
    watched = Watched(page)
    page.on(
        "console",
        lambda m: (
            watched.problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None
        ),
    )
    page.on("pageerror", lambda e: watched.problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: watched.problems.append(f"request failed: {r.url}"))
    page.on(
        "response",
        lambda r: watched.problems.append(f"{r.status} for {r.url}") if r.status >= 400 else None,
    )
    yield watched
    context.close()


@pytest.fixture
def served(sqlite_team: Team, live: Live) -> Iterator[str]:
    app = create_app(sqlite_team.project, auth=False, actor=APPROVER)
    app.include_router(router)
    with live(app) as url:
        yield url


def test_pages_render_without_errors_and_charts_carry_the_store_figures(
    sqlite_team: Team, served: str, tab: Watched
) -> None:
    page = tab.page
    page.goto(served + "/")
    assert page.title() == "skillstage · overview"
    breach = page.locator(f'tr.breach[data-skill="{WAITING}"]')
    assert "SLA breach" in breach.inner_text()
    assert page.locator('#rollouts tr[data-weight="10"]').count() == 1
    page.get_by_role("link", name=NAME).first.click()
    page.wait_for_url(f"{served}/skills/{NAME}")
    # What the browser drew: every version's series of the fidelity chart, read from the DOM.
    drawn = page.eval_on_selector_all(
        "#version-fidelity g.series",
        """groups => groups.map(g => ({
            label: g.dataset.series, count: Number(g.dataset.count), mean: Number(g.dataset.mean),
            points: g.querySelectorAll('circle').length,
            inPlot: [...g.querySelectorAll('circle')].every(c => {
                const box = c.getBoundingClientRect(); return box.width > 0 && box.height > 0;
            })}))""",
    )
    assert {d["label"] for d in drawn} == {sqlite_team.stable, sqlite_team.candidate}
    for series in drawn:
        figures = api.skill_metrics(
            sqlite_team.project, NAME, timeframe="all", version=series["label"]
        )
        assert series["count"] == figures.count
        assert series["mean"] == pytest.approx(figures.pattern_fidelity, rel=1e-5)
        assert series["points"] >= 1 and series["inPlot"]
    p99 = page.locator(f'#version-time g.series[data-series="{sqlite_team.stable} p99"]')
    stable = api.skill_metrics(sqlite_team.project, NAME, timeframe="all", version="1.0.0")
    assert float(p99.get_attribute("data-mean") or "nan") == pytest.approx(stable.p99_ms)
    assert page.locator("#arm-fidelity g.series").count() == 2
    assert tab.problems == []


def test_abort_a_rollout_from_the_page(sqlite_team: Team, served: str, tab: Watched) -> None:
    page = tab.page
    page.goto(f"{served}/skills/{NAME}")
    form = page.locator("#abort-form")
    form.get_by_label("Reason").fill("fidelity looks off in the dashboard")
    form.get_by_role("button", name="Abort rollout…").click()
    # The confirmation step: nothing has changed yet.
    page.wait_for_selector("#confirm")
    assert "sends all of production's traffic back to 1.0.0" in page.inner_text("#confirm")
    assert len(api.rollout_status(sqlite_team.project, NAME)) == 1
    page.get_by_role("button", name="Abort the rollout").click()
    page.wait_for_url(f"{served}/skills/{NAME}?done=aborted")
    assert "The rollout was aborted" in page.inner_text("#notice")
    assert api.rollout_status(sqlite_team.project, NAME) == []
    (event,) = api.history(sqlite_team.project, NAME, limit=1)
    assert (event.kind, event.actor, event.reason) == (
        "rollout_abort",
        APPROVER,
        "fidelity looks off in the dashboard",
    )
    assert api.resolve(sqlite_team.project, NAME, subject="user-1").version == "1.0.0"
    assert tab.problems == []


def test_sign_off_with_the_checklist(sqlite_team: Team, served: str, tab: Watched) -> None:
    api.rollout_change(sqlite_team.project, "abort", NAME, actor="tester", reason="make room")
    page = tab.page
    page.goto(f"{served}/skills/{NAME}")
    page.locator("#approve-link").click()
    page.wait_for_selector("#approve-form")
    items = page.locator("#human-review tr[data-item]")
    answered = items.count()
    assert answered >= 10  # seed 002's checklist, with production's extra items
    for index in range(answered):
        items.nth(index).get_by_label("yes").check()
    page.get_by_label("Approval ticket").fill("APPROVAL_WEB_001")
    page.get_by_label("Notes").fill("checked in the browser")
    page.get_by_role("button", name="Review the sign-off…").click()
    page.wait_for_selector("#confirm")
    assert f"{answered} of {answered} items YES" in page.inner_text("#confirm")
    page.get_by_role("button", name="Record the sign-off").click()
    page.wait_for_url(f"{served}/skills/{NAME}?done=signed-off")
    (event,) = api.history(sqlite_team.project, NAME, limit=1)
    assert (event.kind, event.approver, event.approval_ticket, event.success) == (
        "approval",
        APPROVER,
        "APPROVAL_WEB_001",
        True,
    )
    assert tab.problems == []


def test_roles_through_a_signed_in_session(sqlite_team: Team, live: Live, browser: Any) -> None:
    """With tokens: a browser is sent to sign in, a viewer sees no action, an operator's abort is
    recorded under the token's name, and a form without the session's CSRF token is refused."""
    from skillstage.server import auth
    from skillstage.tokens import create_token

    if not (hasattr(auth, "router") and hasattr(auth, "csrf_token")):
        pytest.skip("the server's auth has no session sign-in yet (auth.router, auth.csrf_token)")
    project = sqlite_team.project
    viewer = create_token(project, name="vera", role="viewer", actor="tester").token
    operator = create_token(project, name="olivia", role="operator", actor="tester").token
    app = create_app(project)
    app.include_router(auth.router)
    app.include_router(router)
    with live(app) as url:

        def signed_in(token: str) -> Any:
            context = browser.new_context()
            page = context.new_page()
            page.set_default_timeout(15_000)
            page.goto(f"{url}/skills/{NAME}")
            page.wait_for_url(f"{url}/login")
            page.get_by_label("API token").fill(token)
            page.get_by_role("button", name="Sign in").click()
            page.wait_for_url(f"{url}/")
            page.goto(f"{url}/skills/{NAME}")
            return context, page

        context, page = signed_in(viewer)
        assert page.locator("#rollouts").count() == 1
        assert page.locator("form").count() == 0  # a viewer may act on nothing
        context.close()

        context, page = signed_in(operator)
        forged = page.request.post(
            f"{url}/skills/{NAME}/abort",
            form={"stage": "production", "reason": "no token", "confirmed": "yes"},
        )
        assert forged.status == 403
        assert len(api.rollout_status(project, NAME)) == 1
        page.locator("#abort-form").get_by_label("Reason").fill("seen on the dashboard")
        page.get_by_role("button", name="Abort rollout…").click()
        page.get_by_role("button", name="Abort the rollout").click()
        page.wait_for_url(f"{url}/skills/{NAME}?done=aborted")
        context.close()
    (event,) = api.history(project, NAME, limit=1)
    assert (event.kind, event.actor) == ("rollout_abort", "olivia")


def test_the_static_report_opens_from_a_file_and_loads_nothing(
    sqlite_team: Team, tab: Watched, tmp_path: Path
) -> None:
    from skillstage.dashboard import render_skill

    report = tmp_path / "workflow_dashboard_auth-v2.html"
    report.write_text(render_skill(sqlite_team.project, NAME, static=True), encoding="utf-8")
    requested: list[str] = []
    tab.page.on("request", lambda r: requested.append(r.url))
    tab.page.goto(report.as_uri())
    assert requested == [report.as_uri()]
    assert tab.page.locator("#version-fidelity g.series").count() == 2
    assert tab.page.locator("form").count() == 0
    assert tab.problems == []
