"""The dashboard's routes: the overview, a skill's page, and three actions behind a confirmation.

Every action is a form POSTed twice: the first POST shows what will happen (a rollback's dry
run says which version comes back) and asks to confirm; the second, with `confirmed=yes`, calls
the same `api` function the command line calls, as the signed-in principal, and redirects to the
skill's page. Both POSTs carry the page's CSRF token. A refusal (`SkillstageError`) is an HTML
page with the message, the hint and the status the JSON API would answer.

The pages are not part of the `/v1` OpenAPI document: they are for people, not for clients.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import secrets
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar
from urllib.parse import quote

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from skillstage import api
from skillstage.config import Project
from skillstage.dashboard import pages
from skillstage.errors import SkillstageError, UsageError
from skillstage.server import auth
from skillstage.server.auth import require
from skillstage.server.errors import error_body, status_of
from skillstage.tokens import APPROVE, OPERATE, READ, Principal

router = APIRouter(include_in_schema=False)


def _page_reader() -> Callable[[Request], Awaitable[Principal]]:
    """`require(READ)` for the pages a person opens: a browser without a session is sent to the
    sign-in form instead of getting the API's 401."""
    check = require(READ)

    async def dependency(request: Request) -> Principal:
        try:
            found: Any = check(request)
            if inspect.isawaitable(found):
                found = await found
        except HTTPException as exc:
            accepts = request.headers.get("accept", "")
            if exc.status_code == 401 and "text/html" in accepts:
                raise HTTPException(303, "sign in first", headers={"Location": "/login"}) from None
            raise
        principal: Principal = found
        return principal

    return dependency


Reader = Annotated[Principal, Depends(_page_reader())]
Operator = Annotated[Principal, Depends(require(OPERATE))]
Approver = Annotated[Principal, Depends(require(APPROVE))]

# What the skill page says after an action: fixed texts (a query parameter never reaches the page).
DONE = {
    "aborted": "The rollout was aborted: all of its traffic is back on the stable version.",
    "rolled-back": "Rolled back: the previous good version is live again.",
    "signed-off": "The sign-off was recorded.",
}
_T = TypeVar("_T")


def _project(request: Request) -> Project:
    project: Project = request.app.state.project
    return project


# -- CSRF ------------------------------------------------------------------------------------------
# The server's auth module gives each session its token (`csrf_token`) and checks a form's
# (`check_csrf`). Until it does, the dashboard uses a token of its own: an HMAC of a secret made
# once per app, which a page of another origin cannot read, so cannot forge.


def _app_secret(request: Request) -> bytes:
    state = request.app.state
    secret: bytes | None = getattr(state, "dashboard_csrf_secret", None)
    if secret is None:
        secret = secrets.token_bytes(32)
        state.dashboard_csrf_secret = secret
    return secret


def csrf_token(request: Request) -> str:
    provided = getattr(auth, "csrf_token", None)
    if provided is not None:
        return str(provided(request))
    return hmac.new(_app_secret(request), b"skillstage-dashboard", hashlib.sha256).hexdigest()


def check_csrf(request: Request, submitted: str | None) -> None:
    provided = getattr(auth, "check_csrf", None)
    if provided is not None:
        provided(request, submitted or "")
        return
    if not submitted or not hmac.compare_digest(submitted, csrf_token(request)):
        raise HTTPException(
            403,
            error_body(
                "CSRF_FAILED",
                "the form's CSRF token is missing or wrong",
                "reload the page and submit the form from it again",
            ),
        )


def _actions(request: Request, principal: Principal) -> pages.ActionContext:
    granted = frozenset(p for p in (OPERATE, APPROVE) if principal.may(p))
    return pages.ActionContext(csrf_token(request), granted)


# -- helpers ---------------------------------------------------------------------------------------

# A page loads nothing but itself (its style is inline, its charts inline SVG), posts its forms only
# here, and may not be framed by another site (a framed page's buttons could be clicked for you).
PAGE_HEADERS = {
    "Content-Security-Policy": pages.CONTENT_SECURITY_POLICY
    + "; form-action 'self'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # a page holds the session's CSRF token
}


def _page(html: str, status: int = 200) -> HTMLResponse:
    return HTMLResponse(html, status_code=status, headers=PAGE_HEADERS)


def _refused(error: SkillstageError, *, back: str | None = None) -> HTMLResponse:
    html = pages.render_page(
        "message.html.j2",
        title="Refused",
        message=error.message,
        hint=error.hint,
        code=error.code,
        back=back,
    )
    return _page(html, status_of(error))


async def _run(function: Callable[[], _T]) -> _T:
    """A blocking API call, off the event loop."""
    return await run_in_threadpool(function)


def _field(form: Any, key: str) -> str:
    value = form.get(key)
    return value.strip() if isinstance(value, str) else ""


def _skill_url(name: str, done: str | None = None) -> str:
    url = f"/skills/{quote(name, safe='')}"
    return f"{url}?done={done}" if done else url


def _confirmed(form: Any) -> bool:
    return _field(form, "confirmed") == "yes"


