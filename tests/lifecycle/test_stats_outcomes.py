"""The promotion success rate counts a refusal (a gate said no) apart from a failure (the move
failed), and says which it is of (issue 14 §4: three refusals read as a 54 % success rate).
Real promotions on real stores, SQLite and PostgreSQL; a failed move is a real promoter process
stopped half-way through its move."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from skillstage import api
from skillstage.config import Project
from skillstage.lifecycle import stats
from skillstage.store import Store
from tests.rollout.test_rollout_crash import _cli  # skillstage as a process, on this store
from tests.skilltree import write_skill

STAGING = Path(".claude/skills/staging")
FAILING_TEST = "#!/bin/bash\necho 'expected 2, got 3' >&2\nexit 1\n"


def _rate(project: Project, now: dt.datetime | None = None) -> dict[str, Any]:
    metrics = stats.collect(project, now=now).to_dict()["metrics"]
    rate: dict[str, Any] = next(m for m in metrics if m["key"] == "promotion_success_rate")
    return rate


def _promoted(project: Project, name: str, **kwargs: Any) -> bool:
    write_skill(project.root / STAGING, name, **kwargs)
    (result,) = api.promote(project, [name], actor="tester")
    return result.success


def test_refusals_are_counted_apart_from_failures(project: Project) -> None:
    assert _promoted(project, "auth-v2")
    for name in ("flaky-1", "flaky-2", "flaky-3"):
        assert not _promoted(project, name, test=FAILING_TEST)  # the tests gate says no

    rate = _rate(project)
    assert (rate["total_promotions"], rate["successful"], rate["refused"], rate["failed"]) == (
        4,
        1,
        3,
        0,
    )
    # Not 25 %: the three skills were not ready, no promotion failed.
    assert (rate["value"], rate["status"], rate["rate_counting_refusals"]) == (100.0, "ok", 25.0)
    assert rate["rate_of"] == (
        "promotions that passed their gates (refusals by a gate are not counted)"
    )
    assert rate["detail"] == (
        "1 of 1 promotion(s) that passed their gates in 30 days moved, 0 failed moving; "
        "3 more refused by their gates, not counted in the rate "
        "(25.00% of all 4 attempt(s) counting refusals)"
    )


def test_a_move_that_failed_is_a_failure(project: Project) -> None:
    write_skill(project.root / STAGING, "auth-v2")
    # Ctrl-C in the middle of the move: the promoter undoes it and says so.
    stopped = _cli(project, "promote", "auth-v2", "--yes", fault="promote:archived+sigint")
    assert stopped.returncode == 130, stopped.stdout + stopped.stderr
    assert "unfinished promote undone" in stopped.stderr
    assert (project.root / STAGING / "auth-v2").is_dir()  # it did not move
    assert _promoted(project, "logging")
    assert not _promoted(project, "flaky", test=FAILING_TEST)

    rate = _rate(project)
    assert (rate["successful"], rate["failed"], rate["refused"], rate["total_promotions"]) == (
        1,
        1,
        1,
        3,
    )
    assert (rate["value"], rate["status"]) == (50.0, "alert")
    assert rate["detail"].startswith(
        "1 of 2 promotion(s) that passed their gates in 30 days moved, 1 failed moving; "
        "1 more refused"
    )
    # Retried, it moves: one failure and one success on record.
    assert _cli(project, "promote", "auth-v2", "--yes").returncode == 0
    rate = _rate(project)
    assert (rate["successful"], rate["failed"], rate["value"]) == (2, 1, 66.67)


def test_a_failed_attempt_that_names_no_gate_is_a_failure(project: Project) -> None:
    # (seed 000's example rows: a failed promotion recorded without its gates)
    with Store.open(project.database_url) as store:
        store.append_event("promote", name="old", actor="ci", success=False)
        store.append_event("promote", name="old", actor="ci", success=True)
    rate = _rate(project)
    assert (rate["successful"], rate["failed"], rate["refused"], rate["value"]) == (1, 1, 0, 50.0)


def test_only_refusals_measure_no_promotion(project: Project) -> None:
    assert not _promoted(project, "flaky", test=FAILING_TEST)
    rate = _rate(project)
    assert (rate["value"], rate["display"], rate["status"]) == (None, "n/a", "n/a")
    assert rate["detail"].startswith(
        "no promotion passed its gates in 30 days; 1 more refused by their gates"
    )
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    assert _rate(project, later)["detail"] == "no promotion attempted in 30 days"


def test_failed_moves_older_than_the_window_are_not_counted(project: Project) -> None:
    write_skill(project.root / STAGING, "auth-v2")
    stopped = _cli(project, "promote", "auth-v2", "--yes", fault="promote:copied+sigint")
    assert stopped.returncode == 130, stopped.stderr
    assert _rate(project)["failed"] == 1
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=31)
    assert (_rate(project, later)["failed"], _rate(project, later)["value"]) == (0, None)


def test_the_stats_command_says_what_the_rate_is_of(project: Project) -> None:
    assert _promoted(project, "auth-v2")
    assert not _promoted(project, "flaky", test=FAILING_TEST)
    shown = _cli(project, "stats")
    assert shown.returncode == 0, shown.stderr
    (row,) = [
        line for line in shown.stdout.splitlines() if line.startswith("  Promotion Success Rate ")
    ]
    assert (row.split()[3], row.split()[-1]) == ("100.00%", "ok")
    assert (
        "  Promotion Success Rate: 1 of 1 promotion(s) that passed their gates in 30 days moved, "
        "0 failed moving; 1 more refused by their gates, not counted in the rate"
    ) in shown.stdout
    data = json.loads(_cli(project, "stats", "--json").stdout)
    rate = next(m for m in data["metrics"] if m["key"] == "promotion_success_rate")
    assert (rate["refused"], rate["failed"], rate["value"]) == (1, 0, 100.0)
