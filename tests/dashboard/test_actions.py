"""The dashboard's actions over HTTP (a real uvicorn on loopback, no browser): each is two POSTs,
a confirmation that changes nothing and the confirmed change; refusals are pages with the
API's status; a form posted from another site is refused."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from skillstage import api
from skillstage.dashboard.routes import router
from skillstage.server import create_app
from tests.dashboard.conftest import APPROVER, NAME, Team
from tests.server.conftest import Live


@pytest.fixture
def client(team: Team, live: Live) -> Iterator[httpx.Client]:
    app = create_app(team.project, auth=False, actor=APPROVER)
    app.include_router(router)
    with live(app) as url, httpx.Client(base_url=url, timeout=60) as opened:
        yield opened


def _csrf(client: httpx.Client) -> str:
    page = client.get(f"/skills/{NAME}")
    assert page.status_code == 200
    found = re.search(r'name="csrf_token" value="([^"]*)"', page.text)
    assert found, "the skill page has no form"
    return found.group(1)


def _hidden(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)"', html))


def test_a_form_posted_from_another_site_is_refused(team: Team, client: httpx.Client) -> None:
    answer = client.post(
        f"/skills/{NAME}/abort",
        data={"reason": "forged", "stage": "production", "confirmed": "yes"},
        headers={"Origin": "https://elsewhere.example", "Sec-Fetch-Site": "cross-site"},
    )
    assert answer.status_code == 403
    assert len(api.rollout_status(team.project, NAME)) == 1  # still running


def test_roll_back_staging_after_a_confirmation(team: Team, client: httpx.Client) -> None:
    api.rollout_change(team.project, "abort", NAME, actor="tester", reason="make room")
    token = _csrf(client)
    asked = client.post(
        f"/skills/{NAME}/rollback",
        data={"csrf_token": token, "stage": "staged", "reason": "1.1.0 is not ready"},
    )
    assert asked.status_code == 200
    assert "1.1.0 leaves staged" in asked.text and "goes back to prototype" in asked.text
    staged = [s for s in api.list_skills(team.project).skills if s.name == NAME]
    assert {(s.stage, s.version) for s in staged} == {("staged", "1.1.0"), ("production", "1.0.0")}
    done = client.post(f"/skills/{NAME}/rollback", data=_hidden(asked.text))
    assert done.status_code == 303
    assert done.headers["location"] == f"/skills/{NAME}?done=rolled-back"
    after = [s for s in api.list_skills(team.project).skills if s.name == NAME]
    assert {(s.stage, s.version) for s in after} == {
        ("prototype", "1.1.0"),
        ("production", "1.0.0"),
    }
    (event,) = api.history(team.project, NAME, limit=1)
    assert (event.kind, event.actor, event.reason) == ("rollback", APPROVER, "1.1.0 is not ready")


def test_a_refused_action_is_a_page_with_the_reason(team: Team, client: httpx.Client) -> None:
    api.rollout_change(team.project, "abort", NAME, actor="tester", reason="make room")
    token = _csrf(client)
    answer = client.post(
        f"/skills/{NAME}/abort",
        data={"csrf_token": token, "stage": "production", "reason": "again", "confirmed": "yes"},
    )
    assert answer.status_code == 422
    assert "text/html" in answer.headers["content-type"]
    assert "has no active rollout" in answer.text
    missing = client.post(f"/skills/{NAME}/abort", data={"csrf_token": token, "reason": ""})
    assert missing.status_code == 400 and "an abort needs a reason" in missing.text


def test_an_incomplete_checklist_is_refused_by_the_api(team: Team, client: httpx.Client) -> None:
    form = client.get(f"/skills/{NAME}/approve", params={"to": "production"})
    assert form.status_code == 200
    fields = _hidden(form.text) | {"ticket": "APPROVAL_WEB_002", "decision": "approved"}
    asked = client.post(f"/skills/{NAME}/approve", data=fields)  # every item left at NO
    assert asked.status_code == 200 and "not YES:" in asked.text
    refused = client.post(f"/skills/{NAME}/approve", data=_hidden(asked.text))
    assert refused.status_code == 422
    assert "an approval needs every checklist item YES" in refused.text
    (event,) = api.history(team.project, NAME, limit=1)
    assert event.kind == "rollout_start"  # nothing recorded


def test_unknown_skill_page_is_a_404_page(client: httpx.Client) -> None:
    answer = client.get("/skills/no-such-skill")
    assert answer.status_code == 404
    assert answer.headers["x-frame-options"] == "DENY"
    assert "no skill named &#39;no-such-skill&#39;" in answer.text


def test_own_csrf_token_while_the_server_has_none(
    team: Team, client: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Before the server's auth gives sessions their CSRF tokens, the dashboard's forms carry one
    of the app's own, which a page on another origin cannot read."""
    from types import SimpleNamespace

    from skillstage.dashboard import routes

    monkeypatch.setattr(routes, "auth", SimpleNamespace())
    token = _csrf(client)
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    data = {"stage": "production", "reason": "checking", "confirmed": "yes"}
    assert client.post(f"/skills/{NAME}/abort", data=data).status_code == 403
    wrong = client.post(f"/skills/{NAME}/abort", data=data | {"csrf_token": "0" * 64})
    assert wrong.status_code == 403
    assert len(api.rollout_status(team.project, NAME)) == 1
    done = client.post(f"/skills/{NAME}/abort", data=data | {"csrf_token": token})
    assert done.status_code == 303
    assert api.rollout_status(team.project, NAME) == []


def test_a_browser_without_a_session_is_sent_to_sign_in(team: Team, live: Live) -> None:
    app = create_app(team.project)  # tokens required
    app.include_router(router)
    with live(app) as url, httpx.Client(base_url=url) as client:
        page = client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
        assert page.status_code == 303 and page.headers["location"] == "/login"
        form = client.get("/login")
        assert form.status_code == 200
        assert '<form method="post" action="/login"' in form.text and 'name="token"' in form.text
        script = client.get(f"/skills/{NAME}", headers={"Accept": "application/json"})
        assert script.status_code == 401
        assert script.json()["error"]["code"] == "UNAUTHORIZED"
        post = client.post(f"/skills/{NAME}/abort", data={"reason": "x"})
        assert post.status_code == 401
    assert len(api.rollout_status(team.project, NAME)) == 1


def test_pages_load_nothing_else_and_may_not_be_framed(client: httpx.Client) -> None:
    for path in ("/", f"/skills/{NAME}", f"/skills/{NAME}/approve?to=production", "/login"):
        answer = client.get(path)
        assert answer.status_code == 200, path
        policy = answer.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "frame-ancestors 'none'" in policy, path
        assert "form-action 'self'" in policy, path
        assert answer.headers["cache-control"] == "no-store", path
