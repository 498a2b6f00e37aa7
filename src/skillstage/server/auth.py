"""Who is asking: the FastAPI dependency every route declares with the permission it needs, the
dashboard's login, and CSRF protection for what a browser posts.

`Depends(require(OPERATE))` gives the route the `Principal` (its name is the actor every write
records), or answers:
- 401 (`WWW-Authenticate: Bearer`) without a token, or with one that is malformed, unknown or
  revoked;
- 403 when the token's role does not grant the permission (the message names the roles that do),
  or when a browser's unsafe request fails the CSRF checks below;
- 429 (`Retry-After`) to a client address after `FAILURES_ALLOWED` failed authentications within
  `FAILURE_WINDOW_S` seconds: its requests are not checked until the oldest failure is that old.
  The count is kept in this process (each server process counts its own), by the address the
  connection comes from (behind a proxy, run uvicorn with --proxy-headers so that it is the
  client's).

A token travels as `Authorization: Bearer <token>`, or, for the dashboard, in the HttpOnly,
SameSite=Strict session cookie `POST /login` sets. The cookie holds the token itself rather than a
signed session: several server processes on one store need no shared signing key, and a revoked
token's session ends with it (within `tokens.BELIEVED_SECONDS`, 1 s, on every server). A request
whose token came in the cookie must carry the CSRF token (`csrf_token(request)`: form field
`csrf_token` or header `X-CSRF-Token`) on every method but GET, HEAD and OPTIONS; one that sent
the Authorization header needs none (a page on another site cannot set that header). Unsafe
requests from a browser on another site (`Sec-Fetch-Site`, else `Origin`) are refused when they
ride on the cookie or on `--insecure-no-auth`, where there is no token to steal but a promotion to
forge.

Tokens are never logged nor put in an answer.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import math
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.responses import RedirectResponse
from starlette.concurrency import run_in_threadpool

from skillstage.server.errors import error_body
from skillstage.tokens import (
    PERMISSION_WORDS,
    PERMISSIONS,
    Principal,
    authenticate,
    believed,
    roles_granting,
)

SESSION_COOKIE = "skillstage_session"
SESSION_MAX_AGE_S = 12 * 3600
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

FAILURES_ALLOWED = 10
FAILURE_WINDOW_S = 60.0
_TRACKED_CLIENTS = 10_000  # beyond this, the clients whose failures are all old are forgotten

BEARER = "bearer"
COOKIE = "cookie"
LOCAL = "local"  # --insecure-no-auth

_CREATE_HINT = (
    "send it as `Authorization: Bearer <token>`; an admin makes one with "
    "`skillstage token create --role ROLE --name NAME`"
)


def _refusal(
    status: int, code: str, message: str, hint: str | None, headers: dict[str, str] | None = None
) -> HTTPException:
    return HTTPException(status, error_body(code, message, hint), headers=headers)


# -- failed attempts -------------------------------------------------------------------------------


class FailedAttempts:
    """Failed authentications per client address in a sliding window, in this process."""

    def __init__(self, allowed: int = FAILURES_ALLOWED, window: float = FAILURE_WINDOW_S) -> None:
        self.allowed = allowed
        self.window = window
        self._failures: dict[str, collections.deque[float]] = {}
        self._guard = threading.Lock()

    def retry_after(self, client: str, now: float | None = None) -> float | None:
        """Seconds until `client` may try again, or None when it may now."""
        now = time.monotonic() if now is None else now
        with self._guard:
            failures = self._failures.get(client)
            if failures is None:
                return None
            while failures and failures[0] <= now - self.window:
                failures.popleft()
            if not failures:
                del self._failures[client]
                return None
            if len(failures) < self.allowed:
                return None
            return failures[-self.allowed] + self.window - now

    def record(self, client: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._guard:
            self._failures.setdefault(client, collections.deque(maxlen=self.allowed)).append(now)
            if len(self._failures) > _TRACKED_CLIENTS:
                self._forget(now)

    def _forget(self, now: float) -> None:
        stale = [c for c, f in self._failures.items() if not f or f[-1] <= now - self.window]
        for client in stale:
            del self._failures[client]
        while len(self._failures) > _TRACKED_CLIENTS:  # the longest-tracked go first
            del self._failures[next(iter(self._failures))]


_attempts_guard = threading.Lock()


def _attempts(request: Request) -> FailedAttempts:
    """The app's failed-attempt counts (one per app, made on first use)."""
    state = request.app.state
    found: FailedAttempts | None = getattr(state, "failed_attempts", None)
    if found is None:
        with _attempts_guard:
            found = getattr(state, "failed_attempts", None)
            if found is None:
                found = state.failed_attempts = FailedAttempts()
    return found