def _confirm_page(
    request: Request,
    *,
    title: str,
    name: str,
    action: str,
    summary: list[str],
    fields: dict[str, str],
    button: str,
) -> HTMLResponse:
    html = pages.render_page(
        "confirm.html.j2",
        title=title,
        name=name,
        action=action,
        summary=summary,
        fields=fields,
        button=button,
        csrf_token=csrf_token(request),
        back=_skill_url(name),
    )
    return _page(html)


# -- pages -----------------------------------------------------------------------------------------


@router.get("/", response_class=HTMLResponse)
def overview(request: Request, principal: Reader) -> HTMLResponse:
    """The overview page."""
    try:
        html = pages.render_overview(_project(request), actions=_actions(request, principal))
    except SkillstageError as exc:
        return _refused(exc)
    return _page(html)


@router.get("/skills/{name}", response_class=HTMLResponse)
def skill(request: Request, name: str, principal: Reader, done: str | None = None) -> HTMLResponse:
    """A skill's page."""
    try:
        html = pages.render_skill(
            _project(request),
            name,
            actions=_actions(request, principal),
            notice=DONE.get(done or ""),
        )
    except SkillstageError as exc:
        return _refused(exc, back="/")
    return _page(html)


@router.get("/login", response_class=HTMLResponse)
def login_form() -> HTMLResponse:
    """The sign-in form: a token, posted to `POST /login`, which keeps it in the session cookie."""
    return _page(pages.render_page("login.html.j2"))


# -- abort a rollout -------------------------------------------------------------------------------


@router.post("/skills/{name}/abort", response_model=None)
async def abort(request: Request, name: str, principal: Operator) -> Response:
    """Abort the skill's rollout (a reason is required), after a confirmation."""
    form = await request.form()
    check_csrf(request, _field(form, "csrf_token"))
    project = _project(request)
    stage = _field(form, "stage") or None
    reason = _field(form, "reason")
    try:
        if not reason:
            raise UsageError("an abort needs a reason", hint="say why: it is recorded in history")
        if not _confirmed(form):
            found = await _run(lambda: api.rollout_status(project, name, stage=stage))
            if not found:
                raise UsageError(
                    f"{name} has no active rollout" + (f" in {stage}" if stage else "")
                )
            rollout = found[0].rollout
            return _confirm_page(
                request,
                title=f"Abort the rollout of {name}?",
                name=name,
                action=f"/skills/{quote(name, safe='')}/abort",
                summary=[
                    f"Rollout #{rollout.id}: {rollout.candidate_version} serves "
                    f"{rollout.weight}% of {rollout.stage} beside {rollout.stable_version}.",
                    f"Aborting sends all of {rollout.stage}'s traffic back to "
                    f"{rollout.stable_version} at once.",
                    f"Reason recorded: {reason}",
                ],
                fields={"stage": rollout.stage, "reason": reason},
                button="Abort the rollout",
            )
        outcome = await _run(
            lambda: api.rollout_change(
                project, "abort", name, actor=principal.name, reason=reason, stage=stage
            )
        )
    except SkillstageError as exc:
        return _refused(exc, back=_skill_url(name))
    if not outcome.success:
        return _refused(
            UsageError(outcome.error or "the rollout was not aborted"), back=_skill_url(name)
        )
    return RedirectResponse(_skill_url(name, "aborted"), status_code=303)


# -- roll back -------------------------------------------------------------------------------------


@router.post("/skills/{name}/rollback", response_model=None)
async def rollback(request: Request, name: str, principal: Operator) -> Response:
    """Put the previous good version back live in a stage, after a confirmation that names it
    (the rollback's dry run); the confirmed rollback restores exactly that version."""
    form = await request.form()
    check_csrf(request, _field(form, "csrf_token"))
    project = _project(request)
    stage = _field(form, "stage") or None
    reason = _field(form, "reason")
    to_version = _field(form, "to_version") or None
    try:
        if not reason:
            raise UsageError("a rollback needs a reason", hint="say why: it is recorded in history")
        if not _confirmed(form):
            plan = await _run(
                lambda: api.rollback(
                    project, name, reason=reason, stage=stage, actor=principal.name, dry_run=True
                )
            )
            if not plan.success:
                raise UsageError(plan.error or f"{name} cannot be rolled back")
            where = plan.from_stage or stage or "its stage"
            in_stage = plan.from_stage == plan.to_stage
            if in_stage:
                what = (
                    f"{plan.previous_version or 'The live version'} is taken out of {where} and "
                    f"archived as failed; {plan.version} ({(plan.digest or '')[:12]}) comes back "
                    "from the archive."
                )
                button = f"Roll back to {plan.version}"
            else:
                what = (
                    f"{plan.previous_version or plan.version} leaves {where} (no earlier version "
                    f"of it was live there) and goes back to {plan.to_stage}."
                )
                button = f"Move it back to {plan.to_stage}"
            return _confirm_page(
                request,
                title=f"Roll back {name} in {where}?",
                name=name,
                action=f"/skills/{quote(name, safe='')}/rollback",
                summary=[what, f"Reason recorded: {reason}"],
                fields={
                    "stage": stage or "",
                    "reason": reason,
                    # The version confirmed is the one restored, even if another rollback or
                    # promotion happens in between.
                    "to_version": (plan.version or "") if in_stage else "",
                },
                button=button,
            )
        result = await _run(
            lambda: api.rollback(
                project,
                name,
                reason=reason,
                stage=stage,
                to_version=to_version,
                actor=principal.name,
            )
        )
    except SkillstageError as exc:
        return _refused(exc, back=_skill_url(name))
    if not result.success:
        return _refused(
            UsageError(result.error or "the rollback did not happen"), back=_skill_url(name)
        )
    return RedirectResponse(_skill_url(name, "rolled-back"), status_code=303)


