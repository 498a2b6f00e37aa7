"""Auth against a real uvicorn on loopback: 401 without a valid token, 403 naming the roles that
may, 200 per role; the token's name as actor; the dashboard's cookie session with CSRF; 429 after
repeated failures; --insecure-no-auth."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request

from skillstage.config import Project
from skillstage.server import create_app
from skillstage.server.auth import (
    CSRF_HEADER,
    FAILURES_ALLOWED,
    SESSION_COOKIE,
    csrf_token,
    require,
)
from skillstage.tokens import (
    ADMIN,
    APPROVE,
    OPERATE,
    READ,
    RECORD,
    ROLES,
    Principal,
    create_token,
    revoke_token,
    roles_granting,
)
from tests.server.conftest import Live

# One test route per permission: GET for reading, POST for the others.
ROUTES = {READ: ("GET", "/t/read"), RECORD: ("POST", "/t/record"), OPERATE: ("POST", "/t/operate")}
ROUTES |= {APPROVE: ("POST", "/t/approve"), ADMIN: ("POST", "/t/admin")}


def _app(project: Project, **options: object) -> FastAPI:
    app = create_app(project, **options)  # type: ignore[arg-type]  # (with auth.router in it)

    def who(principal: Principal) -> dict[str, str]:
        return {"actor": principal.name, "role": principal.role}

    @app.get("/t/read")
    def read(principal: Annotated[Principal, Depends(require(READ))]) -> dict[str, str]:
        return who(principal)

    @app.post("/t/record")
    def record(principal: Annotated[Principal, Depends(require(RECORD))]) -> dict[str, str]:
        return who(principal)

    @app.post("/t/operate")
    def operate(principal: Annotated[Principal, Depends(require(OPERATE))]) -> dict[str, str]:
        return who(principal)

    @app.post("/t/approve")
    def approve(principal: Annotated[Principal, Depends(require(APPROVE))]) -> dict[str, str]:
        return who(principal)

    @app.post("/t/admin")
    def admin(principal: Annotated[Principal, Depends(require(ADMIN))]) -> dict[str, str]:
        # A real write through the API, recorded with the token's name as its actor.
        made = create_token(project, name="made-by-route", role="viewer", actor=principal.name)
        return {**who(principal), "created_by": made.info.created_by}

    @app.get("/t/csrf")
    def csrf(
        request: Request, principal: Annotated[Principal, Depends(require(READ))]
    ) -> dict[str, str]:
        return {"csrf_token": csrf_token(request)}

    return app


@contextmanager
def _client(live: Live, app: FastAPI) -> Iterator[httpx.Client]:
    with live(app) as url, httpx.Client(base_url=url, follow_redirects=False) as client:
        yield client


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_no_token_is_401_with_a_bearer_challenge(project: Project, live: Live) -> None:
    with _client(live, _app(project)) as client:
        answer = client.get("/t/read")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == "Bearer"
    error = answer.json()["error"]
    assert (error["code"], error["message"]) == ("UNAUTHORIZED", "this request needs a token")
    assert "Authorization: Bearer <token>" in error["hint"]
    assert "roles that may read: viewer, operator, approver, admin" in error["hint"]


def test_each_role_gets_exactly_what_it_may(project: Project, live: Live) -> None:
    tokens = {role: create_token(project, name=f"{role}-1", role=role).token for role in ROLES}
    with _client(live, _app(project)) as client:
        for role, token in tokens.items():
            for permission, (method, path) in ROUTES.items():
                answer = client.request(method, path, headers=_bearer(token))
                allowed = role in roles_granting(permission)
                assert answer.status_code == (200 if allowed else 403), (role, permission)
                if allowed:
                    assert answer.json()["actor"] == f"{role}-1"
                    assert answer.json()["role"] == role
                    continue
                error = answer.json()["error"]
                assert error["code"] == "FORBIDDEN"
                assert (
                    f"the token '{role}-1' has the role {role}, which may not" in error["message"]
                )
                needed = " or ".join(roles_granting(permission))
                assert error["message"].endswith(f"that needs the role {needed}")


def test_403_names_the_role_needed_for_promotions(project: Project, live: Live) -> None:
    token = create_token(project, name="grafana", role="viewer").token
    with _client(live, _app(project)) as client:
        answer = client.post("/t/operate", headers=_bearer(token))
    assert answer.status_code == 403
    assert answer.json()["error"]["message"] == (
        "the token 'grafana' has the role viewer, which may not promote, roll back, run "
        "rollouts or hold skills: that needs the role operator or admin"
    )


def test_the_actor_of_a_write_is_the_tokens_name(project: Project, live: Live) -> None:
    token = create_token(project, name="alice", role="admin", actor="root").token
    with _client(live, _app(project)) as client:
        answer = client.post("/t/admin", headers=_bearer(token))
    assert answer.status_code == 200
    assert answer.json() == {"actor": "alice", "role": "admin", "created_by": "alice"}


def test_a_revoked_token_is_refused_at_its_next_request(project: Project, live: Live) -> None:
    token = create_token(project, name="alice", role="operator").token
    with _client(live, _app(project)) as client:
        assert client.post("/t/operate", headers=_bearer(token)).status_code == 200
        revoke_token(project, "alice", actor="root")
        answer = client.post("/t/operate", headers=_bearer(token))
    assert answer.status_code == 401
    assert answer.json()["error"]["message"] == (
        "the token is not valid: malformed, unknown or revoked"
    )
    assert answer.headers["WWW-Authenticate"].startswith("Bearer")


@pytest.mark.parametrize(
    "header",
    ["Basic YWxpY2U6c2VjcmV0", "Bearer", "Bearer sks_nonsense", "sks_0123456789abcdef_x"],
)
def test_a_malformed_authorization_header_is_401(project: Project, live: Live, header: str) -> None:
    with _client(live, _app(project)) as client:
        answer = client.get("/t/read", headers={"Authorization": header})
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "UNAUTHORIZED"


def test_cookie_login_then_csrf_on_every_unsafe_request(project: Project, live: Live) -> None:
    token = create_token(project, name="alice", role="operator").token
    with _client(live, _app(project)) as client:
        login = client.post("/login", data={"token": token})
        assert login.status_code == 303
        assert login.headers["location"] == "/"
        cookie = login.headers["set-cookie"]
        assert cookie.startswith(f"{SESSION_COOKIE}=")
        assert "HttpOnly" in cookie and "SameSite=strict" in cookie.replace("Strict", "strict")
        assert client.cookies.get(SESSION_COOKIE) == token

        assert client.get("/t/read").json() == {"actor": "alice", "role": "operator"}
        csrf = client.get("/t/csrf").json()["csrf_token"]
        assert len(csrf) == 64 and csrf not in token

        without = client.post("/t/operate")
        assert without.status_code == 403
        assert without.json()["error"]["code"] == "CSRF"
        wrong = client.post("/t/operate", data={"csrf_token": "0" * 64})
        assert wrong.status_code == 403
        assert client.post("/t/operate", data={"csrf_token": csrf}).status_code == 200
        assert client.post("/t/operate", headers={CSRF_HEADER: csrf}).status_code == 200
        # Another site's page posting with the browser's cookie (and somehow the token):
        forged = client.post(
            "/t/operate", data={"csrf_token": csrf}, headers={"Sec-Fetch-Site": "cross-site"}
        )
        assert forged.status_code == 403
        assert forged.json()["error"]["code"] == "CROSS_SITE_REQUEST"
        origin = client.post(
            "/t/operate", data={"csrf_token": csrf}, headers={"Origin": "http://evil.example"}
        )
        assert origin.status_code == 403

        logout = client.post("/logout")
        assert logout.status_code == 303
        assert SESSION_COOKIE not in client.cookies
        assert client.get("/t/read").status_code == 401


def test_a_bearer_request_needs_no_csrf_token_even_with_a_cookie(
    project: Project, live: Live
) -> None:
    token = create_token(project, name="alice", role="operator").token
    with _client(live, _app(project)) as client:
        client.post("/login", data={"token": token})
        answer = client.post("/t/operate", headers=_bearer(token))
    assert answer.status_code == 200


def test_a_wrong_login_sets_no_cookie(project: Project, live: Live) -> None:
    with _client(live, _app(project)) as client:
        answer = client.post("/login", data={"token": "sks_0123456789abcdef_" + "A" * 43})
        assert answer.status_code == 401
        assert "set-cookie" not in answer.headers
        missing = client.post("/login", data={})
        assert missing.status_code == 422


def test_a_revoked_tokens_session_ends_and_the_cookie_is_cleared(
    project: Project, live: Live
) -> None:
    token = create_token(project, name="alice", role="viewer").token
    with _client(live, _app(project)) as client:
        client.post("/login", data={"token": token})
        revoke_token(project, "alice", actor="root")
        answer = client.get("/t/read")
        assert answer.status_code == 401
        assert f'{SESSION_COOKIE}=""; Max-Age=0' in answer.headers["set-cookie"]
        assert SESSION_COOKIE not in client.cookies


def test_repeated_failures_from_one_client_are_429_with_retry_after(
    project: Project, live: Live
) -> None:
    token = create_token(project, name="alice", role="viewer").token
    wrong = "sks_0123456789abcdef_" + "A" * 43
    with _client(live, _app(project)) as client:
        assert client.get("/t/read").status_code == 401  # no token: not a guess, not counted
        for _ in range(FAILURES_ALLOWED):
            assert client.get("/t/read", headers=_bearer(wrong)).status_code == 401
        limited = client.get("/t/read", headers=_bearer(wrong))
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        error = limited.json()["error"]
        assert error["code"] == "TOO_MANY_FAILED_AUTHENTICATIONS"
        assert "too many failed authentications from 127.0.0.1" in error["message"]
        # While limited, not even a right token is checked: guessing stops.
        assert client.get("/t/read", headers=_bearer(token)).status_code == 429
        assert client.post("/login", data={"token": token}).status_code == 429
    # The count belongs to the app (the server process): a new one starts afresh.
    with _client(live, _app(project)) as client:
        assert client.get("/t/read", headers=_bearer(token)).status_code == 200


def test_without_auth_every_request_acts_as_the_local_actor(project: Project, live: Live) -> None:
    with _client(live, _app(project, auth=False, actor="dana")) as client:
        for method, path in ROUTES.values():
            answer = client.request(method, path)
            assert answer.status_code == 200, path
            assert answer.json()["actor"] == "dana"
        # No token to steal, but a promotion to forge: another site's page may not post.
        forged = client.post("/t/operate", headers={"Sec-Fetch-Site": "cross-site"})
        assert forged.status_code == 403
        assert client.post("/t/operate", headers={"Sec-Fetch-Site": "same-origin"}).is_success
        assert client.post("/login", data={"token": "anything"}).status_code == 303


def test_tokens_are_never_logged(
    project: Project, live: Live, caplog: pytest.LogCaptureFixture
) -> None:
    token = create_token(project, name="alice", role="viewer").token
    wrong = token[:-4] + "AAAA"
    caplog.set_level(logging.DEBUG)
    with _client(live, _app(project)) as client:
        client.get("/t/read", headers=_bearer(token))
        client.get("/t/read", headers=_bearer(wrong))
        client.post("/login", data={"token": wrong})
        client.post("/login", data={"token": token})
        client.post("/t/operate")
    # The test's own client logs what it sends and receives (httpx, httpcore); the rest is the
    # server's, and none of it shows a token.
    server = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in server)
    for secret in (token, wrong, token[21:], wrong[21:]):
        assert secret not in logged


def test_require_refuses_a_permission_no_role_grants() -> None:
    with pytest.raises(ValueError, match="no role grants the permission 'reed'"):
        require("reed")
