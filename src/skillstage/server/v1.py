"""The JSON API under /v1: each route parses the request, calls one `skillstage.api` function (the
one the CLI command of the same name calls) and answers with what its `--json` prints.

Reads need the `read` permission; writes name theirs (`operate`, `approve`, `record`), and the
token's name is the actor they record. Errors come back as `{"error": {...}}` (server/errors.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import msgspec
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from skillstage import api
from skillstage.config import Project
from skillstage.errors import UsageError
from skillstage.server.auth import require
from skillstage.server.runtime_routes import wait_for_change
from skillstage.tokens import APPROVE, OPERATE, READ, RECORD, Principal

if TYPE_CHECKING:
    from skillstage.lifecycle.promote import PromotionResult
    from skillstage.runtime.loader import Loader

router = APIRouter()

Reader = Annotated[Principal, Depends(require(READ))]
Operator = Annotated[Principal, Depends(require(OPERATE))]
Approver = Annotated[Principal, Depends(require(APPROVE))]
Recorder = Annotated[Principal, Depends(require(RECORD))]

LONG_POLL_MAX_SECONDS = 60.0
_JSON = msgspec.json.Encoder()


def _project(request: Request) -> Project:
    project: Project = request.app.state.project
    return project


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- reads ---------------------------------------------------------------------------------------


@router.get("/skills", summary="Skills per stage with version, age and path (`list`)")
def list_skills(request: Request, who: Reader, stage: str | None = None) -> dict[str, Any]:
    return api.list_skills(_project(request), stage=stage).to_dict()


@router.get("/skills/{name}", summary="One skill: where each version is, and its history")
def one_skill(
    request: Request, who: Reader, name: str, limit: Annotated[int, Query(ge=1, le=10_000)] = 50
) -> dict[str, Any]:
    project = _project(request)
    listed = [s.to_dict() for s in api.list_skills(project).skills if s.name == name]
    history = api.history_entries(project, name, limit=limit)  # unknown to the store: 400
    return {"name": name, "stages": listed, "history": history}


@router.get("/skills/{name}/status", summary="Is NAME ready to move? Every gate (`status`)")
def status(
    request: Request,
    who: Reader,
    name: str,
    target: str | None = None,
    from_stage: Annotated[str | None, Query(alias="from")] = None,
) -> dict[str, Any]:
    return api.readiness(_project(request), name, to_stage=target, from_stage=from_stage).to_dict()


@router.get("/skills/{name}/metrics", summary="NAME's execution metrics (`metrics show`)")
def metrics(
    request: Request,
    who: Reader,
    name: str,
    timeframe: str = "7d",
    version: str | None = None,
    include_benchmark: bool = False,
) -> dict[str, Any]:
    return api.skill_metrics(
        _project(request),
        name,
        timeframe=timeframe,
        version=version,
        include_benchmark=include_benchmark,
    ).to_dict()


@router.get("/skills/{name}/compare", summary="Two versions metric by metric (`compare`)")
def compare(request: Request, who: Reader, name: str, a: str, b: str) -> dict[str, Any]:
    return api.compare_versions(_project(request), name, a, b).to_dict()


@router.get("/history", summary="Promotions, rollbacks, sign-offs… newest first (`history`)")
def history(
    request: Request,
    who: Reader,
    name: str | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 50,
) -> list[dict[str, Any]]:
    return api.history_entries(_project(request), name, limit=limit)


@router.get("/sla", summary="Versions over their stage's SLA (`sla check`)")
def sla(request: Request, who: Reader) -> list[dict[str, Any]]:
    return api.sla_check(_project(request)).to_list()


@router.get("/stats", summary="Key promotion metrics with targets and alerts (`stats`)")
def stats(request: Request, who: Reader) -> dict[str, Any]:
    return api.key_metrics(_project(request)).to_dict()


@router.get("/rollouts", summary="Open rollouts: step, weight, arms, analysis (`rollout status`)")
def rollouts(
    request: Request, who: Reader, name: str | None = None, stage: str | None = None
) -> list[dict[str, Any]]:
    return [r.to_dict() for r in api.rollout_status(_project(request), name, stage=stage)]


@router.get("/switches", summary="Holds and kill switches set now (`hold --list`)")
def switches(
    request: Request, who: Reader, kind: str | None = None, everything: bool = False
) -> list[dict[str, Any]]:
    found = api.switches(_project(request), kind=kind, everything=everything)
    return [control.to_dict() for control in found]


@router.get("/outbox", summary="Queued hooks and notifications (`outbox`)")
def outbox(request: Request, who: Reader, status: str | None = None) -> dict[str, Any]:
    report, _ = api.outbox(_project(request), status=status)
    return report.to_dict()


@router.get("/metrics/lag", summary="How far ingestion is behind (`metrics lag`)")
def lag(request: Request, who: Reader) -> dict[str, Any]:
    return api.metrics_lag(_project(request)).to_dict()


@router.get("/registry", summary="The registry file's content, from the store")
def registry(request: Request, who: Reader) -> dict[str, Any]:
    return api.registry(_project(request))


# -- writes --------------------------------------------------------------------------------------


class PromoteBody(_Body):
    to: str | None = Field(None, description="The stage to move into (default: the next one).")
    from_stage: str | None = Field(
        None, alias="from", description="Refused unless the skill is in this stage now."
    )
    reason: str | None = None
    force: bool = Field(False, description="Past failing gates; needs a reason.")
    overwrite: bool = False
    approver: str | None = None
    approval_ticket: str | None = None
    dry_run: bool = False
    deploy: bool = False
    notify: bool = False
    git_commit: bool = False


@router.post("/skills/{name}/promote", summary="Promote NAME behind its gates (`promote`)")
def promote(request: Request, who: Operator, name: str, body: PromoteBody) -> Any:
    (result,) = api.promote(
        _project(request),
        [name],
        to=body.to,
        from_stage=body.from_stage,
        actor=who.name,
        dry_run=body.dry_run,
        force=body.force,
        reason=body.reason,
        overwrite=body.overwrite,
        approver=body.approver,
        approval_ticket=body.approval_ticket,
        deploy=body.deploy,
        notify=body.notify,
        git_commit=body.git_commit,
    )
    return _moved(result)


class RollbackBody(_Body):
    reason: str = Field(min_length=1)
    to_version: str | None = None
    to_stage: str | None = None
    stage: str | None = Field(None, description="The stage rolled back (default: the last).")
    approver: str | None = Field(None, description="Recorded as the manual override's approver.")
    dry_run: bool = False
    git_commit: bool = False


@router.post("/skills/{name}/rollback", summary="Put NAME's previous good version back")
def rollback(request: Request, who: Operator, name: str, body: RollbackBody) -> Any:
    result = api.rollback(
        _project(request),
        name,
        reason=body.reason,
        to_version=body.to_version,
        to_stage=body.to_stage,
        stage=body.stage,
        actor=who.name,
        dry_run=body.dry_run,
        git_commit=body.git_commit,
        approver=body.approver,
    )
    return _moved(result)


def _moved(result: PromotionResult) -> Any:
    """A promotion's or rollback's result, as `--json` prints it: 200 when it happened (or would,
    dry run), 422 when its gates or rules refused it (the command exits 1)."""
    body = result.to_dict()
    return body if result.success else JSONResponse(body, status_code=422)


class ApproveBody(_Body):
    to_stage: str
    ticket: str
    decision: str = Field(description="approve or reject")
    checklist: str | dict[str, Any] | None = Field(
        None,
        description="The filled-in sign-off checklist (`signoff` template) as YAML text, or "
        "its human_review items as a mapping of item: YES/NO.",
    )
    notes: str | None = None


@router.post("/skills/{name}/approve", summary="Record a sign-off (`approve`)")
def approve(request: Request, who: Approver, name: str, body: ApproveBody) -> dict[str, Any]:
    # The approver is the token's name: the four-eyes rule compares it with who promoted.
    return api.approve(
        _project(request),
        name,
        to_stage=body.to_stage,
        ticket=body.ticket,
        decision=body.decision,
        approver=who.name,
        checklist=body.checklist,
        notes=body.notes,
    ).to_dict()


@router.get("/skills/{name}/signoff", summary="The sign-off checklist to fill in (`signoff`)")
def signoff(request: Request, who: Reader, name: str, to_stage: str) -> dict[str, str]:
    template = api.signoff_template(_project(request), name, to_stage=to_stage, approver=who.name)
    return {"template": template}


class RolloutStartBody(_Body):
    name: str
    candidate: str | None = None
    stage: str | None = None
    steps: list[int] | None = None
    step_min_duration: str | None = None
    step_min_executions: int | None = None
    segments: list[str] = []
    group_id: str | None = None
    on_failure: str | None = None
    dry_run: bool = False
    force: bool = False
    reason: str | None = None


@router.post("/rollouts", summary="Start a gradual rollout (`rollout start`)")
def rollout_start(request: Request, who: Operator, body: RolloutStartBody) -> dict[str, Any]:
    return api.rollout_start(
        _project(request),
        body.name,
        candidate=body.candidate,
        stage=body.stage,
        steps=body.steps,
        step_min_duration=body.step_min_duration,
        step_min_executions=body.step_min_executions,
        segments=body.segments,
        group_id=body.group_id,
        on_failure=body.on_failure,
        actor=who.name,
        dry_run=body.dry_run,
        force=body.force,
        reason=body.reason,
    ).to_dict()


class RolloutChangeBody(_Body):
    reason: str | None = None
    force: bool = False
    stage: str | None = None


ROLLOUT_ACTIONS = ("advance", "pause", "resume", "abort", "retry")


@router.post(
    "/rollouts/{name}/{action}",
    summary="Advance, pause, resume, abort or retry a rollout (`rollout ACTION`)",
)
def rollout_change(
    request: Request, who: Operator, name: str, action: str, body: RolloutChangeBody
) -> dict[str, Any]:
    if action not in ROLLOUT_ACTIONS:
        raise UsageError(
            f"unknown rollout action {action!r}", hint=f"one of: {', '.join(ROLLOUT_ACTIONS)}"
        )
    return api.rollout_change(
        _project(request),
        action,
        name,
        actor=who.name,
        reason=body.reason,
        force=body.force,
        stage=body.stage,
    ).to_dict()


class SwitchBody(_Body):
    on: bool = Field(True, description="Set it (true) or clear it (false).")
    stage: str | None = None
    reason: str = ""


def _switch(request: Request, who: Principal, name: str, kind: str, body: SwitchBody) -> Any:
    return api.switch(
        _project(request),
        name,
        kind=kind,
        on=body.on,
        stage=body.stage,
        actor=who.name,
        reason=body.reason,
    ).to_dict()


@router.post("/skills/{name}/hold", summary="Keep automation off NAME, or clear it (`hold`)")
def hold(request: Request, who: Operator, name: str, body: SwitchBody) -> dict[str, Any]:
    result: dict[str, Any] = _switch(request, who, name, "hold", body)
    return result


@router.post(
    "/skills/{name}/disabled", summary="Switch NAME off everywhere, or on again (`disable`)"
)
def disabled(request: Request, who: Operator, name: str, body: SwitchBody) -> dict[str, Any]:
    result: dict[str, Any] = _switch(request, who, name, "disabled", body)
    return result


# -- agent hosts: executions and routing -------------------------------------------------------


@router.post(
    "/executions",
    summary="Record executions: one JSON object, a JSON array or NDJSON",
    description="Exactly once: an execution id already stored adds nothing, so a batch sent "
    "again after a timeout is safe. Records that cannot be kept are quarantined and named "
    "in the answer; the others are stored.",
)
async def executions(request: Request, who: Recorder) -> dict[str, Any]:
    body = await request.body()
    client = request.client.host if request.client else "unknown"
    project = _project(request)
    result = await run_in_threadpool(
        api.post_executions, project, body, source=f"http:{who.name}@{client}"
    )
    return result.to_dict()


@router.get(
    "/resolve/{name}",
    summary="Which version of NAME serves this request (`resolve`)",
    response_model=dict[str, Any],
)
async def resolve(
    request: Request,
    who: Recorder,
    name: str,
    subject: str | None = None,
    stage: str | None = None,
) -> Response:
    # The hot path of agent hosts: the table is in memory (no I/O, so no worker thread), and
    # the answer is encoded once by msgspec rather than validated and encoded by the framework.
    context = {
        key[len("context.") :]: value
        for key, value in request.query_params.items()
        if key.startswith("context.")
    }
    loader: Loader = request.app.state.loader()
    resolution = loader.resolve(name, subject, context or None, stage=stage)
    return Response(_JSON.encode(resolution.to_dict()), media_type="application/json")


@router.get(
    "/routing",
    summary="What serves, as the registry file holds it; waits for a change after `since`",
    description="With `since` (a generation an earlier answer gave), the answer waits up to "
    "`wait` seconds for what serves to change; `changed` is false when it did not.",
)
async def routing(
    request: Request,
    who: Recorder,
    since: Annotated[int | None, Query(ge=0)] = None,
    wait: Annotated[float, Query(ge=0, le=LONG_POLL_MAX_SECONDS)] = 30.0,
) -> dict[str, Any]:
    project = _project(request)
    if since is not None:
        moved, now = await wait_for_change(
            request,
            since,
            wait,
            lambda: run_in_threadpool(api.routing_generation, project),
            interval=project.config.runtime.refresh_ms / 1000,
        )
        if not moved:
            return {"changed": False, "generation": now}
    document = await run_in_threadpool(api.registry, project)
    return {"changed": True, **document}