# -- sign off --------------------------------------------------------------------------------------


def _signoff_form(project: Project, name: str, to_stage: str, approver: str) -> dict[str, Any]:
    """What the sign-off form shows: the template's header and automated checks (as
    `skillstage signoff template` fills them in) and the review items with what each means."""
    import yaml

    from skillstage.lifecycle.readiness import review_items

    text = api.signoff_template(project, name, to_stage=to_stage, approver=approver)
    template = yaml.safe_load(text)
    return {
        "template": template,
        "checks": template.get("automated_checks") or {},
        "items": review_items(project, to_stage),
    }


@router.get("/skills/{name}/approve", response_class=HTMLResponse)
def approve_form(request: Request, name: str, to: str, principal: Approver) -> HTMLResponse:
    """The sign-off checklist of the skill's move into `to`."""
    project = _project(request)
    try:
        form = _signoff_form(project, name, to, principal.name)
    except SkillstageError as exc:
        return _refused(exc, back=_skill_url(name))
    html = pages.render_page(
        "approve.html.j2",
        name=name,
        to_stage=to,
        approver=principal.name,
        csrf_token=csrf_token(request),
        back=_skill_url(name),
        **form,
    )
    return _page(html)


@router.post("/skills/{name}/approve", response_model=None)
async def approve(request: Request, name: str, principal: Approver) -> Response:
    """Record the sign-off filled in on the form, after a confirmation. The form states the
    version and digest it was filled in for: a copy changed since is refused, as a stale
    checklist file is on the command line."""
    form = await request.form()
    check_csrf(request, _field(form, "csrf_token"))
    project = _project(request)
    to_stage = _field(form, "to_stage")
    ticket = _field(form, "ticket")
    decision = _field(form, "decision").lower()
    notes = _field(form, "notes") or None
    stated = {key: _field(form, key) for key in ("version", "digest")}
    try:
        items = await _run(lambda: _signoff_form(project, name, to_stage, principal.name))
        answers = {item: _field(form, f"item_{item}").upper() or "NO" for item in items["items"]}
        if not ticket:
            raise UsageError(
                "a sign-off needs its approval ticket", hint="e.g. APPROVAL_20251020_001"
            )
        if not _confirmed(form):
            unanswered = [item for item, answer in answers.items() if answer != "YES"]
            summary = [
                f"{principal.name} records {decision.upper()} of {name} {stated['version']} "
                f"({stated['digest'][:12]}) for the move into {to_stage}, ticket {ticket}.",
                f"Checklist: {len(answers) - len(unanswered)} of {len(answers)} items YES"
                + (f" (not YES: {', '.join(unanswered)})" if unanswered else "")
                + ".",
            ]
            if notes:
                summary.append(f"Notes: {notes}")
            return _confirm_page(
                request,
                title=f"Record this sign-off of {name}?",
                name=name,
                action=f"/skills/{quote(name, safe='')}/approve",
                summary=summary,
                fields={
                    "to_stage": to_stage,
                    "ticket": ticket,
                    "decision": decision,
                    "notes": notes or "",
                    **stated,
                    **{f"item_{item}": answer for item, answer in answers.items()},
                },
                button="Record the sign-off",
            )
        result = await _run(
            lambda: _record_signoff(
                project, name, principal.name, to_stage, ticket, decision, notes, stated, answers
            )
        )
    except SkillstageError as exc:
        return _refused(exc, back=_skill_url(name))
    del result
    return RedirectResponse(_skill_url(name, "signed-off"), status_code=303)


def _record_signoff(
    project: Project,
    name: str,
    approver: str,
    to_stage: str,
    ticket: str,
    decision: str,
    notes: str | None,
    stated: dict[str, str],
    answers: dict[str, str],
) -> object:
    """`api.approve` with the form written as the checklist file the command line takes (its
    header names the version and digest the form showed, which the sign-off must match)."""
    import json

    lines = [f"{key}: {json.dumps(value)}" for key, value in stated.items() if value]
    lines.append("human_review:")
    lines += [f"  {item}: {answer}" for item, answer in answers.items()]
    with tempfile.TemporaryDirectory(prefix="skillstage-signoff-") as directory:
        checklist = Path(directory) / "checklist.yaml"
        checklist.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return api.approve(
            project,
            name,
            to_stage=to_stage,
            ticket=ticket,
            decision=decision,
            approver=approver,
            checklist_file=checklist,
            notes=notes,
        )
