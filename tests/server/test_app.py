"""The server's skeleton: errors in one shape, the OpenAPI document, the status table."""

from __future__ import annotations

import httpx

from skillstage import errors as error_kinds
from skillstage.config import Project
from skillstage.errors import ConflictError, LockError, SkillstageError, UsageError
from skillstage.lifecycle.move import PromotionError
from skillstage.rollout.guard import RolloutActiveError, SkillHeldError
from skillstage.runtime.loader import SkillDisabledError
from skillstage.runtime.routing import UnknownSkillError
from skillstage.server import create_app
from skillstage.server.errors import STATUSES, status_of
from skillstage.watch.report import NoFailureReportError
from tests.server.conftest import Live


def test_every_kind_in_the_status_table_is_a_real_error_class() -> None:
    known = {
        cls.__name__
        for cls in (
            *vars(error_kinds).values(),
            UnknownSkillError,
            NoFailureReportError,
            RolloutActiveError,
            SkillHeldError,
            SkillDisabledError,
        )
        if isinstance(cls, type) and issubclass(cls, SkillstageError)
    }
    assert set(STATUSES) <= known, set(STATUSES) - known


def test_statuses_follow_the_class_hierarchy() -> None:
    assert status_of(UsageError("bad")) == 400
    assert status_of(ConflictError("taken")) == 409
    assert status_of(LockError("busy")) == 503
    assert status_of(UnknownSkillError("no such")) == 404
    assert status_of(PromotionError("refused")) == 422  # a refusal: not named, nearest is the base


def test_openapi_document_is_served_under_v1(project: Project, live: Live) -> None:
    with live(create_app(project, auth=False)) as url:
        document = httpx.get(f"{url}/v1/openapi.json").json()
    assert document["info"]["title"] == "skillstage"
    assert document["openapi"].startswith("3.")


def test_an_unknown_path_answers_in_the_error_shape(project: Project, live: Live) -> None:
    with live(create_app(project, auth=False)) as url:
        answer = httpx.get(f"{url}/v1/no-such-thing")
    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "NOT_FOUND"