def _client(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _refuse_if_limited(request: Request) -> None:
    wait = _attempts(request).retry_after(_client(request))
    if wait is not None:
        seconds = max(1, math.ceil(wait))
        raise _refusal(
            429,
            "TOO_MANY_FAILED_AUTHENTICATIONS",
            f"too many failed authentications from {_client(request)}: "
            f"{FAILURES_ALLOWED} within {FAILURE_WINDOW_S:g} s",
            f"try again in {seconds} s, with a valid token "
            "(`skillstage token list` shows the live ones)",
            {"Retry-After": str(seconds)},
        )


async def _authenticate(request: Request, token: str, *, from_cookie: bool = False) -> Principal:
    """The token's holder, or 429 (too many failures from this client) or 401."""
    _refuse_if_limited(request)
    project = request.app.state.project
    # A token believed a moment ago costs no store read and no trip to a worker thread.
    principal = believed(project, token) or await run_in_threadpool(authenticate, project, token)
    if principal is None:
        _attempts(request).record(_client(request))
        headers = {"WWW-Authenticate": 'Bearer error="invalid_token"'}
        if from_cookie:  # a revoked token's session: the browser forgets it
            headers["Set-Cookie"] = (
                f'{SESSION_COOKIE}=""; Max-Age=0; Path=/; HttpOnly; SameSite=Strict'
            )
        raise _refusal(
            401,
            "UNAUTHORIZED",
            "the token is not valid: malformed, unknown or revoked",
            _CREATE_HINT + (" (or log in again at the dashboard)" if from_cookie else ""),
            headers,
        )
    return principal


# -- credentials and CSRF --------------------------------------------------------------------------


def _credentials(request: Request) -> tuple[str, str] | None:
    """(how, token) as the request carries it: the Authorization header wins over the cookie."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, value = header.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise _refusal(
                401,
                "UNAUTHORIZED",
                "the Authorization header must be `Bearer <token>`",
                _CREATE_HINT,
                {"WWW-Authenticate": "Bearer"},
            )
        return BEARER, value.strip()
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return COOKIE, cookie
    return None


def _via(request: Request) -> str | None:
    if not request.app.state.auth_required:
        return LOCAL
    if request.headers.get("authorization") is not None:
        return BEARER
    return COOKIE if request.cookies.get(SESSION_COOKIE) else None


def _csrf_for(session: str) -> str:
    # Bound to the session (the token in the cookie), so a page that cannot read the cookie
    # cannot make it, and it does not reveal the token.
    return hmac.new(session.encode("utf-8"), b"skillstage-csrf", hashlib.sha256).hexdigest()


def csrf_token(request: Request) -> str:
    """The CSRF token to embed in the dashboard's forms (field `csrf_token`): bound to the
    request's session cookie; "" when the request needs none (Bearer header, no auth)."""
    session = request.cookies.get(SESSION_COOKIE)
    if _via(request) != COOKIE or not session:
        return ""
    return _csrf_for(session)


def _refuse_cross_site(request: Request) -> None:
    """403 for an unsafe request a page on another site made the browser send."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        cross = site not in ("same-origin", "none")
    else:
        origin = request.headers.get("origin")
        cross = origin is not None and (
            origin == "null" or urlsplit(origin).netloc != request.headers.get("host")
        )
    if cross:
        raise _refusal(
            403,
            "CROSS_SITE_REQUEST",
            f"a {request.method} from a page on another site is refused",
            "use the dashboard's own pages, or the API with `Authorization: Bearer <token>`",
        )


def check_csrf(request: Request, submitted: str | None) -> None:
    """403 unless this unsafe request may go on: one authenticated by the Authorization header
    always may; one riding on the session cookie must carry its CSRF token (`submitted`); under
    --insecure-no-auth it must not come from another site."""
    via = _via(request)
    if via == BEARER:
        return
    _refuse_cross_site(request)
    if via == LOCAL:
        return
    session = request.cookies.get(SESSION_COOKIE)
    if not session:
        raise _refusal(
            403, "CSRF", "no session to check the form against", "log in again at the dashboard"
        )
    if not isinstance(submitted, str) or not hmac.compare_digest(
        submitted.encode("utf-8", "replace"), _csrf_for(session).encode("ascii")
    ):
        raise _refusal(
            403,
            "CSRF",
            "the form's CSRF token is missing or wrong",
            f"reload the page and submit it again (a script sends `{CSRF_HEADER}`, or uses "
            "`Authorization: Bearer <token>` instead of the cookie)",
        )


async def _submitted_csrf(request: Request) -> str | None:
    header = request.headers.get(CSRF_HEADER)
    if header is not None:
        return header
    content_type = request.headers.get("content-type", "")
    if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
        value = (await request.form()).get(CSRF_FIELD)
        return value if isinstance(value, str) else None
    return None


# -- the dependency --------------------------------------------------------------------------------


def require(permission: str) -> Callable[[Request], Awaitable[Principal]]:
    """A dependency answering who is asking, when their role grants `permission`."""
    if not any(permission in granted for granted in PERMISSIONS.values()):
        raise ValueError(f"no role grants the permission {permission!r}")
    may = roles_granting(permission)

    async def dependency(request: Request) -> Principal:
        state = request.app.state
        if not state.auth_required:
            principal = Principal(state.local_actor, "admin")
            via = LOCAL
        else:
            found = _credentials(request)
            if found is None:
                raise _refusal(
                    401,
                    "UNAUTHORIZED",
                    "this request needs a token",
                    _CREATE_HINT
                    + f"; roles that may {PERMISSION_WORDS[permission]}: "
                    + ", ".join(may),
                    {"WWW-Authenticate": "Bearer"},
                )
            via, token = found
            principal = await _authenticate(request, token, from_cookie=via == COOKIE)
        if request.method not in SAFE_METHODS and via != BEARER:
            check_csrf(request, await _submitted_csrf(request) if via == COOKIE else None)
        if not principal.may(permission):
            raise _refusal(
                403,
                "FORBIDDEN",
                f"the token {principal.name!r} has the role {principal.role}, which may not "
                f"{PERMISSION_WORDS[permission]}: that needs the role " + " or ".join(may),
                f"ask an admin for a token with the role {may[0]}",
            )
        request.state.principal = principal
        request.state.auth_via = via
        return principal

    return dependency


# -- the dashboard's session -----------------------------------------------------------------------

router = APIRouter(include_in_schema=False)


@router.post("/login")
async def login(request: Request, token: Annotated[str, Form()]) -> Any:
    """Check the token and keep it in the session cookie; back to the dashboard."""
    _refuse_cross_site(request)
    answer = RedirectResponse("/", status_code=303)
    if not request.app.state.auth_required:
        return answer  # nothing to log in to
    token = token.strip()
    await _authenticate(request, token)
    answer.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=SESSION_MAX_AGE_S,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return answer


@router.post("/logout")
async def logout(request: Request) -> Any:
    """End the session: the cookie is cleared (the token itself stays valid)."""
    _refuse_cross_site(request)
    answer = RedirectResponse("/", status_code=303)
    answer.delete_cookie(
        SESSION_COOKIE,
        path="/",
        secure=request.url.scheme == "https",
        httponly=True,
        samesite="strict",
    )
    return answer
