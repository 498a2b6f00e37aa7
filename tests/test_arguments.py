"""The Python API's arguments are checked at the door: a wrong one is a UsageError naming the
function, the argument and what it must be, not a TypeError from deep inside."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from skillstage import api
from skillstage.config import Project, load_project
from skillstage.errors import UsageError
from skillstage.services import PromotionService, Registry, SLAEnforcer


@pytest.fixture
def project(tmp_path: Path) -> Project:
    api.init(tmp_path)
    return load_project(start=tmp_path)


NAIVE = dt.datetime(2026, 12, 1, 10, 0)

CALLS: list[tuple[str, Callable[[Project], Any], str]] = [
    (
        "a name where names go",
        lambda p: api.promote(p, "spam-filter"),
        "promote(): refs must be a list of str, not str 'spam-filter'",
    ),
    (
        "None for a project",
        lambda p: Registry(None),  # type: ignore[arg-type]
        "Registry.__init__(): project must be Project or str or PathLike, not NoneType None",
    ),
    (
        "None for a skill",
        lambda p: Registry(p).check_promotion_readiness(None),  # type: ignore[arg-type]
        "Registry.check_promotion_readiness(): skill_name must be str, not NoneType None",
    ),
    (
        "a number for a version",
        lambda p: Registry(p).get_skill_metrics("s", version=5),  # type: ignore[arg-type]
        "Registry.get_skill_metrics(): version must be str or None, not int 5",
    ),
    (
        "a str for a list of paths",
        lambda p: api.validate("dir"),  # type: ignore[arg-type]
        "validate(): paths must be a list of paths (str or Path), not str 'dir'",
    ),
    (
        "a naive time",
        lambda p: PromotionService(p).check_staleness(now=NAIVE),
        "PromotionService.check_staleness(): now must be a datetime with a time zone or None, "
        "not datetime datetime.datetime(2026, 12, 1, 10, 0)",
    ),
    (
        "a naive time to the enforcer",
        lambda p: SLAEnforcer(p).enforce_sla(now=NAIVE),
        "SLAEnforcer.enforce_sla(): now must be a datetime with a time zone or None",
    ),
    (
        "None for a reason",
        lambda p: api.rollback(p, "s", reason=None),  # type: ignore[arg-type]
        "rollback(): reason must be str, not NoneType None",
    ),
    (
        "text for a limit",
        lambda p: api.history(p, limit="x"),  # type: ignore[arg-type]
        "history(): limit must be int, not str 'x'",
    ),
    (
        "an argument too many",
        lambda p: api.history(p, "s", 5),  # type: ignore[misc]
        "history(): too many positional arguments",
    ),
    (
        "a path for a name, with the stage it must be in",
        lambda p: api.readiness(p, "../staging/x", from_stage="prototype"),
        "'../staging/x' is not a skill name",
    ),
    (
        "a decision that is none",
        lambda p: api.approve(p, "s", to_stage="staged", ticket="T", decision="yes"),
        "decision 'yes' is not one of approved, rejected, needs_iteration",
    ),
    (
        "an unknown stage",
        lambda p: PromotionService(p).list_staged_skills("nope"),
        "unknown stage 'nope'",
    ),
]


@pytest.mark.parametrize(
    ("call", "message"), [(c, m) for _, c, m in CALLS], ids=[i for i, *_ in CALLS]
)
def test_a_wrong_argument_is_a_usage_error_that_names_it(
    project: Project, call: Callable[[Project], Any], message: str
) -> None:
    with pytest.raises(UsageError) as caught:
        call(project)
    assert caught.value.message.startswith(message)


def test_text_is_taken_for_a_path(project: Project, tmp_path: Path) -> None:
    (tmp_path / "inbox").mkdir()
    lag = api.metrics_lag(project, inbox=str(tmp_path / "inbox"))  # type: ignore[arg-type]
    assert lag.files == [] and not lag.alert
    with pytest.raises(UsageError, match="nowhere is not a directory"):
        api.metrics_lag(project, inbox="nowhere")  # type: ignore[arg-type]
    report = api.validate([str(tmp_path / ".claude" / "skills" / "staging")], project=project)  # type: ignore[list-item]
    assert report.skills == []


def test_what_a_caller_may_pass_for_paths_numbers_and_flags() -> None:
    from fractions import Fraction
    from pathlib import PurePosixPath

    from skillstage.arguments import checked

    @checked
    def take(path: Path, count: int, share: float, flag: bool = False) -> tuple[Any, ...]:
        return path, count, share, flag

    assert take(PurePosixPath("a"), 3, Fraction(1, 2), 1) == (Path("a"), 3, 0.5, True)
    assert take("b", count=0, share=2) == (Path("b"), 0, 2.0, False)
    for bad, message in [
        (lambda: take("", 1, 1.0), "path must be a path (str or Path), not str ''"),
        (lambda: take("a", True, 1.0), "count must be int, not bool True"),
        (lambda: take("a", 1, "1"), "share must be float, not str '1'"),
        (lambda: take("a", 1, 1.0, 2), "flag must be bool, not int 2"),
        (lambda: take("a", 1, 10**400), "share must be float, not int 1" + "0" * 56 + "..."),
    ]:
        with pytest.raises(UsageError) as caught:
            bad()
        assert (
            caught.value.message
            == f"test_what_a_caller_may_pass_for_paths_numbers_and_flags.<locals>.take(): {message}"
        )
