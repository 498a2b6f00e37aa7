"""The one table from `SkillstageError` kinds to HTTP statuses: the exit-code table's twin.

Every error a route lets through becomes `{"error": {"code", "message", "hint"}}` (plus `path` and
`line` when the error names a place) with the status of the nearest class in `STATUSES`; an error
skillstage did not raise on purpose is a 500 whose body says no more than that.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from skillstage.errors import (
    ConfigError,
    ConflictError,
    LockError,
    SkillReadError,
    SkillstageError,
    StoreError,
    UsageError,
)

log = logging.getLogger("skillstage.server")

# Looked up along the error's class hierarchy, nearest first; a kind not named here is a refusal
# (exit 1 on the command line: a gate, check or rule said no) and answers 422.
STATUSES: dict[str, int] = {
    "UsageError": 400,
    "ConfigError": 400,
    "StoreURLError": 500,  # the server's own store setting is wrong, not the request
    "UnknownSkillError": 404,
    "NoFailureReportError": 404,
    "ConflictError": 409,
    "RolloutActiveError": 409,
    "SkillHeldError": 409,
    "SkillDisabledError": 409,
    "SkillReadError": 422,
    "StoreError": 503,  # unreachable, or at another schema: retry, or fix the server
    "LockError": 503,
}
REFUSED = 422
RETRY_AFTER_SECONDS = 1

# The classes above are named as strings so that this module imports none of the rooms that
# define them; these are imported anyway and keep the names honest (a test checks every name).
_KNOWN = (ConfigError, ConflictError, LockError, SkillReadError, StoreError, UsageError)


def status_of(error: SkillstageError) -> int:
    for kind in type(error).__mro__:
        if kind.__name__ in STATUSES:
            return STATUSES[kind.__name__]
    return REFUSED


def error_body(
    code: str, message: str, hint: str | None = None, **extra: object
) -> dict[str, object]:
    body: dict[str, object] = {"code": code, "message": message, "hint": hint}
    body.update({key: value for key, value in extra.items() if value is not None})
    return {"error": body}


def error_response(error: SkillstageError) -> JSONResponse:
    status = status_of(error)
    headers = {"Retry-After": str(RETRY_AFTER_SECONDS)} if status == 503 else None
    body = error_body(
        error.code,
        error.message,
        error.hint,
        path=str(error.path) if error.path is not None else None,
        line=error.line,
    )
    return JSONResponse(body, status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    """Answer every error in the one shape."""

    @app.exception_handler(SkillstageError)
    async def refused(request: Request, error: SkillstageError) -> JSONResponse:
        return error_response(error)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            f"{'.'.join(str(part) for part in problem.get('loc', ()))}: {problem.get('msg')}"
            for problem in error.errors()[:5]
        ]
        return JSONResponse(
            error_body(
                "INVALID_REQUEST",
                "the request is not valid: " + "; ".join(problems),
                "see /v1/openapi.json for what this endpoint takes",
            ),
            status_code=422,
        )

    @app.exception_handler(HTTPException)
    async def http(request: Request, error: HTTPException) -> JSONResponse:
        detail = error.detail
        if isinstance(detail, dict) and "error" in detail:
            return JSONResponse(detail, status_code=error.status_code, headers=error.headers)
        code = {401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 405: "METHOD_NOT_ALLOWED"}
        return JSONResponse(
            error_body(code.get(error.status_code, "HTTP"), str(detail)),
            status_code=error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, error: Exception) -> JSONResponse:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return JSONResponse(
            error_body(
                "UNEXPECTED",
                "an unexpected error happened on the server",
                "the server's log has the traceback",
            ),
            status_code=500,
        )
